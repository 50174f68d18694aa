"""A small OpenAI-protocol chat server on loopback: priced answers, counted requests.

``gpt-4o-mini`` is in the price data, so its answers come back priced; the
server keeps every request body and its ``Authorization`` header, so a test
can see what was sent (and that nothing was, once it is stopped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.support.loopback import LoopbackServer

__all__ = ["ChatServer"]


class ChatServer(LoopbackServer):
    """Answers ``/v1/chat/completions`` with ``answer(last user message)``.

    Args:
        answer: the reply for a prompt.
        usage: prompt and completion tokens reported with every answer.
    """

    def __init__(self, answer: Callable[[str], str],
                 usage: tuple[int, int] = (12, 8)) -> None:
        super().__init__()
        self.answer = answer
        self.usage = usage
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.auth.append(request.headers.get("Authorization", ""))
        prompt, completion = self.usage
        return web.json_response({
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": self.answer(body["messages"][-1]["content"])}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })
