"""The notebook surface as a new user meets it, in a real kernel: line breaks in
answers, ``-m a -m b``, plots without a repr above them, short tracebacks from
the Python API."""

from __future__ import annotations

import json

import pytest

from tests.support.kernel import KernelSession, ok, strip_ansi

SETUP = """
%load_ext notebook_llm
import notebook_llm as nl
"""


def test_markdown_answer_keeps_its_line_breaks(kernel: KernelSession) -> None:
    done = ok(kernel, "%%llm -m offline:echo\nRoses are red,\nviolets are blue.\n\n- one\n- two")
    assert "Roses are red,<br />\nviolets are blue." in done.html or (
        "Roses are red,<br>\nviolets are blue." in done.html
    ), done.html


def test_two_model_flags_compare_both(kernel: KernelSession) -> None:
    done = ok(kernel, "%%llm -m offline:echo -m offline:story --max-tokens 5\nA lighthouse")
    assert "offline:echo" in done.html and "offline:story" in done.html
    names = kernel.execute("print(type(_llm).__name__, _llm.models)")
    assert "Comparison ['offline:echo', 'offline:story']" in names.text


def test_line_magic_takes_one_model(kernel: KernelSession) -> None:
    done = kernel.execute("x = %llm -m offline:echo -m offline:story hi")
    assert done.status == "error"
    assert "x = %llm takes one model" in strip_ansi(json.dumps(done.error))


def test_plot_shows_the_figure_and_no_axes_repr(kernel: KernelSession) -> None:
    pytest.importorskip("matplotlib")
    ok(kernel, "%matplotlib inline\nnl.complete('hi', model='offline:echo')")
    done = ok(kernel, "nl.plot_costs()")
    assert not any(o["output_type"] == "execute_result" for o in done.outputs), done.outputs
    images = [o for o in done.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1  # drawn once, by the inline backend
    assert "<Axes" not in done.text
    # A Comparison's figure too.
    done = ok(kernel, "nl.compare('q', models=['offline:echo']).plot()")
    assert not any(o["output_type"] == "execute_result" for o in done.outputs)
    assert len([o for o in done.outputs if "image/png" in o.get("data", {})]) == 1


def test_api_errors_lead_with_the_message_and_hide_library_frames(kernel: KernelSession) -> None:
    done = kernel.execute("nl.complete('hi', model='offline:stroy')")
    assert done.status == "error"
    lines = strip_ansi("\n".join(done.error["traceback"])).splitlines()  # type: ignore[index]
    assert lines[0].startswith("ModelNotFoundError: [offline:stroy] No offline model 'stroy'.")
    assert "Did you mean 'story'?" in lines[0]
    assert not any("notebook_llm/" in line for line in lines), lines
    assert len(lines) < 30, len(lines)
    ok(kernel, "%xmode Verbose")
    try:
        verbose = kernel.execute("nl.complete('hi', model='offline:stroy')")
    finally:
        ok(kernel, "%xmode Context")
    text = strip_ansi("\n".join(verbose.error["traceback"]))  # type: ignore[index]
    assert "notebook_llm/" in text  # every frame, for those who ask
