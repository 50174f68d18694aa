"""``%%chat`` conversations survive a kernel restart (``-c``, ``--cid``), and
``%llm_logs`` searches the log, in a real kernel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kernel import KernelSession, ok, value

CHATS = "get_ipython().magics_manager.registry['LLMMagics'].chats"


def _restart(session: KernelSession) -> None:
    session.km.restart_kernel(now=True)
    session.kc.wait_for_ready(timeout=60)
    assert value(session, f"'LLMMagics' in {CHATS.split('.registry')[0]}.registry") is False
    ok(session, "%load_ext notebook_llm")


@pytest.fixture
def session(tmp_path: Path) -> Iterator[KernelSession]:
    """A kernel with the extension loaded and a call log of its own."""
    kernel = KernelSession(env={"NOTEBOOK_LLM_DB": str(tmp_path / "log.db")}, cwd=str(tmp_path))
    try:
        ok(kernel, "%load_ext notebook_llm")
        yield kernel
    finally:
        kernel.close()


def test_chat_continues_after_a_kernel_restart(session: KernelSession) -> None:
    ok(session, "%%chat -m offline:echo\nmy name is Ada")
    ok(session, "%%chat\nwhat is my name?")
    first_id = value(session, f"{CHATS}['default'].id")

    _restart(session)
    done = ok(session, "%%chat -c\nthird turn")
    assert "third turn" in done.text
    assert value(session, "[m['content'] for m in _llm.messages]") == [
        "my name is Ada", "my name is Ada", "what is my name?", "what is my name?",
        "third turn"]
    assert value(session, f"{CHATS}['default'].id") == first_id

    ok(session, "%%chat --new --name other -m offline:echo\nsomething else")
    _restart(session)
    ok(session, f"%%chat --cid {first_id}\nfourth turn")  # not the most recent one
    assert value(session, "len(_llm.messages)") == 7
    assert value(session, f"{CHATS}['default'].model") == "offline:echo"
    history = ok(session, "%chat_history")
    assert history.text.count("user:") == 4 and "fourth turn" in history.text

    _restart(session)
    ok(session, "%%chat -c --name again\nfifth turn")  # -c: the most recent, --cid's
    assert value(session, "len(_llm.messages)") == 9
    missing = session.execute("%%chat --cid nosuchconversation\nhello")
    assert missing.status == "error" and "no conversation" in missing.text


def test_llm_logs_searches_with_escaped_highlights(session: KernelSession) -> None:
    ok(session, "%%llm -m offline:echo\n<b>refund</b> policy question")
    ok(session, "%%chat -m offline:story\na refund story")
    ok(session, "%%llm -m offline:echo\nshipping")
    done = ok(session, '%llm_logs -q refund -n 5')
    assert "<mark>refund</mark>" in done.html and "<b>refund" not in done.html
    assert "&lt;b&gt;" in done.html and "shipping" not in done.html
    assert "«refund»" in done.text
    cid = value(session, f"{CHATS}['default'].id")
    only = ok(session, f"%llm_logs -q refund --cid {cid}")
    assert only.html.count("<mark>") >= 1 and "policy" not in only.html
    by_model = ok(session, "%llm_logs -q refund -m offline:story")
    assert "policy question" not in by_model.html
    phrase = ok(session, '%llm_logs -q "policy question"')
    assert "<mark>policy question</mark>" in phrase.html  # a phrase, marked whole
    recent = ok(session, "%llm_logs -n 2")
    assert "shipping" in recent.text
    bad = session.execute("%llm_logs -q refund AND")
    assert bad.status == "error" and "Cannot search for 'refund AND'" in bad.text
    unclosed = session.execute('%llm_logs -q "unclosed')
    assert unclosed.status == "error" and "Close the quotes" in unclosed.text
    for done in (bad, unclosed):
        assert "Traceback" not in done.text and "site-packages" not in done.text


def test_chat_says_when_it_leaves_out_old_turns(session: KernelSession) -> None:
    for i in range(4):
        ok(session, f"%%chat -m offline:echo\nturn {i} " + "word " * 60)
    ok(session, f"{CHATS}['default'].context_window = 400")
    done = ok(session, "%%chat\nthe last question")
    assert "nears the model's context (400 tokens)" in done.text and "left out the" in done.text
    assert value(session, "[m['content'] for m in _llm.messages][-1]") == "the last question"
    assert value(session, "len(_llm.messages)") < 9  # older turns were not sent
    assert value(session, f"len({CHATS}['default'].turns)") == 5  # but stay in the history
