"""Figures, images, PDFs, text and audio on the wire, through recorded traffic.

Each provider's mapping is checked on the body the loopback server received
from the real transport (the official ``openai`` and ``anthropic`` SDKs among
them), answered with a recorded reply that carried the same kind of input
(``../shared/fixtures/recorded``, tags ``image_input``, ``document_input``,
``audio_input``). Every bad input must fail before any request is made.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notebook_llm import errors
from notebook_llm._attachments import attachment_parts, sniff
from notebook_llm._client import Client
from notebook_llm.core import loop as core_loop
from notebook_llm.core.modalities import register_modalities
from notebook_llm.core.types import ImagePart
from tests.support.replay import ReplayServer, Reply, load_fixture

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

OPENAI_IMAGE = "openai__chat_completions__0eb980349939"
OPENAI_DOCUMENT = "openai__chat_completions__5b92d7376560"
OPENAI_AUDIO = "openai__chat_completions__93f2275a6f20"
ANTHROPIC_IMAGE = "anthropic__messages__54740bc0744d"
GROQ_IMAGE = "groq__chat_completions__fe6612694d57"
RESPONSES_DOCUMENT = "openai__responses__4dda9ca48f09"  # images and a document

_clients: list[Client] = []


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


@pytest.fixture
def replay(server: ReplayServer, tmp_path: Path) -> Iterator[ReplayServer]:
    server.clear()
    server.handler = None
    yield server
    while _clients:
        core_loop.run(_clients.pop().aclose())


def client_for(server: ReplayServer, provider: str, **settings: Any) -> Client:
    base = server.url if provider == "anthropic" else server.url + "/v1"
    client = Client(
        log=False,
        cache=False,
        api_keys={provider: "test-key"},
        api_bases={provider: base},
        provider_settings={provider: settings} if settings else None,
    )
    _clients.append(client)
    return client


def a_figure(width: float = 4.0, height: float = 3.0) -> Any:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(width, height))
    axes.plot([1, 2, 3], [3, 1, 2], label="a line")
    axes.set_title("sales")
    plt.close(figure)
    return figure


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def data_url_bytes(url: str, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert url.startswith(prefix), url[:60]
    return base64.b64decode(url[len(prefix):])


def a_pdf() -> bytes:
    buffer = io.BytesIO()
    a_figure().savefig(buffer, format="pdf")
    return buffer.getvalue()


def a_wav(seconds: float = 0.2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * int(8000 * seconds))
    return buffer.getvalue()


# -- the figure path: a real figure, a real PNG, the body on the wire ------------------------


@pytest.mark.parametrize("transport", ["sdk", "fast"])
def test_a_figure_goes_to_openai_as_a_png_image_url(replay: ReplayServer, transport: str) -> None:
    replay.enqueue(load_fixture(OPENAI_IMAGE))
    client = client_for(replay, "openai", transport=transport)
    figure = a_figure(4, 3)
    answer = client.complete("What does the chart show?", "openai:gpt-4o-mini",
                             context={"sales_chart": figure})
    assert answer.text  # the recorded reply, parsed
    (request,) = replay.requests
    assert request.path == "/v1/chat/completions"
    (message,) = request.json()["messages"]
    image, prompt = message["content"]
    assert prompt == {"type": "text", "text": "What does the chart show?"}
    assert image["type"] == "image_url"
    png = data_url_bytes(image["image_url"]["url"], "image/png")
    width, height = png_size(png)
    # 4 x 3 inches at 100 dpi, trimmed to the drawn area by bbox_inches="tight".
    assert 300 <= width <= 420 and 200 <= height <= 320


def test_axes_and_dataframes_share_one_message(replay: ReplayServer) -> None:
    import pandas as pd

    replay.enqueue(load_fixture(OPENAI_IMAGE))
    client = client_for(replay, "openai")
    figure = a_figure()
    frame = pd.DataFrame({"month": ["jan", "feb"], "sales": [3, 5]})
    client.complete("Compare them", "openai:gpt-4o", context={"df": frame, "ax": figure.axes[0]})
    content = replay.requests[0].json()["messages"][0]["content"]
    assert [part["type"] for part in content] == ["text", "image_url", "text"]
    assert content[0]["text"].startswith("df: pandas DataFrame, 2 rows x 2 columns")
    assert content[2]["text"] == "Compare them"


# -- each provider's mapping -------------------------------------------------------------


def test_openai_takes_a_pdf_as_a_file_part(replay: ReplayServer, tmp_path: Path) -> None:
    replay.enqueue(load_fixture(OPENAI_DOCUMENT))
    path = tmp_path / "report.pdf"
    path.write_bytes(a_pdf())
    client = client_for(replay, "openai", transport="sdk")
    client.complete("Summarise it", "openai:gpt-5-mini", attachments=[path])
    document, _prompt = replay.requests[0].json()["messages"][0]["content"]
    assert document["type"] == "file"
    assert document["file"]["filename"] == "report.pdf"
    assert data_url_bytes(document["file"]["file_data"], "application/pdf") == path.read_bytes()


def test_openai_audio_models_take_input_audio(replay: ReplayServer) -> None:
    replay.enqueue(load_fixture(OPENAI_AUDIO))
    client = client_for(replay, "openai", transport="sdk")
    wav = a_wav()
    answer = client.complete("Whose name is mentioned?", "openai:gpt-4o-audio-preview",
                             attachments=[wav])
    assert "Marcelo" in answer.text
    audio = replay.requests[0].json()["messages"][0]["content"][0]
    assert audio == {"type": "input_audio",
                     "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}


def test_the_responses_api_gets_input_image_and_input_file(replay: ReplayServer) -> None:
    replay.enqueue(load_fixture(RESPONSES_DOCUMENT))
    client = client_for(replay, "openai", transport="sdk", api="responses")
    pdf = a_pdf()
    answer = client.complete("Analyze these", "openai:gpt-4.1", context={"chart": a_figure()},
                             attachments=[pdf])
    assert answer.text
    (request,) = replay.requests
    assert request.path == "/v1/responses"
    (item,) = request.json()["input"]
    image, document, prompt = item["content"]
    assert image["type"] == "input_image"
    assert png_size(data_url_bytes(image["image_url"], "image/png"))[0] > 100
    assert document["type"] == "input_file" and document["filename"] == "attachment.pdf"
    assert data_url_bytes(document["file_data"], "application/pdf") == pdf
    assert prompt == {"type": "input_text", "text": "Analyze these"}


def test_the_responses_api_refuses_audio_before_sending(replay: ReplayServer) -> None:
    client = client_for(replay, "openai", api="responses")
    with pytest.raises(errors.UnsupportedError, match="takes no audio input; nothing was sent"):
        client.complete("Listen", "openai:gpt-4o-audio-preview", attachments=[a_wav()])
    assert replay.requests == []


def test_anthropic_gets_image_and_document_blocks(replay: ReplayServer, tmp_path: Path) -> None:
    replay.enqueue(load_fixture(ANTHROPIC_IMAGE))
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(a_pdf())
    client = client_for(replay, "anthropic")
    figure = a_figure()
    client.complete("What do you see?", "anthropic:claude-3-opus-20240229",
                    context=[figure], attachments=[str(pdf)])
    body = replay.requests[0].json()
    image, document, prompt = body["messages"][0]["content"]
    assert image["type"] == "image"
    assert image["source"]["type"] == "base64" and image["source"]["media_type"] == "image/png"
    assert png_size(base64.b64decode(image["source"]["data"]))[0] > 100
    assert document == {"type": "document", "source": {
        "type": "base64", "media_type": "application/pdf",
        "data": base64.b64encode(pdf.read_bytes()).decode()}}
    assert prompt == {"type": "text", "text": "What do you see?"}


def test_an_openai_compatible_server_that_sees_gets_image_url(replay: ReplayServer) -> None:
    replay.enqueue(load_fixture(GROQ_IMAGE))
    client = client_for(replay, "groq")
    png = ImagePart("image/png", b"\x89PNG\r\n\x1a\n" + bytes(16), label="tiny")
    answer = client.complete("Describe these images.",
                             "groq:meta-llama/llama-4-scout-17b-16e-instruct", attachments=[png])
    assert "fruit" in answer.text.lower()
    image = replay.requests[0].json()["messages"][0]["content"][0]
    assert image["type"] == "image_url"
    assert image["image_url"]["url"].startswith("data:image/png;base64,")


def test_text_files_travel_as_text_every_model_reads(replay: ReplayServer,
                                                     tmp_path: Path) -> None:
    replay.enqueue(load_fixture(OPENAI_IMAGE))
    notes = tmp_path / "notes.md"
    notes.write_text("# Plan\nship on Friday\n", encoding="utf-8")
    client = client_for(replay, "openai")
    client.complete("When do we ship?", "openai:gpt-3.5-turbo", attachments=[notes])
    text = replay.requests[0].json()["messages"][0]["content"][0]
    assert text == {"type": "text", "text": "--- notes.md ---\n# Plan\nship on Friday\n"}


def test_a_url_is_fetched_and_sent_inline(replay: ReplayServer) -> None:
    png = bytes(a_png())

    def answer(request: Any) -> Reply:
        if request.path == "/chart.png":
            return Reply(200, {"content-type": "image/png"}, png)
        return Reply.from_fixture(load_fixture(OPENAI_IMAGE))

    replay.handler = answer
    client = client_for(replay, "openai")
    client.complete("What is it?", "openai:gpt-4o", attachments=[replay.url + "/chart.png"])
    fetched, sent = replay.requests
    assert fetched.path == "/chart.png" and sent.path == "/v1/chat/completions"
    image = sent.json()["messages"][0]["content"][0]["image_url"]["url"]
    assert data_url_bytes(image, "image/png") == png


def a_png() -> bytes:
    buffer = io.BytesIO()
    a_figure(1, 1).savefig(buffer, format="png")
    return buffer.getvalue()


# -- bad input: a clear error, and nothing sent ------------------------------------------------


def _refused(replay: ReplayServer, provider: str, model: str, error: type[Exception],
             match: str, **kwargs: Any) -> str:
    client = client_for(replay, provider)
    with pytest.raises(error, match=match) as caught:
        client.complete("look", f"{provider}:{model}", **kwargs)
    assert [r.path for r in replay.requests if r.path.endswith(("completions", "messages"))] == []
    assert "Nothing was sent" in str(caught.value) or "nothing" in str(caught.value).lower()
    return str(caught.value)


def test_a_missing_file_fails_before_sending(replay: ReplayServer, tmp_path: Path) -> None:
    message = _refused(replay, "openai", "gpt-4o", errors.InvalidRequestError, "does not exist",
                       attachments=[tmp_path / "nope.png"])
    assert "nope.png" in message


def test_an_unreadable_url_fails_before_sending(replay: ReplayServer) -> None:
    replay.handler = lambda request: Reply(404, {}, "gone")
    message = _refused(replay, "openai", "gpt-4o", errors.InvalidRequestError, "HTTP 404",
                       attachments=[replay.url + "/missing.png"])
    assert "Check the URL" in message


def test_a_url_nobody_answers_fails_before_sending(replay: ReplayServer) -> None:
    _refused(replay, "openai", "gpt-4o", errors.InvalidRequestError, "cannot be read",
             attachments=["http://127.0.0.1:9/chart.png"])


def test_an_image_too_large_for_anthropic_fails_before_sending(replay: ReplayServer) -> None:
    big = ImagePart("image/png", b"\x89PNG\r\n\x1a\n" + bytes(6 * 2**20), label="huge.png")
    message = _refused(replay, "anthropic", "claude-haiku-4-5", errors.InvalidRequestError,
                       "up to 5 MB", attachments=[big])
    assert "huge.png" in message


@pytest.mark.parametrize(("provider", "model", "attachment", "what"), [
    ("openai", "gpt-3.5-turbo", "png", "images"),
    ("anthropic", "claude-haiku-4-5", "wav", "audio"),
    ("openai", "gpt-4o-audio-preview", "pdf", "PDF documents"),
    ("ollama", "llama3.2", "png", "images"),
    ("deepseek", "deepseek-chat", "png", "images"),
])  # fmt: skip
def test_a_model_without_the_modality_fails_before_sending(
    replay: ReplayServer, provider: str, model: str, attachment: str, what: str
) -> None:
    data = {"png": a_png, "wav": a_wav, "pdf": a_pdf}[attachment]()
    message = _refused(replay, provider, model, errors.UnsupportedError,
                       f"cannot read {what}", attachments=[data])
    assert "register_modalities" in message


def test_the_in_process_model_reads_text_only() -> None:
    client = Client(log=False)
    with pytest.raises(errors.UnsupportedError, match="local:smollm2 cannot read images"):
        client.complete("look", "local:smollm2", context=[a_figure()])


def test_register_modalities_lets_a_local_vision_model_see(replay: ReplayServer) -> None:
    replay.enqueue(load_fixture(GROQ_IMAGE))
    register_modalities("ollama:my-vlm", image=True)
    client = client_for(replay, "ollama")
    client.complete("look", "ollama:my-vlm", attachments=[a_png()])
    assert replay.requests[0].json()["messages"][0]["content"][0]["type"] == "image_url"
    with pytest.raises(errors.UnsupportedError):  # another model there still cannot
        client.complete("look", "ollama:llama3.2", attachments=[a_png()])


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(errors.InvalidRequestError, match="cannot send application/zip"):
        attachment_parts([b"PK\x03\x04" + bytes(30)])
    with pytest.raises(errors.InvalidRequestError, match="cannot attach a int"):
        attachment_parts([3])


# -- detection -------------------------------------------------------------------------------


def test_types_come_from_the_bytes_first_then_the_name() -> None:
    assert sniff(a_png(), "chart.jpg") == "image/png"
    assert sniff(a_pdf()) == "application/pdf"
    assert sniff(a_wav()) == "audio/wav"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff(b"a,b\n1,2\n", "t.csv") == "text/csv"
    assert sniff(b"plain words") == "text/plain"
    assert sniff(bytes(range(256))) == "application/octet-stream"


def test_the_call_log_keeps_the_question_not_the_bytes(tmp_path: Path) -> None:
    import sqlite3

    import notebook_llm as nl

    db = tmp_path / "log.db"
    client = Client(db_path=db)
    _clients.append(client)
    png, pdf, wav = a_png(), a_pdf(), a_wav()
    client.complete("Q", model="offline:echo", attachments=[png, pdf, wav])
    assert len(nl.usage(db_path=db)) == 1  # waits for the writer
    with sqlite3.connect(db) as connection:
        (logged,) = connection.execute("select messages_json from calls").fetchone()
    image, document, audio, text = json.loads(logged)[0]["content"]
    assert image["image_url"]["url"] == f"data:image/png;base64,[{len(png):,} bytes not logged]"
    assert document["file"] == {"filename": "attachment.pdf", "file_data":
                                f"data:application/pdf;base64,[{len(pdf):,} bytes not logged]"}
    assert audio["input_audio"] == {"data": f"[{len(wav):,} bytes not logged]", "format": "wav"}
    assert text == {"type": "text", "text": "Q"}
    assert len(logged) < 1000


def test_images_and_pdfs_are_estimated_as_the_model_counts_them() -> None:
    from notebook_llm.core.parts import attach_parts
    from notebook_llm.core.tokens import estimate_prompt_tokens, image_tokens
    from notebook_llm.core.types import DocumentPart, Request

    png = a_png()
    width, height = png_size(png)
    image = ImagePart("image/png", png)
    pdf = DocumentPart("application/pdf", a_pdf())

    def tokens(*parts: Any) -> int:
        messages = attach_parts([{"role": "user", "content": "Q"}], list(parts))
        return estimate_prompt_tokens(Request(model="m", messages=messages))

    # Not the base64 text (a third more than the bytes, four characters a token).
    assert tokens(image) == image_tokens(width, height) + 1
    assert tokens(pdf) == 2000 + 1  # one page
    assert image_tokens(3136, 2090) == image_tokens(1568, 1045) == 2184  # scaled down first


def test_a_jpeg_is_estimated_from_its_frame_size() -> None:
    from notebook_llm.core.parts import attach_parts
    from notebook_llm.core.tokens import estimate_prompt_tokens, image_tokens
    from notebook_llm.core.types import Request

    buffer = io.BytesIO()
    a_figure(4, 2).savefig(buffer, format="jpeg", dpi=100)  # 400 x 200 pixels
    jpeg = ImagePart("image/jpeg", buffer.getvalue())
    messages = attach_parts([{"role": "user", "content": ""}], [jpeg])
    assert estimate_prompt_tokens(Request(model="m", messages=messages)) == image_tokens(400, 200)
