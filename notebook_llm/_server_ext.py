"""The Jupyter server part of the JupyterLab extension: the call log over REST.

Enabled by ``jupyter-config/jupyter_server_config.d/notebook_llm.json`` (installed
with the wheel); JupyterLab and Notebook 7 load it with the server. Every
route is under ``/notebook-llm/`` and needs the server's usual login or token:

- ``GET status?kernel=ID&notebook=PATH``: spend since the kernel began using the
  library (in that notebook), what the kernel has in flight (read from the
  file :mod:`notebook_llm.core.inflight` writes beside the kernel's connection
  file), its budgets and default model. The status bar polls it.
- ``GET costs?notebook=PATH``: today's cost by model, and the notebook's.
- ``GET calls?q=TEXT&limit=N&notebook=PATH``: the last calls, or a search.
- ``GET calls/ID``: one call in full (prompt, answer, figures).
- ``GET models``: models seen in the log, for the model picker.
- ``POST stop?kernel=ID``: "Stop all LLM work". Drops a stop request beside the
  kernel's connection file; the kernel's watcher (running while it has work
  in flight) calls ``nl.stop_all()``. An execute request would wait behind
  the cell that is streaming; the file does not.

The call log is read without a kernel (:mod:`notebook_llm._server_queries`);
nothing here writes it. The default model is set in the kernel (the frontend
executes what ``%llm_config model M`` does).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from notebook_llm import _server_queries as queries
from notebook_llm.core import inflight
from notebook_llm.core.money import format_usd

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]

_KERNEL_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "notebook_llm._server_ext"}]


def _status_file(serverapp: Any, kernel_id: str) -> str | None:
    """The in-flight file of a kernel this server runs, or None."""
    manager = serverapp.kernel_manager
    if not _KERNEL_ID.match(kernel_id) or kernel_id not in manager:
        return None
    folder = getattr(manager, "connection_dir", None) or serverapp.runtime_dir
    return os.path.join(folder, f"notebook-llm-inflight-{kernel_id}.json")


def _read_status(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _budget_text(budget: dict[str, Any]) -> str:
    spent, limit = budget.get("spent_usd"), budget.get("budget_usd")
    return f"{budget.get('name') or 'budget'}: {format_usd(spent)} of {format_usd(limit)}"


def _handlers(serverapp: Any) -> list[tuple[str, type, dict[str, Any]]]:
    import tornado.web
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join

    class _Base(APIHandler):
        def write_json(self, data: Any) -> None:
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps(data, default=str))

        def arg(self, name: str) -> str | None:
            value: str | None = self.get_query_argument(name, None)
            return value or None

    class Status(_Base):
        @tornado.web.authenticated
        def get(self) -> None:
            notebook = self.arg("notebook")
            kernel = self.arg("kernel")
            status = _read_status(_status_file(serverapp, kernel) if kernel else None)
            running = status.get("running") or []
            since = status.get("since")
            spent = queries.session_usd(since, notebook)
            budgets = [{**b, "text": _budget_text(b)} for b in status.get("budgets") or []
                       if isinstance(b, dict)]
            self.write_json({
                "session_usd": spent,
                "session_text": format_usd(spent),
                "since": since,
                "running": running,
                "count": len(running),
                "budgets": budgets,
                "default_model": status.get("default_model"),
                "kernel_seen": bool(status),
            })

    class Stop(_Base):
        @tornado.web.authenticated
        def post(self) -> None:
            kernel = self.arg("kernel") or ""
            path = _status_file(serverapp, kernel)
            if path is None:
                raise tornado.web.HTTPError(404, "no such kernel")
            request = inflight.stop_request_file(path)
            tmp = f"{request}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump({"requested": time.time()}, handle)
            os.replace(tmp, request)
            running = _read_status(path).get("running") or []
            self.write_json({"requested": True, "running": len(running)})

    class Costs(_Base):
        @tornado.web.authenticated
        def get(self) -> None:
            found = queries.costs(self.arg("notebook"))
            for rows in (found["today"], found["notebook"]):
                for row in rows:
                    row["cost_text"] = format_usd(row["cost_usd"])
            self.write_json(found)

    class Calls(_Base):
        @tornado.web.authenticated
        def get(self) -> None:
            try:
                limit = int(self.arg("limit") or 50)
            except ValueError:
                raise tornado.web.HTTPError(400, "limit must be a whole number") from None
            found = queries.calls(self.arg("q") or "", limit=limit, notebook=self.arg("notebook"))
            for row in found["calls"]:
                row["cost_text"] = format_usd(row["cost_usd"])
            self.write_json(found)

    class Call(_Base):
        @tornado.web.authenticated
        def get(self, call_id: str) -> None:
            found = queries.call(call_id)
            if found is None:
                raise tornado.web.HTTPError(404, "no such call in the log")
            found["cost_text"] = format_usd(found.get("cost_usd"), found.get("cost_status")
                                            or "priced")
            self.write_json(found)

    class Models(_Base):
        @tornado.web.authenticated
        def get(self) -> None:
            self.write_json({"models": queries.models()})

    base = url_path_join(serverapp.web_app.settings["base_url"], "notebook-llm")
    return [
        (url_path_join(base, "status"), Status, {}),
        (url_path_join(base, "stop"), Stop, {}),
        (url_path_join(base, "costs"), Costs, {}),
        (url_path_join(base, "calls"), Calls, {}),
        (url_path_join(base, "calls", "([^/]+)"), Call, {}),
        (url_path_join(base, "models"), Models, {}),
    ]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.web_app.add_handlers(".*$", _handlers(serverapp))
    serverapp.log.info("notebook-llm: call log routes at /notebook-llm/")
