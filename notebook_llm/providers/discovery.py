"""Find OpenAI-compatible model servers running on this machine.

Probes the default ports of Ollama (11434), LM Studio (1234), llama.cpp's
server (8080), vLLM (8000), Universal Runtime (11540) and mistral.rs (1234,
the default port of ``mistralrs serve``, the same as LM Studio's) concurrently:
a raw TCP connect first, so a closed port costs one refused connection, then
``GET /v1/models`` (Ollama: ``/api/tags``) on the ports that accepted. When
nothing listens the whole probe takes a few milliseconds.

LM Studio and mistral.rs share port 1234; they are told apart by the answer:
LM Studio lists its models as ``owned_by: "organization_owner"`` and answers
``/api/v0/models``; mistral.rs lists ``owned_by: "local"``.

Ports come from the ``ports`` argument (which replaces the table), else the
defaults updated by ``NOTEBOOK_LLM_PROBE_PORTS`` (``llamacpp=8765,ollama=11434``;
``ollama=0`` skips a server, ``NOTEBOOK_LLM_PROBE_PORTS=none`` skips them all).

Ports this process serves on itself (``nl.serve()``, see :func:`ignore_port`)
are never probed: the process does not find its own server as a local one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_PORTS",
    "LocalServer",
    "LocalServers",
    "afind_local_servers",
    "cached_local_servers",
    "find_local_servers",
    "ignore_port",
    "probe_ports",
    "unignore_port",
]

DEFAULT_PORTS: dict[str, int] = {
    "ollama": 11434,
    "lmstudio": 1234,
    "llamacpp": 8080,
    "vllm": 8000,
    "universal": 11540,
    "mistralrs": 1234,
}
"""Each preset's default port (presets of the ``openai`` provider, by name)."""

_LABELS = {
    "ollama": "Ollama",
    "lmstudio": "LM Studio",
    "llamacpp": "llama.cpp",
    "vllm": "vLLM",
    "universal": "Universal Runtime",
    "mistralrs": "mistral.rs",
}


@dataclass(frozen=True, slots=True)
class LocalServer:
    """A model server found on this machine."""

    provider: str
    """The preset name, e.g. ``"ollama"``: the ``provider:`` part of model strings."""
    base_url: str
    """The OpenAI-compatible base URL, e.g. ``http://127.0.0.1:11434/v1``."""
    models: list[str] = field(default_factory=list)
    """Model ids the server offers, in its order."""
    latency_s: float | None = None
    """How long the server took to list its models."""

    @property
    def label(self) -> str:
        """The product's name, e.g. ``"LM Studio"``."""
        return _LABELS.get(self.provider, self.provider)

    @property
    def model_strings(self) -> list[str]:
        """``provider:model`` for each model, ready for ``model=``."""
        return [f"{self.provider}:{model}" for model in self.models]

    def to_dict(self) -> dict[str, Any]:
        """A flat dict, for a DataFrame row."""
        return {
            "provider": self.provider,
            "server": self.label,
            "base_url": self.base_url,
            "models": ", ".join(self.models),
        }

    def _repr_markdown_(self) -> str:
        return LocalServers([self])._repr_markdown_()


class LocalServers(list[LocalServer]):
    """A list of :class:`LocalServer` that shows itself as a table in a notebook."""

    def _repr_markdown_(self) -> str:
        from notebook_llm._render import markdown_code, markdown_text

        if not self:
            return "*No local model server found.*"
        rows = ["| server | base URL | models |", "|---|---|---|"]
        for server in self:
            # Model ids are whatever the server listed: shown as code that
            # cannot end early or start a table cell.
            models = ", ".join(markdown_code(m) for m in server.model_strings[:10]) or "*(none)*"
            if len(server.models) > 10:
                models += f" … ({len(server.models)} in all)"
            rows.append(
                f"| {markdown_text(server.label)} | {markdown_text(server.base_url)} | {models} |"
            )
        return "\n".join(rows)


_ignored: set[int] = set()


def ignore_port(port: int) -> None:
    """Never probe ``port``: this process serves models there itself."""
    global _cache
    _ignored.add(port)
    _cache = None


def unignore_port(port: int) -> None:
    """Probe ``port`` again (the server this process ran there has stopped)."""
    global _cache
    _ignored.discard(port)
    _cache = None


def probe_ports(ports: dict[str, int] | None = None) -> dict[str, int]:
    """The ports to probe: ``ports`` if given, else the defaults and the environment."""
    if ports is not None:
        return dict(ports)
    table = dict(DEFAULT_PORTS)
    env = os.environ.get("NOTEBOOK_LLM_PROBE_PORTS", "").strip()
    if env.lower() in ("none", "off", "0", "false"):
        return {}
    for item in env.split(","):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        try:
            port = int(value)
        except ValueError:
            continue
        if port <= 0:
            table.pop(name, None)
        else:
            table[name] = port
    return table


