"""What a browser would make of a fragment: tags, handlers, URLs, images that load.

`audit` parses HTML the way a browser reads attributes (entities decoded,
controls and whitespace ignored in URLs) and lists what must never reach one:
tags outside the sanitiser's allow-list, ``on*`` handlers, ``javascript:``
and friends, and images that would load from a URL. `frontend_render` is a
permissive Markdown frontend (raw HTML on, links not validated), to check
``text/markdown`` output as JupyterLab, VS Code or Colab would show it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["SAFE_TAGS", "Audit", "audit", "frontend_render", "visible_text"]

SAFE_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "img", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th",
    "thead", "tr", "ul",
}  # fmt: skip
BAD_URL = re.compile(r"(?:javascript|vbscript|file|data):")
GOOD_DATA = re.compile(r"data:image/(?:gif|png|jpeg|webp);")


class Audit(HTMLParser):
    """Collects every tag, attribute and URL in an HTML fragment, and what is wrong."""

    def __init__(self, allowed: set[str] | None = None) -> None:
        super().__init__(convert_charrefs=True)
        self.allowed = SAFE_TAGS if allowed is None else allowed
        self.tags: list[str] = []
        self.links: list[tuple[str, dict[str, str | None]]] = []
        self.problems: list[str] = []
        self.images: list[str] = []
        """The source of every image that would load (``src`` and ``srcset``)."""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links.append((tag, dict(attrs)))
        if tag not in self.allowed:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"handler {name}={value!r}")
            if name in {"href", "src"}:
                # What a browser would see: entities decoded (HTMLParser does
                # that), controls and whitespace dropped, any case.
                url = re.sub(r"[\s\x00-\x1f]", "", value or "").lower()
                if BAD_URL.match(url) and not GOOD_DATA.match(url):
                    self.problems.append(f"url {name}={value!r}")
            if name in {"src", "srcset"} and value and tag in {"img", "source", "image", "input"}:
                url = re.sub(r"[\s\x00-\x1f]", "", value).lower()
                if not GOOD_DATA.match(url):
                    self.images.append(value)


def audit(fragment: str, allowed: set[str] | None = None) -> Audit:
    """Parse *fragment*; ``allowed`` replaces the tag allow-list (the library's own markup)."""
    parser = Audit(allowed)
    parser.feed(fragment)
    parser.close()
    return parser


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def visible_text(fragment: str) -> str:
    """The text a browser shows for *fragment* (tags dropped, entities decoded)."""
    parser = _Text()
    parser.feed(fragment)
    parser.close()
    return "".join(parser.parts)


def frontend_render(markdown: str) -> str:
    """A permissive Markdown frontend: raw HTML on, links not validated (like marked)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    return md.render(markdown)
