"""Turn model output into safe Markdown, HTML and terminal text for display.

This is the one place where text from a model or a server becomes something
a browser or a terminal renders, so it is written defensively:

- `render_markdown` parses with markdown-it-py (raw HTML off, dangerous link
  schemes refused) and then cleans the HTML again with nh3 against an
  explicit allow-list. Either layer alone should stop script, event handlers
  and ``javascript:`` URLs; together a bug in one is not enough.
- `escape_markdown` prepares text for a ``text/markdown`` output, which
  JupyterLab, VS Code and Colab render with raw HTML enabled.
- `markdown_text`, `markdown_code` and `markdown_table_cell` put names and
  values (model ids, tool calls, server labels, errors) into Markdown that
  the library writes itself, so none of them can open a tag, a link, an image,
  a code span or a table cell of its own.
- Images from other hosts do not load unless `set_remote_images` turned
  them on: shown, an image URL is fetched at once, so a model steered by a
  prompt injection could send what it read to any server in the URL. Such an
  image becomes a link naming it.
- `terminal_text` keeps escape sequences and other control characters in
  model output from driving a terminal (colours, title, hyperlinks,
  overwriting lines).
- `close_open_fences`, `render_streaming` and `Throttle` serve the streaming
  display.

markdown-it-py and nh3 live in the optional ``notebook`` extra and are
imported on first use; without them `render_markdown` returns escaped text in
a ``<pre>``. This module never imports IPython.
"""

from __future__ import annotations

import functools
import html
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

__all__ = [
    "Throttle",
    "close_open_fences",
    "escape_markdown",
    "html_escape",
    "markdown_code",
    "markdown_table_cell",
    "markdown_text",
    "plain_html",
    "plain_table_html",
    "remote_images",
    "render_markdown",
    "render_streaming",
    "sandboxed_html",
    "sanitize_html",
    "set_remote_images",
    "terminal_text",
]

# The second line of defence: what nh3 lets through. Everything markdown-it
# emits for CommonMark + tables + strikethrough, and nothing else.
_ALLOWED_TAGS = frozenset(
    {
        "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4",
        "h5", "h6", "hr", "img", "li", "ol", "p", "pre", "s", "strong",
        "table", "tbody", "td", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "code": {"class"},
    # markdown-it writes column alignment as style="text-align:..."; nh3 keeps
    # only that property (see filter_style_properties below).
    "th": {"style"},
    "td": {"style"},
}
_URL_SCHEMES = frozenset({"http", "https", "mailto"})
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,64}")

# Link schemes that must never reach a browser; data: is allowed only for
# raster images (the same rule markdown-it applies).
_BAD_SCHEME = re.compile(r"(?:javascript|vbscript|file|data):")
_GOOD_DATA = re.compile(r"data:image/(?:gif|png|jpeg|webp);")

_remote_images = False
"""Whether images from other hosts may load (`set_remote_images`); off by default."""


def set_remote_images(enabled: bool) -> None:
    """Let images from other hosts load in model output, or stop them (the default).

    An image is fetched as soon as it is shown, without a click, so a model
    that was steered by a prompt injection can send what it has read to any
    server in an image URL. While this is off, such an image in Markdown
    shows as a link to it (``image: alt``), raw HTML ``<img>`` loses its
    source, and ``text/markdown`` output carries a link instead of the image.
    ``%llm_config images on|off`` calls this in a notebook.

    Args:
        enabled: True to let remote images load from now on.
    """
    global _remote_images
    _remote_images = bool(enabled)


def remote_images() -> bool:
    """Whether images from other hosts load in model output (see `set_remote_images`)."""
    return _remote_images


@functools.lru_cache(maxsize=1)
def _load_markdown() -> MarkdownIt | None:
    """Return the shared MarkdownIt parser, or None if markdown-it-py is missing."""
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return None
    # html=False: raw HTML in model output is shown as text, never passed on.
    # markdown-it's default validateLink refuses javascript:, vbscript:,
    # file: and non-image data: URLs (after decoding entities, any case).
    # breaks=True: a single newline is a line break, as in chat UIs. Models
    # write poems, addresses and one-item-per-line lists that way.
    md = MarkdownIt(
        "commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": True}
    )
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _render_image)
    return md


