"""``nl.serve()``: the library's models as an OpenAI-compatible HTTP API.

``_handle`` starts the server and is its handle, ``_app`` holds the routes,
``_wire`` the OpenAI JSON shapes. aiohttp is imported when a server starts.
"""

from __future__ import annotations

from notebook_llm._serve._handle import Server, serve

__all__ = ["Server", "serve"]
