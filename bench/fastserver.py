"""A fast, fake OpenAI-compatible HTTP/1.1 server for client benchmarks.

Run it as its own process so that its CPU time is not charged to the client
being measured::

    python bench/fastserver.py --port 8000 [--chunks 50] [--cpu 0]

It prints ``READY <port>`` on stdout once it listens (``--port 0`` picks a free
port). From Python, :func:`start_server_process` does the same and returns
``(proc, base_url)``.

Speed comes from doing almost nothing per request: a raw ``asyncio.Protocol``
(on uvloop when installed), a minimal HTTP/1.1 parser (request line, a
``Content-Length`` body, keep-alive, no pipelining guarantees beyond
"requests are handled in order") and response bytes computed once at start.
JSON request bodies are never parsed on the hot path; ``"stream": true`` and
``"include_usage": true`` are found by substring search. Only
``/v1/embeddings`` parses its body (to count inputs), and caches the answer
per input count.

Endpoints (``/v1`` prefix optional):

- ``POST /v1/chat/completions``: a realistic ``chat.completion`` with usage;
  with ``"stream": true`` an SSE stream of ``--chunks`` content chunks shaped
  like OpenAI's (role chunk, content chunks, finish chunk, a usage chunk when
  ``stream_options.include_usage`` is set, ``data: [DONE]``), sent with
  ``Transfer-Encoding: chunked``, one HTTP chunk per SSE event, all in one
  socket write.
- ``POST /v1/embeddings``: a ``--dims``-long vector per input (float list or
  base64 float32, as ``encoding_format`` asks).
- ``GET /v1/models``: a short model list.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import select
import socket
import struct
import subprocess
import sys
from email.utils import formatdate
from typing import Final, cast

MODEL: Final = "gpt-4o-mini-2024-07-18"
CREATED: Final = 1751568164
COMPLETION_ID: Final = "chatcmpl-BpJBM4XqgLRpLxmTeun39ESCNhQwb"
FINGERPRINT: Final = "fp_07871e2ad8"
MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 16 * 1024 * 1024

# A short sentence cycled to make content deltas that look like real tokens.
_WORDS: Final = (
    "Hello", "!", " How", " can", " I", " help", " you", " with", " your",
    " notebook", " today", "?", " Here", " is", " a", " short", " answer",
    " about", " large", " language", " models", ".",
)

_USAGE: Final = {
    "prompt_tokens": 19,
    "completion_tokens": 50,
    "total_tokens": 69,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _head(status: str, content_type: str, extra: str = "") -> bytes:
    """Response head without the framing header (Content-Length/chunked)."""
    return (
        f"HTTP/1.1 {status}\r\n"
        f"date: {formatdate(usegmt=True)}\r\n"
        f"content-type: {content_type}\r\n"
        "x-request-id: req_0123456789abcdef0123456789abcdef\r\n"
        "openai-processing-ms: 1\r\n"
        "openai-version: 2020-10-01\r\n"
        f"{extra}"
    ).encode()


def json_response(body: bytes, status: str = "200 OK", close: bool = False) -> bytes:
    """Full HTTP/1.1 response bytes for a JSON body."""
    conn = "close" if close else "keep-alive"
    return (
        _head(status, "application/json")
        + f"content-length: {len(body)}\r\nconnection: {conn}\r\n\r\n".encode()
        + body
    )


def completion_body(n_tokens: int) -> bytes:
    """A non-streaming ``chat.completion`` like OpenAI's, with usage."""
    text = "".join(_WORDS[i % len(_WORDS)] for i in range(n_tokens))
    usage = dict(_USAGE, completion_tokens=n_tokens, total_tokens=19 + n_tokens)
    return _dumps({
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None,
                        "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    })


def sse_events(n_chunks: int, include_usage: bool) -> list[bytes]:
    """SSE events (``data: ...\\n\\n``) of a stream with ``n_chunks`` content chunks."""

    def chunk(delta: dict[str, object], finish: str | None) -> dict[str, object]:
        return {
            "id": COMPLETION_ID, "object": "chat.completion.chunk",
            "created": CREATED, "model": MODEL, "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}],
            **({"usage": None} if include_usage else {}),
        }

    objs: list[dict[str, object]] = [
        chunk({"role": "assistant", "content": "", "refusal": None}, None)
    ]
    objs += [chunk({"content": _WORDS[i % len(_WORDS)]}, None) for i in range(n_chunks)]
    objs.append(chunk({}, "stop"))
    if include_usage:
        objs.append({
            "id": COMPLETION_ID, "object": "chat.completion.chunk",
            "created": CREATED, "model": MODEL, "service_tier": "default",
            "system_fingerprint": FINGERPRINT, "choices": [],
            "usage": dict(_USAGE, completion_tokens=n_chunks,
                          total_tokens=19 + n_chunks),
        })
    events = [b"data: " + _dumps(o) + b"\n\n" for o in objs]
    events.append(b"data: [DONE]\n\n")
    return events


def sse_response(n_chunks: int, include_usage: bool) -> bytes:
    """Full chunked HTTP response carrying the SSE stream, one HTTP chunk per event."""
    head = _head("200 OK", "text/event-stream; charset=utf-8",
                 "transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n")
    framed = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in sse_events(n_chunks, include_usage))
    return head + framed + b"0\r\n\r\n"


def models_body() -> bytes:
    ids = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    return _dumps({"object": "list", "data": [
        {"id": i, "object": "model", "created": CREATED, "owned_by": "system"} for i in ids
    ]})


def error_body(message: str, kind: str = "invalid_request_error") -> bytes:
    return _dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


class Responses:
    """All response bytes, computed once."""

    def __init__(self, n_chunks: int, dims: int) -> None:
        self.dims = dims
        self.completion = json_response(completion_body(n_chunks))
        self.stream = sse_response(n_chunks, include_usage=False)
        self.stream_usage = sse_response(n_chunks, include_usage=True)
        self.models = json_response(models_body())
        self.not_found = json_response(error_body("Unknown path", "not_found"), "404 Not Found")
        self.bad = json_response(error_body("Bad request"), "400 Bad Request", close=True)
        self._embeddings: dict[tuple[int, bool], bytes] = {}

    def embeddings(self, body: bytes) -> bytes:
        try:
            req = json.loads(body)
            inp = req["input"]
        except (ValueError, KeyError, TypeError):
            return self.bad
        count = 1 if isinstance(inp, str) or (inp and isinstance(inp[0], int)) else len(inp)
        b64 = req.get("encoding_format") == "base64"
        key = (count, b64)
        if key not in self._embeddings:
            vec = [round(0.1 * ((k % 7) - 3), 3) for k in range(self.dims)]
            emb: object = (base64.b64encode(struct.pack(f"<{self.dims}f", *vec)).decode()
                           if b64 else vec)
            self._embeddings[key] = json_response(_dumps({
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": emb}
                         for i in range(count)],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 2 * count, "total_tokens": 2 * count},
            }))
        return self._embeddings[key]


class HTTPProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered in order."""

    __slots__ = ("buf", "r", "transport")

    def __init__(self, responses: Responses) -> None:
        self.r = responses
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        transport = self.transport
        assert transport is not None
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    transport.write(self.r.bad)
                    transport.close()
                    buf = b""
                break
            head = buf[:end].lower()
            length = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 17)
                try:
                    length = int(head[i + 17: j if j >= 0 else None])
                except ValueError:
                    length = -1
            if length < 0 or length > MAX_BODY or b"\r\ntransfer-encoding:" in head:
                transport.write(self.r.bad)  # chunked request bodies are not supported
                transport.close()
                buf = b""
                break
            body_end = end + 4 + length
            if len(buf) < body_end:
                break
            transport.write(self.respond(head, buf[end + 4: body_end]))
            buf = buf[body_end:]
            if b"\r\nconnection: close" in head:
                transport.close()
                buf = b""
                break
        self.buf = buf

    def respond(self, head: bytes, body: bytes) -> bytes:
        """Response bytes for one request (``head`` is lower-cased)."""
        sp = head.find(b" ")
        sp2 = head.find(b" ", sp + 1)
        method, path = head[:sp], head[sp + 1: sp2]
        q = path.find(b"?")
        if q >= 0:
            path = path[:q]
        if path.startswith(b"/v1/"):
            path = path[3:]
        r = self.r
        if path == b"/chat/completions" and method == b"post":
            if b'"stream":true' in body or b'"stream": true' in body:
                if b'"include_usage":true' in body or b'"include_usage": true' in body:
                    return r.stream_usage
                return r.stream
            return r.completion
        if path == b"/embeddings" and method == b"post":
            return r.embeddings(body)
        if path == b"/models" and method == b"get":
            return r.models
        return r.not_found

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, responses: Responses) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HTTPProtocol(responses), host, port,
                                      backlog=2048, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--chunks", type=int, default=50, help="content chunks per stream")
    p.add_argument("--dims", type=int, default=8, help="embedding vector length")
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    p.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = p.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    responses = Responses(args.chunks, args.dims)
    coro = serve(args.host, args.port, responses)
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(coro)
            return
    asyncio.run(coro)


def start_server_process(
    port: int = 0,
    *,
    chunks: int = 50,
    cpu: int | None = None,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server in a child process; return ``(proc, base_url)``.

    ``base_url`` has no ``/v1`` suffix (e.g. ``http://127.0.0.1:40123``). With
    ``port=0`` the server binds a free port and reports it. The caller owns
    ``proc``: ``proc.terminate(); proc.wait()`` when done.
    """
    cmd = [sys.executable, os.path.abspath(__file__), "--host", host, "--port", str(port),
           "--chunks", str(chunks)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b"(timed out)"
    if not line.startswith(b"READY "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"fastserver did not start: {line!r}")
    bound = int(line.split()[1])
    # Make sure it accepts connections before handing it out.
    with socket.create_connection((host, bound), timeout=timeout):
        pass
    return proc, f"http://{host}:{bound}"


if __name__ == "__main__":
    main()