def _render_image(self: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
    """markdown-it's image rule: a remote image becomes a link to it (unless allowed).

    Inline and reference images (full, collapsed or shortcut) all arrive here
    as one ``image`` token. Raster ``data:`` images are left to the sanitiser.
    """
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    if _remote_images or _GOOD_DATA.match(src.lower()):
        return str(self.image(tokens, idx, options, env))
    alt = self.renderInlineAsText(token.children or [], options, env)
    label = html_escape(f"image: {alt or src}")
    # Inside a link's text a second link would split the first: text only.
    depth = sum(t.nesting for t in tokens[:idx] if t.type in ("link_open", "link_close"))
    return label if depth > 0 else f'<a href="{html_escape(src)}">{label}</a>'


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    """nh3's attribute filter: ``language-*`` classes on ``<code>`` only, and no
    image source unless remote images are allowed (the second line of defence
    behind `_render_image`, and the only one for raw HTML through `sanitize_html`)."""
    if attribute == "class":
        classes = [c for c in value.split() if _LANGUAGE_CLASS.fullmatch(c)]
        return " ".join(classes) if tag == "code" and classes else None
    if tag == "img" and attribute == "src" and not _remote_images:
        return None
    return value


@functools.lru_cache(maxsize=1)
def _load_sanitizer() -> Callable[[str], str] | None:
    """Return a configured nh3 cleaning function, or None if nh3 is missing."""
    try:
        import nh3
    except ImportError:
        return None
    options: dict[str, Any] = {
        "tags": set(_ALLOWED_TAGS),
        "attributes": _ALLOWED_ATTRIBUTES,
        "attribute_filter": _filter_attribute,
        "url_schemes": set(_URL_SCHEMES),
        "link_rel": "noopener noreferrer",
        "strip_comments": True,
        "filter_style_properties": {"text-align"},
    }
    try:
        nh3.clean("", **options)
    except TypeError:
        # nh3 older than attribute_filter / filter_style_properties: drop the
        # attributes those options would have vetted rather than allow them,
        # and choose per call whether images keep their source.
        del options["attribute_filter"], options["filter_style_properties"]
        loose = {tag: attrs - {"class", "style"} for tag, attrs in _ALLOWED_ATTRIBUTES.items()}
        strict = {**loose, "img": loose["img"] - {"src"}}
        with_images: dict[str, Any] = {**options, "attributes": loose}
        without: dict[str, Any] = {**options, "attributes": strict}
        clean_html = nh3.clean

        def clean(html: str) -> str:
            return clean_html(html, **(with_images if _remote_images else without))

        return clean
    return functools.partial(nh3.clean, **options)


def html_escape(text: object) -> str:
    """Escape ``str(text)`` for HTML text and attribute values (quotes included)."""
    return html.escape(str(text), quote=True)


def plain_html(text: str) -> str:
    """Text shown as itself: escaped, in a wrapping ``<pre>``."""
    return f'<pre style="white-space: pre-wrap">{html_escape(text)}</pre>'


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Characters that start inline Markdown (emphasis, code, links and images,
# strikethrough, table cells, math in JupyterLab) or escape one.
_MARKDOWN_INLINE = frozenset("\\`*_[]~|$")
_PLAIN_CODE = re.compile(r"[^`|<>&\\$]+")
_BLOCK_START = re.compile(r"\d{1,9}(?=[.)])|(?=[#+-])")


def _one_line(text: str) -> str:
    """*text* with control characters dropped and every run of whitespace one space."""
    return " ".join(_CONTROL.sub("", text.replace("\r", " ")).split())


def markdown_text(text: object) -> str:
    """``str(text)`` as literal Markdown text, folded onto one line.

    For names and values the library puts into Markdown it writes itself:
    model ids, server labels, footers, roles. ``<``, ``>`` and ``&`` become
    entities and every character that starts inline Markdown is
    backslash-escaped, so the value shows as typed and cannot open a tag,
    a link, an image, a code span, emphasis or a table cell, nor a heading or
    a list at the start of a line. Line breaks become spaces and control
    characters are dropped.
    """
    flat = _one_line(str(text))
    start = _BLOCK_START.match(flat)
    out = [flat[: start.end()] + "\\" if start else ""]
    for c in flat[start.end() if start else 0 :]:
        if c in "<>&":
            out.append(html.escape(c, quote=False))
        elif c in _MARKDOWN_INLINE:
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def markdown_code(text: object) -> str:
    """``str(text)`` as inline code in Markdown, folded onto one line.

    Plain values (``ollama:llama3.2``) become a backtick code span. One that
    holds a backtick, ``|``, ``<``, ``>``, ``&``, ``\\`` or ``$`` becomes
    ``<code>`` with every ASCII punctuation character as a numeric entity: it
    looks the same, and no renderer can end the code early, start a table
    cell or see a tag in it.
    """
    flat = _one_line(str(text))
    if _PLAIN_CODE.fullmatch(flat):
        return f"`{flat}`"
    encoded = "".join(f"&#{ord(c)};" if c in _ASCII_PUNCTUATION else c for c in flat)
    return f"<code>{encoded}</code>"


def markdown_table_cell(text: str) -> str:
    """Model Markdown as one table cell: `escape_markdown` on one line, ``|`` as an entity.

    Inline formatting survives; line breaks become spaces so the row stays one
    row, and no ``|`` from the text starts a cell.
    """
    return escape_markdown(_one_line(text)).replace("|", "&#124;")


# C0 controls but tab and newline, DEL and the C1 controls (ESC and CSI start
# terminal escape sequences; 0x9b is CSI on its own). A carriage return is
# dropped (it could overwrite the line); the rest show as visible symbols.
_TERMINAL = {
    **{c: chr(0x2400 + c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)},
    0x0D: None,
    0x7F: "\u2421",
    **{c: "\ufffd" for c in range(0x80, 0xA0)},
}


def terminal_text(text: str) -> str:
    """Model or server text made safe to print to a terminal or a plain-text output.

    Control characters other than newline and tab are shown as symbols
    (ESC as ``␛``) or, for carriage returns, dropped, so no escape sequence
    can reach the terminal: an answer cannot change colours, set the window
    title, write a hyperlink, move the cursor or overwrite what was printed.
    Character by character, so pieces of a stream can be cleaned one at a time.
    """
    return text.translate(_TERMINAL)


def render_markdown(text: str) -> str:
    """Render Markdown from a model as HTML that is safe to display.

    Args:
        text: Markdown, possibly hostile (raw HTML, ``javascript:`` links...).

    Returns:
        Sanitised HTML. Without markdown-it-py and nh3 installed (the
        ``notebook`` extra), the escaped text inside a ``<pre>``.
    """
    md = _load_markdown()
    sanitize = _load_sanitizer()
    if md is None or sanitize is None:
        # Both layers or neither: markdown-it alone would probably be safe,
        # but "probably" is not the bar for model output.
        return plain_html(text)
    return sanitize(md.render(text))


def sanitize_html(text: str) -> str:
    """HTML from a model made safe to display, with the Markdown allow-list.

    Without nh3 installed (the ``notebook`` extra), the escaped text.
    """
    sanitize = _load_sanitizer()
    return plain_html(text) if sanitize is None else sanitize(text)


# HTML a model writes for display (``-f html``): ordinary markup, inline and
# <style> styles and SVG. Scripts, frames, forms, <meta> (a refresh would
# navigate the frame) and <base>/<link> are not on the list.
_PAGE_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd",
        "del", "details", "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3",
        "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q",
        "s", "small", "span", "strong", "style", "sub", "summary", "sup", "table", "tbody",
        "td", "tfoot", "th", "thead", "tr", "u", "ul",
        "svg", "g", "path", "rect", "circle", "ellipse", "line", "polyline", "polygon", "text",
        "tspan", "title", "defs", "linearGradient", "radialGradient", "stop",
    }
)  # fmt: skip
_PAGE_ATTRIBUTES: dict[str, set[str]] = {
    "*": {
        "style", "class", "id", "title", "width", "height", "align", "colspan", "rowspan",
        "viewBox", "fill", "stroke", "stroke-width", "opacity", "transform", "x", "y", "x1",
        "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry", "d", "points", "font-size",
        "text-anchor", "offset", "stop-color", "xmlns",
    },
    "a": {"href"},
    "img": {"src", "alt"},
    "ol": {"start"},
}  # fmt: skip


