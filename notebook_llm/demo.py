"""The README's main job: ``python -m notebook_llm.demo``.

Runs on the embedded default (SmolLM2 in-process when the ``[local]`` extra is
installed, the offline demo models otherwise): streams an answer into the
terminal, compares models side by side, runs a small batch with a progress
bar, tabulates usage and costs, does a small semantic search, and writes
``demo-report.html`` with what a notebook would show.
"""

from __future__ import annotations

import argparse
import html
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any

import notebook_llm as nl
from notebook_llm._render import terminal_text

REVIEWS = [
    "The battery lasts all day and the screen is gorgeous.",
    "Stopped working after a week. Very disappointed.",
    "Fast delivery, works exactly as described.",
    "The strap broke on the first day.",
    "Great value for the price, I would buy it again.",
    "Customer service never answered my emails.",
    "Comfortable to wear and easy to set up.",
    "The app keeps crashing and losing my data.",
    "Excellent sound quality for such a small speaker.",
    "It arrived scratched and the box was open.",
    "My kids love it and use it every day.",
    "Too expensive for what it does.",
    "Setup took two minutes, brilliant.",
    "The charger overheats, which worries me.",
    "Lovely design, feels premium in the hand.",
    "Instructions were confusing and incomplete.",
    "Works perfectly with my phone.",
    "Noisy fan, I returned it.",
    "Best purchase I made this year.",
    "Colours faded after one wash.",
]

DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "The Great Barrier Reef is the world's largest coral reef system.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "The Python programming language was created by Guido van Rossum.",
    "Mount Everest is the highest mountain above sea level.",
    "Jupyter notebooks mix code, text and plots in one document.",
]


def _models() -> tuple[str, str]:
    """(chat model, embedding model) for this machine."""
    chat = nl.default_model()
    embedding = "local:minilm" if _minilm_available() else "offline:hash"
    return chat.model, embedding


def _minilm_available() -> bool:
    try:
        from notebook_llm.providers.local import resolve_model

        resolve_model("minilm")
    except Exception:  # noqa: BLE001 - any reason means: use the offline embedding
        return False
    return True


def _say(text: object = "", end: str = "\n") -> None:
    """Print what a model or server may have written, without its control characters."""
    print(terminal_text(str(text)), end=end, flush=True)


def _section(title: str) -> None:
    print(f"\n\033[1m== {title} ==\033[0m" if sys.stdout.isatty() else f"\n== {title} ==")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", default="demo-report.html", help="where to write the report")
    parser.add_argument("--model", help="chat model (default: the embedded default)")
    parser.add_argument("--open", action="store_true", help="open the report in a browser")
    args = parser.parse_args(argv)

    chat_model, embedding_model = _models()
    if args.model:
        chat_model = args.model
    chosen = nl.default_model()
    report: list[tuple[str, str]] = []
    started = time.perf_counter()

    _section("Model")
    _say(f"chat: {chat_model}  ({chosen.reason})")
    _say(f"embeddings: {embedding_model}")

    with nl.track() as tracker:
        _section("Streaming")
        prompt = "In two sentences, why do people like Jupyter notebooks?"
        _say(f"> {prompt}\n")
        stream = nl.stream(prompt, model=chat_model, max_tokens=80, temperature=0.2)
        for chunk in stream:
            _say(chunk.text, end="")
        completion = stream.completion
        assert completion is not None
        _say(f"\n\n[{completion.footer()}]")
        report.append(("Streaming answer", _completion_html(prompt, completion)))

        _section("Compare side by side")
        comparison = nl.compare(
            "Name three fruits.",
            models=[chat_model, "offline:story", "offline:echo"],
            max_tokens=40,
            temperature=0.2,
        )
        summary = comparison.summary()[["latency_mean_s", "ttft_mean_s", "tokens_per_s",
                                        "output_tokens", "cost_usd"]]
        _say(summary.to_string(float_format=lambda v: f"{v:.3f}"))
        report.append(("Compare", comparison._repr_html_() + summary.to_html(float_format="%.3f")))

        _section("Batch over a DataFrame (20 rows)")
        import pandas as pd

        reviews = pd.DataFrame({"review": REVIEWS})
        result = nl.batch(
            reviews,
            model=chat_model,
            template=(
                "Classify the sentiment of this review as positive or negative.\n"
                "Review: {review}\nSentiment:"
            ),
            max_tokens=8,
            temperature=0,
        )
        # The frame carries the input columns, then the answer as ``text``.
        table = result.to_pandas()[[*reviews.columns, "text", "output_tokens", "cost_usd"]]
        _say(table.head(8).to_string(max_colwidth=50))
        summary_row = result.summary()
        print(f"... {len(table)} rows: {summary_row['done']} done, {summary_row['failed']} failed, "
              f"{summary_row['cached']} reused from the checkpoint of an earlier run")
        report.append(("Batch", table.to_html()))

        _section("Semantic search")
        vectors = nl.embed(DOCUMENTS, model=embedding_model)
        hits = vectors.search("Which city is the French capital?", k=3)
        _say(hits.to_string())
        report.append(("Semantic search", hits.to_html()))

    _section("Usage and cost")
    _say(tracker.df[["model", "input_tokens", "output_tokens", "cost_usd", "cost_status"]]
         .groupby(["model", "cost_status"]).sum(numeric_only=True).to_string())
    print(f"total: {tracker.calls} calls, {tracker.tokens} tokens, "
          f"${tracker.cost_usd:.4f} (local and offline models are free)")
    report.append(("Usage and cost", tracker._repr_html_()))

    path = Path(args.report)
    path.write_text(_page(report, chat_model), encoding="utf-8")
    _section("Report")
    print(f"wrote {path.resolve()}  ({time.perf_counter() - started:.1f}s in all)")
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    return 0


def _completion_html(prompt: str, completion: Any) -> str:
    from notebook_llm._render import render_markdown

    return (f"<p><b>Prompt:</b> {html.escape(prompt)}</p>{render_markdown(completion.text)}"
            f"<p><small>{html.escape(completion.footer())}</small></p>")


# The report is a file opened in a browser: only its own styles and inline
# (data:) images, so nothing in it can run script or fetch a URL.
_REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _page(sections: list[tuple[str, str]], model: str) -> str:
    body = "".join(f"<section><h2>{html.escape(title)}</h2>{content}</section>"
                   for title, content in sections)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_REPORT_POLICY}\">"
        "<title>notebook-llm demo</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;"
        "padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.3rem .5rem;"
        "vertical-align:top;text-align:left}section{margin-bottom:2rem}</style></head><body>"
        f"<h1>notebook-llm demo</h1><p>Model: <code>{html.escape(model)}</code></p>{body}"
        "</body></html>"
    )


if __name__ == "__main__":
    raise SystemExit(main())
