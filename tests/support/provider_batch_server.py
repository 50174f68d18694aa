"""A loopback server for the OpenAI Batch API and Anthropic's Message Batches API.

No recordings of these endpoints exist in ``../shared/fixtures``, so this
server follows the public API references instead. Written from them:

OpenAI (``/v1``):

- ``POST /files`` (multipart form: ``file``, ``purpose=batch``) -> a ``file``
  object (``id``, ``object``, ``bytes``, ``created_at``, ``filename``, ``purpose``).
- ``GET /files/{id}/content`` -> the file's bytes (input JSONL, or output and
  error JSONL of a finished batch).
- ``POST /batches`` (``input_file_id``, ``endpoint``, ``completion_window``,
  ``metadata``) -> a ``batch`` object; ``GET /batches/{id}``; ``POST
  /batches/{id}/cancel``. Status moves one step per retrieve:
  ``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed`` (or
  ``cancelling`` -> ``cancelled``), with ``request_counts`` and
  ``output_file_id`` / ``error_file_id`` set on completion.
- Output lines: ``{"id", "custom_id", "response": {"status_code", "request_id",
  "body"}, "error": null}``; failed requests go to the error file with
  ``response.status_code`` >= 400 and an error body.

Anthropic (``/v1/messages/batches``):

- ``POST`` (``{"requests": [{"custom_id", "params"}]}``) -> a
  ``message_batch`` object (``id``, ``type``, ``processing_status``,
  ``request_counts`` {processing, succeeded, errored, canceled, expired},
  ``ended_at``, ``created_at``, ``expires_at``, ``cancel_initiated_at``,
  ``results_url``); ``GET /{id}``; ``POST /{id}/cancel``; ``GET /{id}/results``
  (JSONL: ``{"custom_id", "result": {"type": "succeeded", "message": {...}}}``
  or ``{"type": "errored", "error": {"type": "error", "error": {...}}}``).
  Status: ``in_progress`` for ``polls_to_finish`` retrieves, then ``ended``.

Answers are deterministic: the text is ``"echo: "`` plus the last user
message. A request whose last message contains ``FAIL`` is answered with an
error (a 400 in OpenAI's error file, ``errored`` for Anthropic), so tests can
check both paths. What was verified against this server only (not the real
services): status transitions and timing, the exact error bodies, and
``results_url`` pointing at this server.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

from aiohttp import web

from tests.support.loopback import LoopbackServer

__all__ = ["ProviderBatchServer"]


def _text_of(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _words(text: str) -> int:
    return max(len(text.split()), 1)


class ProviderBatchServer(LoopbackServer):
    """Serves both batch APIs on 127.0.0.1 from a background thread.

    Args:
        polls_to_finish: retrieves a batch needs before it is finished.
    """

    def __init__(self, polls_to_finish: int = 3) -> None:
        super().__init__(client_max_size=64 * 1024 * 1024)
        self.polls_to_finish = polls_to_finish
        self.files: dict[str, dict[str, Any]] = {}
        self.openai_batches: dict[str, dict[str, Any]] = {}
        self.anthropic_batches: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        """``(method, path)`` of every request, in order."""
        self.auth: list[str] = []
        """The key each request carried (``Authorization`` or ``x-api-key``)."""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self) -> ProviderBatchServer:
        """Start serving; returns self once the port is bound."""
        super().start()
        return self

    def __enter__(self) -> ProviderBatchServer:
        return self.start()

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    # -- routing -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Route one request to the OpenAI or Anthropic batch API."""
        path = request.path
        if path.startswith("/v1/"):
            path = path[3:]
        with self._lock:
            self.calls.append((request.method, path))
            key = request.headers.get("x-api-key") or request.headers.get("Authorization", "")
            self.auth.append(key.removeprefix("Bearer "))
        parts = [p for p in path.split("/") if p]
        try:
            if parts[:2] == ["messages", "batches"]:
                return await self._anthropic(request, parts[2:])
            if parts[:1] == ["files"]:
                return await self._files(request, parts[1:])
            if parts[:1] == ["batches"]:
                return await self._openai(request, parts[1:])
        except KeyError as exc:
            return _error(404, f"No such object: {exc}")
        return _error(404, f"Unknown path {request.path}")

    # -- OpenAI files ----------------------------------------------------------

    async def _files(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        if request.method == "POST" and not rest:
            form = await request.post()
            upload = form.get("file")
            purpose = str(form.get("purpose") or "")
            if not isinstance(upload, web.FileField):
                return _error(400, "'file' is a required multipart field")
            if purpose not in ("batch", "assistants", "fine-tune", "vision", "user_data", "evals"):
                return _error(400, f"Invalid purpose {purpose!r}")
            data = upload.file.read()
            file_id = self._id("file-")
            self.files[file_id] = self._file_object(file_id, upload.filename or "upload.jsonl",
                                                    purpose, data)
            return web.json_response(_public(self.files[file_id]))
        file = self.files[rest[0]]
        if request.method == "GET" and rest[1:] == ["content"]:
            return web.Response(body=file["_data"], content_type="application/octet-stream")
        if request.method == "GET" and len(rest) == 1:
            return web.json_response(_public(file))
        return _error(405, "Method not allowed")

    def _file_object(self, file_id: str, name: str, purpose: str, data: bytes) -> dict[str, Any]:
        return {"id": file_id, "object": "file", "bytes": len(data),
                "created_at": int(time.time()), "filename": name, "purpose": purpose,
                "status": "processed", "_data": data}

    # -- OpenAI batches -----------------------------------------------------------

    async def _openai(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        if request.method == "POST" and not rest:
            body = await request.json()
            file = self.files.get(body.get("input_file_id", ""))
            if file is None:
                return _error(400, "input_file_id does not name an uploaded file")
            if body.get("endpoint") != "/v1/chat/completions":
                return _error(400, f"Unsupported endpoint {body.get('endpoint')!r}")
            if body.get("completion_window") != "24h":
                return _error(400, "completion_window must be '24h'")
            lines = [json.loads(line) for line in file["_data"].splitlines() if line.strip()]
            ids = [line.get("custom_id") for line in lines]
            if len(set(ids)) != len(ids):
                return _error(400, "custom_id values must be unique within a batch")
            now = int(time.time())
            batch = {
                "id": self._id("batch_"), "object": "batch", "endpoint": body["endpoint"],
                "errors": None, "input_file_id": file["id"], "completion_window": "24h",
                "status": "validating", "output_file_id": None, "error_file_id": None,
                "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
                "finalizing_at": None, "completed_at": None, "failed_at": None,
                "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "metadata": body.get("metadata"), "_lines": lines, "_polls": 0,
            }
            self.openai_batches[batch["id"]] = batch
            return web.json_response(_public(batch))
        batch = self.openai_batches[rest[0]]
        if request.method == "POST" and rest[1:] == ["cancel"]:
            if batch["status"] in ("validating", "in_progress", "finalizing"):
                batch["status"] = "cancelling"
                batch["cancelling_at"] = int(time.time())
            return web.json_response(_public(batch))
        if request.method == "GET" and len(rest) == 1:
            self._advance_openai(batch)
            return web.json_response(_public(batch))
        return _error(405, "Method not allowed")

    def _advance_openai(self, batch: dict[str, Any]) -> None:
        batch["_polls"] += 1
        now = int(time.time())
        status = batch["status"]
        if status == "cancelling":
            batch["status"] = "cancelled"
            batch["cancelled_at"] = now
        elif status == "validating":
            batch["status"] = "in_progress"
            batch["in_progress_at"] = now
        elif status == "in_progress" and batch["_polls"] >= self.polls_to_finish - 1:
            batch["status"] = "finalizing"
            batch["finalizing_at"] = now
        elif status == "finalizing":
            self._finish_openai(batch)

    def _finish_openai(self, batch: dict[str, Any]) -> None:
        out: list[str] = []
        err: list[str] = []
        for n, line in enumerate(batch["_lines"]):
            body = line.get("body") or {}
            text = _text_of(body.get("messages") or [])
            request_id = f"req_{batch['id']}_{n}"
            if "FAIL" in text:
                error = {"error": {"message": "Injected failure", "type": "invalid_request_error",
                                   "param": None, "code": None}}
                err.append(json.dumps({"id": f"batch_req_{n}", "custom_id": line["custom_id"],
                                       "response": {"status_code": 400,
                                                    "request_id": request_id, "body": error},
                                       "error": None}))
                continue
            answer = f"echo: {text}"
            completion = {
                "id": f"chatcmpl-{batch['id']}-{n}", "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer,
                                                     "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": _words(text) + 8, "completion_tokens": _words(answer),
                          "total_tokens": _words(text) + 8 + _words(answer)},
            }
            out.append(json.dumps({"id": f"batch_req_{n}", "custom_id": line["custom_id"],
                                   "response": {"status_code": 200, "request_id": request_id,
                                                "body": completion},
                                   "error": None}))
        now = int(time.time())
        if out:
            file_id = self._id("file-")
            self.files[file_id] = self._file_object(
                file_id, "batch_output.jsonl", "batch_output", ("\n".join(out) + "\n").encode()
            )
            batch["output_file_id"] = file_id
        if err:
            file_id = self._id("file-")
            self.files[file_id] = self._file_object(
                file_id, "batch_errors.jsonl", "batch_output", ("\n".join(err) + "\n").encode()
            )
            batch["error_file_id"] = file_id
        batch["status"] = "completed"
        batch["completed_at"] = now
        batch["request_counts"] = {"total": len(batch["_lines"]), "completed": len(out),
                                   "failed": len(err)}

    # -- Anthropic -------------------------------------------------------------------

    async def _anthropic(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        if request.method == "POST" and not rest:
            body = await request.json()
            requests = body.get("requests") or []
            ids = [item.get("custom_id") for item in requests]
            if not requests or len(set(ids)) != len(ids):
                return _anthropic_error(400, "requests must be non-empty with unique custom_id")
            for item in requests:
                params = item.get("params") or {}
                if "max_tokens" not in params or "model" not in params:
                    return _anthropic_error(400, "params.model and params.max_tokens are required")
            now = _iso(time.time())
            batch = {
                "id": self._id("msgbatch_"), "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0,
                                   "canceled": 0, "expired": 0},
                "ended_at": None, "created_at": now, "expires_at": _iso(time.time() + 86400),
                "archived_at": None, "cancel_initiated_at": None, "results_url": None,
                "_requests": requests, "_polls": 0, "_results": None,
            }
            self.anthropic_batches[batch["id"]] = batch
            return web.json_response(_public(batch))
        batch = self.anthropic_batches[rest[0]]
        if request.method == "POST" and rest[1:] == ["cancel"]:
            if batch["processing_status"] == "in_progress":
                batch["processing_status"] = "canceling"
                batch["cancel_initiated_at"] = _iso(time.time())
            return web.json_response(_public(batch))
        if request.method == "GET" and rest[1:] == ["results"]:
            if batch["_results"] is None:
                return _anthropic_error(404, "Results are not available until the batch ends")
            return web.Response(body=batch["_results"], content_type="application/binary")
        if request.method == "GET" and len(rest) == 1:
            batch["_polls"] += 1
            if batch["processing_status"] == "canceling" or (
                batch["processing_status"] == "in_progress"
                and batch["_polls"] >= self.polls_to_finish
            ):
                self._finish_anthropic(batch)
            return web.json_response(_public(batch))
        return _anthropic_error(405, "Method not allowed")

    def _finish_anthropic(self, batch: dict[str, Any]) -> None:
        canceled = batch["processing_status"] == "canceling"
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        lines = []
        for n, item in enumerate(batch["_requests"]):
            params = item["params"]
            text = _text_of(params.get("messages") or [])
            if canceled:
                result: dict[str, Any] = {"type": "canceled"}
                counts["canceled"] += 1
            elif "FAIL" in text:
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": "Injected failure"}}}
                counts["errored"] += 1
            else:
                answer = f"echo: {text}"
                result = {"type": "succeeded", "message": {
                    "id": f"msg_{batch['id']}_{n}", "type": "message", "role": "assistant",
                    "model": params["model"], "content": [{"type": "text", "text": answer}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": _words(text) + 8, "output_tokens": _words(answer),
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}
                counts["succeeded"] += 1
            lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}))
        batch["_results"] = ("\n".join(lines) + "\n").encode()
        batch["processing_status"] = "ended"
        batch["request_counts"] = counts
        batch["ended_at"] = _iso(time.time())
        batch["results_url"] = f"{self.url}/v1/messages/batches/{batch['id']}/results"


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": None}}
    return web.json_response(body, status=status)


def _anthropic_error(status: int, message: str) -> web.Response:
    kind = {404: "not_found_error"}.get(status, "invalid_request_error")
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}},
                             status=status)
