"""Embeddings: batching, cache, DataFrame alignment, search, plots and collections.

The ``llama`` tests run against a real llama.cpp server (llama-cpp-python)
serving all-MiniLM-L6-v2 behind a small counting proxy, so they can assert how
many requests and inputs reached the server. The rest use ``offline:hash``.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import notebook_llm as nl
from notebook_llm.core.loop import run as run_on_loop
from notebook_llm.embeddings import (
    Embeddings,
    aembed,
    collection,
    collections,
    delete_collection,
    embed,
    top_k,
)
from notebook_llm.store.db import Store
from tests.support.llama_server import (
    MODELS_DIR,
    llama_server_unavailable,
    start_llama_server,
    stop_llama_server,
)

MODEL_FILE = MODELS_DIR / "all-MiniLM-L6-v2-Q8_0.gguf"
LLAMA = "llamacpp:all-minilm-l6-v2"


# -- a real llama.cpp server behind a counting proxy ----------------------------


class CountingProxy:
    """Forwards HTTP to ``upstream`` and counts POST /v1/embeddings and their inputs."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.requests: list[int] = []
        """The number of inputs in each embeddings request, in arrival order."""
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "POST" and self.path.rstrip("/").endswith("/embeddings"):
                    inputs = json.loads(body or b"{}").get("input")
                    with proxy._lock:
                        proxy.requests.append(len(inputs) if isinstance(inputs, list) else 1)
                conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
                try:
                    headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                kind = answer.getheader("Content-Type") or "application/json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    @property
    def inputs(self) -> int:
        """Texts that reached the server since the last reset."""
        return sum(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def llama() -> Iterator[CountingProxy]:
    reason = llama_server_unavailable(MODEL_FILE)
    if reason:
        pytest.skip(reason)
    process, base_url = start_llama_server(MODEL_FILE, "all-minilm-l6-v2", embedding=True)
    proxy = CountingProxy(base_url.removesuffix("/v1"))
    try:
        yield proxy
    finally:
        proxy.close()
        stop_llama_server(process)


@pytest.fixture
def proxy(llama: CountingProxy) -> CountingProxy:
    llama.reset()
    return llama


@pytest.fixture(scope="module")
def client(llama: CountingProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[nl.Client]:
    opened = nl.Client(api_bases={"llamacpp": llama.url + "/v1"}, log=False,
                       db_path=tmp_path_factory.mktemp("client") / "client.db")
    yield opened
    run_on_loop(opened.aclose())  # its aiohttp session lives on the library's loop


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "embeddings.db") as opened:
        yield opened


# -- llama.cpp: real MiniLM vectors ---------------------------------------------------


@pytest.mark.llama
def test_embed_llamacpp_similar_sentences_score_higher(client: nl.Client, store: Store) -> None:
    texts = [
        "A man is playing a guitar.",
        "Someone is strumming an acoustic guitar.",
        "The central bank raised interest rates again.",
    ]
    emb = nl.embed(texts, LLAMA, client=client, db_path=store)
    assert emb.vectors.shape == (3, 384)
    assert emb.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    sim = emb.similarity().to_numpy()
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert sim[0, 1] > sim[1, 2] + 0.2
    assert emb.model == LLAMA
    assert emb.cost_status == "free"
    assert emb.usage.input_tokens > 0


@pytest.mark.llama
def test_embed_llamacpp_keeps_a_non_default_index(client: nl.Client, store: Store) -> None:
    df = pd.DataFrame(
        {"body": ["Cats purr when they are happy.", "The train leaves at nine.",
                  "Kittens like to sleep in the sun."]},
        index=[30, 10, 20],
    )
    emb = nl.embed(df["body"], LLAMA, client=client, db_path=store)
    frame = emb.to_pandas()
    assert list(frame.index) == [30, 10, 20]
    assert frame.loc[10, "text"] == "The train leaves at nine."
    np.testing.assert_array_equal(frame.loc[20, "embedding"], emb.vectors[2])
    wide = emb.to_pandas(wide=True, text=False)
    assert list(wide.columns[:2]) == ["e0", "e1"] and wide.shape == (3, 384)
    joined = df.join(wide)
    np.testing.assert_allclose(joined.loc[30, "e0"], emb.vectors[0, 0])

    labelled = nl.embed(pd.Series(df["body"].tolist(), index=["a", "b", "c"]), LLAMA,
                        client=client, db_path=store)
    sim = labelled.similarity()
    assert list(sim.index) == ["a", "b", "c"] and list(sim.columns) == ["a", "b", "c"]
    hits = labelled.search("a sleepy young cat", k=2)
    assert list(hits.index) == ["c", "a"]
    assert list(hits.columns) == ["text", "score"]
    assert hits["score"].is_monotonic_decreasing
    nearest = labelled.nearest("a", k=1)
    assert list(nearest.index) == ["c"]


@pytest.mark.llama
def test_embed_cache_skips_unchanged_texts(
    client: nl.Client, store: Store, proxy: CountingProxy
) -> None:
    texts = ["alpha beta", "gamma delta", "epsilon zeta"]
    first = nl.embed(texts, LLAMA, client=client, db_path=store)
    assert proxy.requests == [3] and first.cached == 0 and first.requests == 1

    proxy.reset()
    second = nl.embed([*texts, "eta theta"], LLAMA, client=client, db_path=store)
    assert proxy.requests == [1], "only the new text is sent"
    assert second.cached == 3
    np.testing.assert_allclose(second.vectors[:3], first.vectors, atol=1e-6)

    proxy.reset()
    third = nl.embed(texts[::-1], LLAMA, client=client, db_path=store)
    assert proxy.requests == []
    np.testing.assert_allclose(third.vectors, first.vectors[::-1], atol=1e-6)

    proxy.reset()
    nl.embed(texts, LLAMA, client=client, db_path=store, cache=False)
    assert proxy.requests == [3]

    rows = store.execute("SELECT vector FROM embedding_cache WHERE model = ?", (LLAMA,))
    assert len(rows) == 4
    stored = np.frombuffer(rows[0]["vector"], dtype="<f4")  # type: ignore[arg-type]
    assert stored.shape == (384,)
    assert abs(float(np.linalg.norm(stored)) - 1.0) < 1e-5, "stored normalised"


@pytest.mark.llama
def test_embed_llamacpp_batches_concurrently_in_input_order(
    client: nl.Client, store: Store, proxy: CountingProxy
) -> None:
    texts = [f"sentence number {i} about {topic}" for i, topic in
             enumerate(["dogs", "taxes", "rain", "chess", "bread"])]
    batched = nl.embed([*texts, texts[0]], LLAMA, client=client, db_path=store,
                       batch_size=2, concurrency=3, cache=False)
    assert sorted(proxy.requests) == [1, 2, 2], "duplicates are sent once"
    proxy.reset()
    one_by_one = np.vstack([
        nl.embed([text], LLAMA, client=client, db_path=store, cache=False).vectors
        for text in texts
    ])
    np.testing.assert_allclose(batched.vectors[:5], one_by_one, atol=1e-4)
    np.testing.assert_array_equal(batched.vectors[5], batched.vectors[0])


@pytest.mark.llama
def test_collection_llamacpp_add_update_search_round_trip(
    client: nl.Client, store: Store, proxy: CountingProxy
) -> None:
    docs = pd.DataFrame({
        "doc_id": ["d1", "d2", "d3", "d4"],
        "body": ["How to bake sourdough bread at home.",
                 "The football match ended in a draw.",
                 "Tips for repotting houseplants.",
                 "Quarterly earnings beat analyst expectations."],
        "topic": ["food", "sport", "garden", "finance"],
    })
    notes = collection("notes", LLAMA, client=client, db_path=store)
    assert notes.add(docs, metadata=["topic"]) == {
        "added": 4, "updated": 0, "metadata_updated": 0, "unchanged": 0}
    assert proxy.inputs == 4
    assert len(notes) == 4

    hits = notes.search("baking a loaf of bread", k=2)
    assert list(hits.columns) == ["id", "text", "score", "topic"]
    assert hits.iloc[0]["id"] == "d1" and hits.iloc[0]["topic"] == "food"

    proxy.reset()
    changed = docs.copy()
    changed.loc[2, "body"] = "A recipe for slow-cooked beef stew."
    assert notes.add(changed, metadata=["topic"])["updated"] == 1
    assert proxy.requests == [1], "only the changed row is embedded again"
    assert len(notes) == 4
    hits = notes.search("stew recipe", k=1)
    assert hits.iloc[0]["id"] == "d3" and hits.iloc[0]["text"].startswith("A recipe")

    proxy.reset()
    changed.loc[0, "topic"] = "baking"
    assert notes.add(changed, metadata=["topic"])["metadata_updated"] == 1
    assert proxy.requests == []
    filtered = notes.search("bread", k=3, where={"topic": ["baking", "finance"]})
    assert list(filtered["id"]) == ["d1", "d4"]
    assert list(filtered["topic"]) == ["baking", "finance"]

    assert notes.delete(["d2"]) == 1
    assert "d2" not in set(notes.to_pandas()["id"])
    assert collections(db_path=store).set_index("name").loc["notes", "items"] == 3


# -- offline:hash: everything that needs no server ----------------------------------------


@pytest.fixture
def mem() -> Iterator[Store]:
    with Store(":memory:") as opened:
        yield opened


@pytest.fixture
def animals(mem: Store) -> Embeddings:
    texts = ["the cat sat on the mat", "a cat is sitting on a mat",
             "stock markets fell sharply", "bond markets fell sharply today"]
    return embed(pd.Series(texts, index=["c1", "c2", "m1", "m2"]), "offline:hash", db_path=mem)


def test_embed_offline_similarity_is_labelled_and_cosine(animals: Embeddings, mem: Store) -> None:
    sim = animals.similarity()
    assert list(sim.index) == ["c1", "c2", "m1", "m2"]
    np.testing.assert_allclose(np.diag(sim.to_numpy()), 1.0, atol=1e-5)
    assert sim.loc["c1", "c2"] > sim.loc["c1", "m1"]
    by_text = embed(["a long sentence that goes on and on and on for a while", "short"],
                    "offline:hash", db_path=mem).similarity()
    assert by_text.index[0].endswith("…") and len(by_text.index[0]) == 30
    assert by_text.columns[1] == "short"


def test_embed_offline_search_and_nearest(animals: Embeddings) -> None:
    hits = animals.search("markets fell", k=2)
    assert set(hits.index) == {"m1", "m2"}
    assert (hits["score"].diff().dropna() <= 0).all()
    near = animals.nearest("c1", k=3)
    assert "c1" not in near.index and near.index[0] == "c2"
    by_vector = animals.nearest(animals.vectors[2], k=1)
    assert list(by_vector.index) == ["m1"]


def test_embed_offline_accepts_lists_dataframes_and_one_string(mem: Store) -> None:
    plain = embed(["a", "b"], "offline:hash", db_path=mem)
    assert list(plain.index) == [0, 1] and len(plain) == 2
    frame = embed(pd.DataFrame({"t": ["x", "y"]}, index=[5, 6]), "offline:hash", db_path=mem)
    assert list(frame.index) == [5, 6]
    single = embed("just one", "offline:hash", db_path=mem)
    assert single.vectors.shape == (1, 256)
    with pytest.raises(ValueError, match="one column"):
        embed(pd.DataFrame({"a": ["x"], "b": ["y"]}), "offline:hash", db_path=mem)
    with pytest.raises(TypeError, match="not a string"):
        embed(pd.Series(["ok", None]), "offline:hash", db_path=mem)
    empty = embed([], "offline:hash", db_path=mem)
    assert empty.vectors.shape == (0, 0) and len(empty) == 0


def test_embed_offline_getitem_and_len(animals: Embeddings) -> None:
    assert len(animals) == 4
    assert animals[1].shape == (256,)
    subset = animals[[0, 2]]
    assert isinstance(subset, Embeddings) and list(subset.index) == ["c1", "m1"]
    assert list(animals[1:3].texts) == animals.texts[1:3]


def test_embed_offline_repr_html_is_escaped(mem: Store) -> None:
    emb = embed(["<script>alert(1)</script>", "fine"], "offline:hash", db_path=mem)
    page = emb._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "2 texts × 256 dims" in page and "offline:hash" in page
    assert "Embeddings 2 texts" in repr(emb)


def test_embed_offline_progress_callback_and_batching(mem: Store) -> None:
    seen: list[tuple[int, int]] = []
    texts = [f"text {i}" for i in range(10)]
    emb = embed(texts, "offline:hash", db_path=mem, batch_size=3,
                progress=lambda done, total: seen.append((done, total)))
    assert emb.requests == 4
    assert sorted(seen)[-1] == (10, 10)
    again = embed(texts, "offline:hash", db_path=mem, batch_size=3)
    assert again.requests == 0 and again.cached == 10


async def test_aembed_offline_runs_on_the_callers_loop(mem: Store) -> None:
    emb = await aembed(["one", "two"], "offline:hash", db_path=mem)
    hits = await emb.asearch("one", k=1)
    assert hits.iloc[0]["text"] == "one"


def test_embed_options_are_part_of_the_cache_key(mem: Store) -> None:
    small = embed(["hello"], "offline:hash", db_path=mem, dimensions=16)
    large = embed(["hello"], "offline:hash", db_path=mem)
    assert small.dims == 16 and large.dims == 256 and large.cached == 0


def test_plot_and_heatmap_return_axes_with_agg(animals: Embeddings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        ax = animals.plot(color_by=pd.Series(["cat", "cat", "money", "money"],
                                             index=["c1", "c2", "m1", "m2"], name="topic"))
        assert ax.get_legend() is not None
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cat", "money"]
        assert len(ax.texts) == 4, "small maps are annotated"
        heat = animals.heatmap()
        assert [t.get_text() for t in heat.get_yticklabels()] == ["c1", "c2", "m1", "m2"]
        coords = animals.project("pca")
        assert coords.shape == (4, 2)
        with pytest.raises(ValueError, match="method"):
            animals.project("nope")  # type: ignore[arg-type]
    finally:
        plt.close("all")


def test_cluster_without_sklearn_says_what_to_install(
    animals: Embeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        animals.cluster(2)


def test_top_k_orders_best_first_and_skips_filtered_rows() -> None:
    scores = np.array([0.1, 0.9, -np.inf, 0.5, 0.7], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [1, 4, 3]
    assert top_k(scores, 10).tolist() == [1, 4, 3, 0]
    assert top_k(scores, 0).tolist() == []


def test_collection_offline_lifecycle(mem: Store) -> None:
    docs = collection("docs", "offline:hash", db_path=mem)
    counts = docs.add(["red apples", "green apples", "blue whales"])
    assert counts["added"] == 3 and len(docs) == 3
    assert docs.add(["red apples"])["unchanged"] == 1, "list ids are text hashes"
    first = docs.search("apples", k=2)
    assert set(first["text"]) == {"red apples", "green apples"}

    docs.add(pd.Series(["yellow apples"], index=["y"]))
    assert "yellow apples" in set(docs.search("apples", k=5)["text"]), "cache invalidated"
    assert docs.delete("y") == 1
    assert "yellow apples" not in set(docs.search("apples", k=5)["text"])

    assert docs.search(docs.embeddings().vectors[0], k=1)["score"].iloc[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="uses offline:hash"):
        collection("docs", "llamacpp:other", db_path=mem)
    assert list(collections(db_path=mem)["name"]) == ["docs"]
    assert delete_collection("docs", db_path=mem) is True
    assert collections(db_path=mem).empty


def test_collection_offline_where_and_metadata(mem: Store) -> None:
    frame = pd.DataFrame({
        "doc_id": [1, 2, 3],
        "body": ["python pandas tips", "python numpy tricks", "gardening in spring"],
        "lang": ["en", "de", "en"],
        "year": [2023, 2024, 2024],
    })
    docs = collection("meta", "offline:hash", db_path=mem)
    docs.add(frame, metadata=["lang", "year"])
    hits = docs.search("python", k=3, where={"lang": "en"})
    assert list(hits["id"]) == ["1", "3"]
    assert list(hits.columns) == ["id", "text", "score", "lang", "year"]
    recent = docs.search("python", k=3, where=lambda meta: meta["year"] >= 2024)
    assert set(recent["id"]) == {"2", "3"}
    assert docs.to_pandas(vectors=True)["embedding"].iloc[0].shape == (256,)
    with pytest.raises(ValueError, match="duplicate ids"):
        docs.add(pd.concat([frame, frame]))


def test_import_notebook_llm_does_not_import_numpy() -> None:
    code = (
        "import sys, notebook_llm as nl; nl.embed; nl.aembed; "
        "import notebook_llm.embeddings; "
        "print('numpy' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.split() == ["False", "False"]
