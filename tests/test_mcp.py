"""MCP servers' tools through the official SDK: a small stdio server written here
with the same SDK, and the published ``mcp-server-time``; both started by the
test, offline."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

import notebook_llm as nl
from notebook_llm import errors
from notebook_llm.core.client import CoreClient

pytest.importorskip("mcp")

SERVER = textwrap.dedent(
    '''
    import os
    try:
        from mcp.server.mcpserver import MCPServer as Server  # mcp 2
    except ImportError:
        from mcp.server.fastmcp import FastMCP as Server  # mcp 1

    app = Server("demo")

    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @app.tool()
    def fail() -> str:
        """Always fails."""
        raise ValueError("no luck")

    @app.tool()
    def die() -> str:
        """Ends the server process."""
        os._exit(3)

    import sys
    if len(sys.argv) > 1:  # a port: Streamable HTTP instead of stdio
        try:
            app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))  # mcp 2
        except TypeError:  # mcp 1
            app.settings.port = int(sys.argv[1])
            app.run(transport="streamable-http")
    else:
        app.run()
    '''
)


@pytest.fixture
def demo(tmp_path: Path):  # type: ignore[no-untyped-def]
    script = tmp_path / "demo_server.py"
    script.write_text(SERVER)
    server = nl.mcp.connect(f"stdio:{sys.executable} {script}", name="demo")
    yield server
    server.close()


def test_tools_are_listed_with_their_schemas_and_a_prefix(demo) -> None:  # type: ignore[no-untyped-def]
    names = [tool.name for tool in demo.tools]
    assert names == ["demo_add", "demo_fail", "demo_die"]
    add = demo.tools[0]
    assert add.description == "Add two numbers."
    assert add.parameters["properties"]["a"]["type"] == "integer"
    assert set(add.parameters["required"]) == {"a", "b"}
    assert nl.mcp.servers()["demo"] is demo
    assert "demo_add" in repr(demo)


def test_the_model_calls_mcp_tools_through_the_loop(demo) -> None:  # type: ignore[no-untyped-def]
    client = CoreClient()
    completion = client.complete('call demo_add {"a": 20, "b": 22}', model="offline:tools",
                                 tools=[demo])
    assert completion.text == "Tool results: demo_add: 42"
    streamed = client.stream('call demo_add {"a": "x", "b": 1}\ncall demo_fail {}',
                             model="offline:tools", tools=[demo]).collect()
    invalid, failed = streamed.tool_runs
    assert invalid.status == "invalid"  # checked against the server's schema: not sent
    assert failed.status == "error" and failed.output.startswith("Error: MCPToolError")


def test_a_server_that_dies_mid_call_gives_a_clear_error_and_comes_back(demo) -> None:  # type: ignore[no-untyped-def]
    client = CoreClient()
    completion = client.complete("call demo_die {}\ncall demo_add {\"a\": 1, \"b\": 2}",
                                 model="offline:tools", tools=[demo])
    died, added = completion.tool_runs
    assert died.status == "error"
    assert "MCP server 'demo' stopped while running die" in died.output
    # The conversation goes on: the next call started the server again.
    assert added.status == "ok" and added.output == "3"
    assert demo.connected
    with pytest.raises(errors.ConnectionError, match="stopped while running die"):
        demo.call("die")
    assert demo.call("add", a=2, b=2) == "4"


def test_published_time_server() -> None:
    pytest.importorskip("mcp_server_time")
    server = nl.mcp.connect(f"stdio:{sys.executable} -m mcp_server_time --local-timezone UTC")
    try:
        assert server.name == "time"
        assert [t.name for t in server.tools] == ["time_get_current_time", "time_convert_time"]
        completion = nl.complete('call time_get_current_time {"timezone": "Asia/Tokyo"}',
                                 model="offline:tools", tools=[server])
        [run] = completion.tool_runs
        assert run.status == "ok" and '"timezone": "Asia/Tokyo"' in run.output
    finally:
        server.close()
    assert not server.connected


def test_bad_targets_are_refused_with_what_to_do() -> None:
    with pytest.raises(errors.InvalidRequestError, match="stdio:COMMAND ARGS"):
        nl.mcp.connect("mcp-server-time")
    with pytest.raises(errors.InvalidRequestError, match="needs a command"):
        nl.mcp.connect("stdio:  ")
    with pytest.raises(errors.ConnectionError, match="Could not start MCP server"):
        nl.mcp.connect(f"stdio:{sys.executable} -c 'raise SystemExit(1)'", timeout=20)


def _processes_running(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_kernel_shutdown_closes_the_connections(tmp_path: Path) -> None:
    from tests.support.kernel import KernelSession, ok

    script = tmp_path / "shutdown_demo_server.py"
    script.write_text(SERVER)
    session = KernelSession(cwd=str(tmp_path))
    try:
        ok(session, "import notebook_llm as nl\n"
                    f"s = nl.mcp.connect('stdio:{sys.executable} {script}', name='demo')\n"
                    "assert s.call('add', a=1, b=1) == '2'")
        assert _processes_running(str(script))
    finally:
        session.km.shutdown_kernel(now=False)  # a frontend's shutdown: the kernel exits
        session.kc.stop_channels()
    deadline = time.monotonic() + 20
    while _processes_running(str(script)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_running(str(script)) == []


def test_a_streamable_http_server(tmp_path: Path) -> None:
    import socket
    import subprocess
    import urllib.request

    script = tmp_path / "http_server.py"
    script.write_text(SERVER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(script), str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/mcp", timeout=1)
            except urllib.error.HTTPError:
                break  # it answers (a GET without a session is refused)
            except OSError:
                time.sleep(0.2)
        server = nl.mcp.connect(f"http://127.0.0.1:{port}/mcp", name="web")
        try:
            assert [t.name for t in server.tools][:1] == ["web_add"]
            completion = CoreClient().complete('call web_add {"a": 4, "b": 5}',
                                               model="offline:tools", tools=[server])
            assert completion.text == "Tool results: web_add: 9"
        finally:
            server.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
