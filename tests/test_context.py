"""Cards: what a model is told about DataFrames, Series, containers and other objects.

Real pandas and NumPy objects (and scikit-learn's wine data); every card is
checked against its token budget with the library's one estimate.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

import notebook_llm as nl
from notebook_llm import errors
from notebook_llm._context import card, card_text, context_parts
from notebook_llm.core.tokens import estimate_tokens
from notebook_llm.core.types import ImagePart, TextPart
from notebook_llm.notebook._interpolate import interpolate


def wide_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(size=(50, 600)), columns=[f"feature_{i}" for i in range(600)])


def long_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 200_000
    return pd.DataFrame({
        "user": rng.integers(0, 5000, n),
        "plan": rng.choice(["free", "pro", "team"], n, p=[0.90, 0.09, 0.01]),
        "spend": rng.gamma(2.0, 10.0, n),
    })  # fmt: skip


def mixed_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "name": ["Ada", "Grace", None, "Linus " * 30, "Guido"],
        "joined": pd.to_datetime(["2020-01-01", "2021-06-30", None, "2019-03-15", "2022-12-01"]),
        "score": [1.5, float("nan"), 3.25, 4.0, 5.0],
        "active": [True, False, True, None, True],
        "level": pd.Categorical(["a", "b", "a", "c", "b"]),
        "tags": [["x"], [], ["y", "z"], None, {"k": 1}],
        "when": [dt.date(2020, 1, 1)] * 5,
    })  # fmt: skip


@pytest.mark.parametrize("budget", [100, 300, 1000, 4000])
@pytest.mark.parametrize("make", [wide_frame, long_frame, mixed_frame])
def test_every_card_keeps_to_its_budget(make: Any, budget: int) -> None:
    text = card_text(make(), "df", budget)
    assert estimate_tokens(text) <= budget
    assert text.startswith("df: pandas DataFrame,")


def test_a_wide_frame_says_how_many_columns_it_left_out() -> None:
    text = card_text(wide_frame(), "wide", 800)
    assert "50 rows x 600 columns" in text
    assert "more columns not shown" in text
    assert re.search(r"\nfeature_0 +float64 +0 ", text)


def test_a_long_frame_shows_head_and_a_sample_from_every_class() -> None:
    frame = long_frame()
    text = card_text(frame, "events", 2000)
    assert "200,000 rows x 3 columns" in text
    assert "columns (dtype, nulls, describe()):" in text
    rows = text.split("rows (first 5, then 3 sampled across 'plan'):\n", 1)[1].splitlines()
    assert len(rows) == 1 + 5 + 3
    # The rare class (1% of rows) is in the sample, as are the others.
    assert {line.split()[2] for line in rows[6:]} == {"free", "pro", "team"}
    # pandas' repr of the same frame would hide rows behind "..." with no summary.
    assert "..." not in text


def test_a_mixed_frame_has_dtypes_nulls_and_cut_cells() -> None:
    text = card_text(mixed_frame(), "people", 1500)
    for pattern in (r"\nname +(str|object|string) +1 +4 +Ada", r"\njoined +datetime64\S* +1 ",
                    r"\nscore +float64 +1 +3\.438 +1\.477 +1\.5", r"\nactive +object +1 +2 +True",
                    r"\nlevel +category +0 +3 +a", r"\ntags +object +1 "):
        assert re.search(pattern, text), pattern
    assert "Linus Linus" in text and ("Linus " * 30) not in text  # a long cell is cut
    assert estimate_tokens(text) <= 1500


def test_a_tiny_budget_still_names_the_object() -> None:
    text = card_text(wide_frame(), "wide", 10)  # raised to the smallest card
    assert text.startswith("wide: pandas DataFrame, 50 rows x 600 columns")
    assert estimate_tokens(text) <= 60


def test_the_wine_data_card() -> None:
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame
    text = card_text(wine, "wine", 1200)
    assert "178 rows x 14 columns" in text and "sampled across 'target'" in text
    assert estimate_tokens(text) <= 1200


def test_series_dict_list_array_and_other_objects_get_bounded_summaries() -> None:
    series = pd.Series(np.arange(10_000.0), name="x")
    series[::7] = np.nan
    text = card_text(series, "s", 300)
    assert "pandas Series 'x', 10,000 values, dtype float64, 1429 null" in text
    assert estimate_tokens(text) <= 300

    config = {f"key{i}": list(range(i)) for i in range(500)}
    text = card_text(config, "config", 200)
    assert text.startswith("config: dict with 500 keys") and "more keys" in text
    assert estimate_tokens(text) <= 200

    items = [1, "two", 3.0] * 1000
    text = card_text(items, "items", 150)
    assert text.startswith("items: list of 3,000 items (1,000 int, 1,000 str, 1,000 float)")
    assert estimate_tokens(text) <= 150

    array = np.arange(1_000_000, dtype=np.float32).reshape(1000, 1000)
    text = card_text(array, "grid", 200)
    assert "shape (1000, 1000), dtype float32" in text and "min 0, max 1e+06" in text
    assert estimate_tokens(text) <= 200

    class Thing:
        def __repr__(self) -> str:
            return "Thing(" + "x" * 10_000 + ")"

    text = card_text(Thing(), "thing", 100)
    assert text.startswith("thing: Thing\nThing(xxx") and "cut to fit 100 tokens" in text


def test_cards_share_the_context_budget_and_figures_are_pngs() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    axes.bar(["a", "b"], [1, 2])
    plt.close(figure)
    parts = context_parts({"wide": wide_frame(), "long": long_frame(), "ax": axes},
                          max_tokens=900)
    wide, long, image = parts
    assert isinstance(wide, TextPart) and isinstance(long, TextPart)
    assert estimate_tokens(wide.text) + estimate_tokens(long.text) <= 900
    assert isinstance(image, ImagePart) and image.data is not None
    assert image.data.startswith(b"\x89PNG") and image.label == "ax"
    assert card(image) is image  # a part passes through


def test_a_bad_budget_is_refused() -> None:
    with pytest.raises(errors.InvalidRequestError, match="context_tokens must be positive"):
        context_parts([1], max_tokens=0)


def test_complete_sends_the_card_and_the_prompt() -> None:
    frame = mixed_frame()
    answer = nl.complete("Which column has most nulls?", model="offline:echo",
                         context={"people": frame}, context_tokens=500, log=False)
    assert answer.text.startswith("people: pandas DataFrame, 5 rows x 7 columns")
    assert answer.text.endswith("Which column has most nulls?")
    sent = answer.messages[-1]["content"]
    assert [p["type"] for p in sent] == ["text", "text"]


async def test_the_async_and_stream_twins_send_the_same_message() -> None:
    frame = mixed_frame()
    kwargs: dict[str, Any] = {"model": "offline:echo", "context": [frame], "log": False,
                              "attachments": [b"a note", b"\x89PNG\r\n\x1a\n" + bytes(16)],
                              "context_tokens": 300}
    sync = nl.complete("Q?", **kwargs)
    asynchronous = await nl.acomplete("Q?", **kwargs)
    streamed = nl.stream("Q?", **kwargs).collect()
    astreamed = await nl.astream("Q?", **kwargs).collect()
    assert sync.text.startswith("context: pandas DataFrame")
    assert sync.text.endswith("--- attachment.txt ---\na note [image] Q?")
    for other in (asynchronous, streamed, astreamed):
        assert other.text == sync.text


def test_braces_use_the_card_and_bang_r_keeps_the_repr() -> None:
    frame = pd.DataFrame({"n": range(200), "label": ["even", "odd"] * 100})
    filled = interpolate("Data:\n{frame}", {"frame": frame})
    assert filled.startswith("Data:\nframe: pandas DataFrame, 200 rows x 2 columns")
    assert "sampled across 'label'" in filled
    assert interpolate("{frame!r}", {"frame": frame}) == repr(frame)
    assert "[200 rows x 2 columns]" in interpolate("{frame!r}", {"frame": frame})
    # Other values, and format specs, are formatted as before.
    assert interpolate("{x:.2f} {items}", {"x": 3.14159, "items": [1, 2]}) == "3.14 [1, 2]"
    assert interpolate("{frame.shape}", {"frame": frame}) == "(200, 2)"
    assert estimate_tokens(interpolate("{frame}", {"frame": frame}, card_tokens=120)) <= 120


def test_polars_frames_and_series_get_cards() -> None:
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({"a": [1, 2, None, *range(4, 21)], "b": list("xyz" * 6 + "xy"),
                          "c": [i + 0.5 for i in range(20)]})
    text = card_text(frame, "pf", 500)
    assert text.startswith("pf: polars DataFrame, 20 rows x 3 columns")
    assert re.search(r"\na +\S+ +1 ", text)  # one null in a
    assert "sampled across 'b'" in text and estimate_tokens(text) <= 500
    assert card_text(frame.lazy(), "lazy", 500).startswith("lazy: polars DataFrame")
    series = card_text(frame.get_column("c"), "col", 200)
    assert series.startswith("col: polars Series 'c', 20 values")