def sandboxed_html(text: str) -> str:
    """HTML from a model shown as written, in a frame that cannot run or fetch anything.

    Three layers: nh3 removes scripts, frames, forms and ``<meta>``; the
    ``<iframe sandbox="">`` (no ``allow-scripts``, no ``allow-same-origin``)
    runs no script and reaches nothing of the notebook's; and a Content
    Security Policy inside it stops every network request, images from other
    hosts included unless `set_remote_images` allows them. Styles, tables and
    SVG render. Without nh3 installed, the escaped text.
    """
    try:
        import nh3
    except ImportError:
        return plain_html(text)
    clean = nh3.clean(
        text, tags=set(_PAGE_TAGS), attributes=_PAGE_ATTRIBUTES, clean_content_tags={"script"},
        url_schemes=set(_URL_SCHEMES), link_rel="noopener noreferrer", strip_comments=True,
    )  # fmt: skip
    images = "data: http: https:" if _remote_images else "data:"
    policy = f"default-src 'none'; style-src 'unsafe-inline'; img-src {images}; font-src data:"
    page = (
        f'<!DOCTYPE html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        f"<style>body{{margin:0;font-family:sans-serif}}</style></head><body>{clean}</body></html>"
    )
    blocks = clean.count("\n") + len(_BLOCK_TAG.findall(clean))
    height = min(600, max(80, 24 * (blocks + 2)))
    return (
        f'<iframe sandbox="" srcdoc="{html_escape(page)}" title="HTML from the model"'
        f' style="width:100%;height:{height}px;border:1px solid rgba(128,128,128,.3);'
        f'resize:vertical;overflow:auto"></iframe>'
    )