async def _port_open(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _get_json(session: Any, url: str) -> tuple[int, Any]:
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return response.status, None
            try:
                return 200, await response.json(content_type=None)
            except ValueError:
                return 200, None
    except Exception:  # noqa: BLE001 - whatever went wrong, this is not a model server
        return 0, None


def _ids(payload: Any, key: str = "data", id_field: str = "id") -> list[str] | None:
    if not isinstance(payload, dict) or not isinstance(payload.get(key), list):
        return None
    return [
        str(item[id_field]) for item in payload[key]
        if isinstance(item, dict) and item.get(id_field) is not None
    ]


async def _identify(
    session: Any, host: str, port: int, presets: list[str]
) -> LocalServer | None:
    """Ask the server on ``port`` for its models and decide which preset it is."""
    root = f"http://{host}:{port}"
    started = time.perf_counter()
    if "ollama" in presets:
        _, tags = await _get_json(session, f"{root}/api/tags")
        names = _ids(tags, "models", "name")
        if names is not None:
            return LocalServer("ollama", f"{root}/v1", names, time.perf_counter() - started)
    _, listing = await _get_json(session, f"{root}/v1/models")
    models = _ids(listing)
    if models is None:
        return None
    chosen = [name for name in presets if name != "ollama"] or presets
    provider = chosen[0]
    if "lmstudio" in chosen and "mistralrs" in chosen:
        owners = {
            item.get("owned_by") for item in listing["data"] if isinstance(item, dict)
        }
        if "organization_owner" in owners:
            provider = "lmstudio"
        elif "local" in owners:
            provider = "mistralrs"
        else:
            status, _ = await _get_json(session, f"{root}/api/v0/models")
            provider = "lmstudio" if status == 200 else "mistralrs"
    return LocalServer(provider, f"{root}/v1", models, time.perf_counter() - started)


async def afind_local_servers(
    ports: dict[str, int] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 0.25,
    http_timeout: float = 1.0,
) -> LocalServers:
    """Probe ``host`` for model servers, concurrently; the ones that answer, by port.

    Args:
        ports: preset name → port; replaces the default table (see the module doc).
        host: where to look.
        timeout: seconds to wait for a TCP connection (a closed port is refused at once).
        http_timeout: seconds to wait for a server that accepted to list its models.

    Returns:
        The servers found, in port-table order; an empty list when none answer.
    """
    by_port: dict[int, list[str]] = defaultdict(list)
    for name, port in probe_ports(ports).items():
        if port not in _ignored:
            by_port[port].append(name)
    if not by_port:
        return LocalServers()
    open_flags = await asyncio.gather(
        *(_port_open(host, port, timeout) for port in by_port)
    )
    open_ports = [port for port, is_open in zip(by_port, open_flags, strict=True) if is_open]
    if not open_ports:
        return LocalServers()
    import aiohttp

    client_timeout = aiohttp.ClientTimeout(total=http_timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        found = await asyncio.gather(
            *(_identify(session, host, port, by_port[port]) for port in open_ports)
        )
    return LocalServers(server for server in found if server is not None)


def find_local_servers(
    ports: dict[str, int] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 0.25,
    http_timeout: float = 1.0,
) -> LocalServers:
    """Sync :func:`afind_local_servers`, run on the library's background loop.

    Works from any thread; called on the library's loop thread itself (where
    blocking on that loop is impossible) it probes on a helper thread.
    """
    from notebook_llm.core import loop as _loop

    def make() -> Coroutine[Any, Any, LocalServers]:
        return afind_local_servers(ports, host, timeout, http_timeout)

    try:
        return _loop.run(make())
    except RuntimeError as exc:
        if "library loop" not in str(exc):
            raise
    result: list[LocalServers] = []
    errors: list[BaseException] = []

    def probe() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            errors.append(error)

    import threading

    thread = threading.Thread(target=probe, name="notebook-llm-probe", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


_cache: tuple[float, tuple[Any, ...], LocalServers] | None = None


def cached_local_servers(max_age: float = 30.0) -> LocalServers:
    """:func:`find_local_servers` with the default ports, remembered for ``max_age`` s."""
    global _cache
    key = (os.environ.get("NOTEBOOK_LLM_PROBE_PORTS", ""),)
    now = time.monotonic()
    if _cache is not None and _cache[1] == key and now - _cache[0] < max_age:
        return _cache[2]
    servers = find_local_servers()
    _cache = (now, key, servers)
    return servers