_BLOCK_TAG = re.compile(r"<(?:p|div|tr|li|h[1-6]|br|svg|pre|table)\b", re.IGNORECASE)


def render_streaming(text: str) -> str:
    """Render partial streamed Markdown, closing an unfinished code fence first."""
    return render_markdown(close_open_fences(text))


# -- fences -------------------------------------------------------------------

# A CommonMark fence opener: up to three spaces, then three or more backticks
# (whose info string has no backtick) or tildes.
_FENCE_OPEN = re.compile(r"(?P<indent> {0,3})(?P<fence>`{3,}(?=[^`]*$)|~{3,})(?P<info>.*)")
# Leading container syntax (blockquote markers, list markers) and whitespace.
_CONTAINER_PREFIX = re.compile(r"(?:[ \t]*(?:>|(?:[-+*]|\d{1,9}[.)])(?=[ \t])))*[ \t]*")


def _is_strict_closer(line: str, char: str, length: int) -> bool:
    """Whether *line* closes a fence of *length* *char*s (CommonMark rule)."""
    stripped = line.lstrip(" ")
    if len(line) - len(stripped) > 3:
        return False
    run = len(stripped) - len(stripped.lstrip(char))
    return run >= length and not stripped[run:].strip(" \t")


def _split_lines(text: str) -> list[str]:
    """Split on the line endings CommonMark knows (\\n, \\r\\n, \\r) and no others."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def close_open_fences(text: str) -> str:
    """Close a code fence left open by partial, still-streaming text.

    A fence opened with ``` or ~~~ (any length, up to three spaces of
    indent) is closed by a line of the same character at least as long. If
    the text ends inside a fence, a matching closer is appended so the partial
    code renders as a code block. A last line that is the beginning of that
    closer (a lone ````` or ``````) is completed rather than shown as code.

    Args:
        text: Markdown received so far.

    Returns:
        *text*, or *text* plus a closing fence.
    """
    lines = _split_lines(text)
    fence: tuple[str, str, int] | None = None  # (indent, char, length) while open
    for line in lines:
        if fence is None:
            match = _FENCE_OPEN.fullmatch(line)
            if match:
                fence = (match["indent"], match["fence"][0], len(match["fence"]))
        elif _is_strict_closer(line, fence[1], fence[2]):
            fence = None
    if fence is None:
        return text
    indent, char, length = fence
    closer = indent + char * length
    last = lines[-1].lstrip(" ")
    if len(lines) > 1 and last and last == char * len(last) and len(lines[-1]) - len(last) <= 3:
        # The closer is arriving one character at a time: finish it instead
        # of showing "``" as the last line of code.
        return text[: len(text) - len(lines[-1])] + closer
    separator = "" if text.endswith(("\n", "\r")) else "\n"
    return text + separator + closer + "\n"


# -- escape_markdown ----------------------------------------------------------

_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_SAFE_AUTOLINK = re.compile(r"<(?:https?://|mailto:)[^\s<>\x00-\x1f\"'`\\]*>", re.IGNORECASE)
_LINK_TARGET = re.compile(r"\]([(:])")
_BACKTICKS = re.compile(r"`+")
# A whole inline image whose source is a raster data: URL (nothing that a
# renderer could read as a reference or a remote URL instead).
_DATA_IMAGE = re.compile(
    r"!\[[^\[\]`\\\n]*\]\(<?data:image/(?:gif|png|jpeg|webp);[A-Za-z0-9+/=,;:._-]*>?\)",
    re.IGNORECASE,
)


def _is_dangerous_target(following: str) -> bool:
    """Whether a link destination starting at *following* uses a blocked scheme."""
    # Normalise the way a renderer and then a browser would: drop backslash
    # escapes, whitespace and control characters, and a pointy-bracket <.
    head = re.sub(r"[\\\s\x00-\x1f<]", "", following[:64]).lower()
    return bool(_BAD_SCHEME.match(head)) and not _GOOD_DATA.match(head)


def _neutralise_links(chunk: str) -> str:
    """Turn ``[x](javascript:...)`` and ``[x]: javascript:...`` into plain text.

    Escaping the ``(`` or ``:`` after ``]`` stops the renderer from seeing a
    link or a reference definition, so the text shows as typed.
    """
    parts: list[str] = []
    last = 0
    for match in _LINK_TARGET.finditer(chunk):
        if _is_dangerous_target(chunk[match.end() :]):
            parts.append(chunk[last : match.start(1)] + "\\")
            last = match.start(1)
    parts.append(chunk[last:])
    return "".join(parts)


def _code_html(content: str) -> str:
    """An inline code span as HTML whose text no Markdown renderer can reinterpret."""
    if len(content) > 2 and content[0] == content[-1] == " " and content.strip(" "):
        content = content[1:-1]  # CommonMark strips one space each side
    encoded = "".join(f"&#{ord(c)};" if c in _ASCII_PUNCTUATION else c for c in content)
    return f"<code>{encoded}</code>"


def _escape_inline(line: str) -> str:
    """Escape ``<``, ``>`` and ``&`` in one line of prose, sparing code spans.

    A code span that holds none of those characters (nor ``![``) is kept as
    typed. One that does is written as ``<code>`` with every punctuation
    character as a numeric entity: it looks the same, and stays safe even
    where a renderer splits the line differently from this scanner (tables,
    link targets).

    Unless remote images are allowed, every ``![`` outside code that does
    not open a complete raster ``data:`` image becomes ``[image: ``: inline,
    reference, collapsed and shortcut images all start that way, so each
    turns into a link (or plain text) instead of an image that loads.
    """
    prefix = _CONTAINER_PREFIX.match(line)
    start = prefix.end() if prefix else 0
    out = [line[:start]]  # blockquote ">" markers stay Markdown
    i, n = start, len(line)
    while i < n:
        c = line[i]
        if c == "\\" and i + 1 < n and line[i + 1] in _ASCII_PUNCTUATION:
            nxt = line[i + 1]
            out.append(html.escape(nxt, quote=False) if nxt in "<>&" else line[i : i + 2])
            i += 2
        elif c == "`":
            run = _BACKTICKS.match(line, i)
            assert run is not None
            width = run.end() - i
            closer = next(
                (m for m in _BACKTICKS.finditer(line, run.end()) if m.end() - m.start() == width),
                None,
            )
            if closer is None:
                out.append(run.group())
                i = run.end()
                continue
            content = line[run.end() : closer.start()]
            if any(ch in content for ch in "<>&") or "![" in content:
                out.append(_code_html(content))
            else:
                out.append(line[i : closer.end()])
            i = closer.end()
        elif c == "!" and line.startswith("[", i + 1):
            keep = _remote_images or _DATA_IMAGE.match(line, i)
            out.append("!" if keep else "[image: ")
            i += 1 if keep else 2
        elif c == "<":
            autolink = _SAFE_AUTOLINK.match(line, i)
            if autolink:
                out.append(autolink.group())
                i = autolink.end()
            else:
                out.append("&lt;")
                i += 1
        else:
            out.append({">": "&gt;", "&": "&amp;"}.get(c, c))
            i += 1
    return "".join(out)


def _indent_width(line: str) -> int:
    """Columns of leading whitespace, tabs stopping at multiples of four."""
    col = 0
    for c in line:
        if c == " ":
            col += 1
        elif c == "\t":
            col += 4 - col % 4
        else:
            break
    return col


def escape_markdown(text: str) -> str:
    """Make model text safe to hand to a frontend as ``text/markdown``.

    JupyterLab, VS Code and Colab render raw HTML inside Markdown, so ``<``,
    ``>`` and ``&`` are escaped everywhere except inside fenced code blocks
    and inline code spans, where they already show literally. Links to
    ``javascript:``, ``vbscript:``, ``file:`` and ``data:`` (other than
    raster images) are turned back into plain text; ``<...>`` autolinks
    survive only for http, https and mailto. Images other than raster
    ``data:`` ones become links (``[image: alt](url)``) unless remote images
    are allowed (`set_remote_images`).

    The output never depends on a renderer agreeing with this function about
    where code starts and ends: fences this function keeps are re-indented
    and closed so every CommonMark reading sees the same block, fence-like
    lines it does not keep are escaped, and inline code holding ``<>&`` is
    written as entity-encoded ``<code>``.

    Args:
        text: Markdown from a model.

    Returns:
        Markdown in which no raw HTML survives outside code.
    """
    out: list[str] = []
    prose: list[str] = []

    def flush_prose() -> None:
        if prose:
            chunk = _neutralise_links("\n".join(prose))
            out.extend(_escape_inline(line) for line in chunk.split("\n"))
            prose.clear()

    fence: tuple[int, str, int] | None = None  # (indent, char, length) while open
    for line in _split_lines(text):
        if fence is not None:
            indent, char, length = fence
            stripped = line.lstrip(" \t")
            run = len(stripped) - len(stripped.lstrip(char))
            if run >= length and not stripped[run:].strip(" \t`~"):
                # Closed more loosely than CommonMark requires (any indent,
                # marked's trailing ``~`` or backticks), and written back as
                # a canonical closer that every renderer agrees on.
                out.append(" " * indent + char * run)
                fence = None
            elif line.strip() and _indent_width(line) < indent:
                # Inside a list item a less indented line would end the
                # fence; padding keeps it code under either reading.
                out.append(" " * (indent - _indent_width(line)) + line)
            else:
                out.append(line)
            continue
        opener = _FENCE_OPEN.fullmatch(line)
        # With a "|" the line may be a table header instead: markdown-it tries
        # tables before fences, marked and cmark-gfm the other way round.
        if opener and "|" not in line:
            flush_prose()
            info = html.escape(opener["info"], quote=False)
            out.append(opener["indent"] + opener["fence"] + info)
            fence = (len(opener["indent"]), opener["fence"][0], len(opener["fence"]))
            continue
        prefix = _CONTAINER_PREFIX.match(line)
        start = prefix.end() if prefix else 0
        if _FENCE_OPEN.fullmatch(line[start:]):
            # A fence inside a blockquote, after a list marker, indented four
            # or more, or that may be a table header: not tracked here, so
            # make sure no renderer sees a fence.
            line = line[:start] + "\\" + line[start:]
        prose.append(line)
    flush_prose()
    return "\n".join(out)


# -- tables and throttling ----------------------------------------------------


def plain_table_html(columns: list[str], rows: list[list[object]]) -> str:
    """A small HTML table for results that do not use pandas.

    Every header and cell is escaped; ``None`` shows as an empty cell.

    Args:
        columns: Header labels.
        rows: One list of cell values per row.

    Returns:
        A ``<table>`` element as a string.
    """

    def cell(tag: str, value: object) -> str:
        return f"<{tag}>{'' if value is None else html_escape(value)}</{tag}>"

    head = "".join(cell("th", c) for c in columns)
    body = "".join("<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Throttle:
    """Decide when a streaming display may update, at most N times a second.

    Pure bookkeeping, no threads or timers: the caller asks `ready` on each
    chunk and calls `force` for the final update.
    """

    def __init__(self, max_per_second: float = 15) -> None:
        """Allow at most *max_per_second* updates (must be positive)."""
        if not max_per_second > 0:
            raise ValueError(f"max_per_second must be positive, got {max_per_second!r}")
        self.max_per_second = max_per_second
        self.min_interval = 1.0 / max_per_second
        self._last: float | None = None

    def ready(self, now: float | None = None) -> bool:
        """Return True (and record the update) if enough time has passed.

        Args:
            now: The current `time.monotonic()` reading; injected by tests.
        """
        now = time.monotonic() if now is None else now
        # The epsilon keeps float noise (100.1 - 100.0 < 0.1) from skipping a frame.
        if self._last is not None and now - self._last < self.min_interval - 1e-9:
            return False
        self._last = now
        return True

    def force(self, now: float | None = None) -> bool:
        """Record an update regardless of timing (the final flush); returns True."""
        self._last = time.monotonic() if now is None else now
        return True

    def __repr__(self) -> str:
        return f"Throttle(max_per_second={self.max_per_second!r})"
