"""Batch jobs: one prompt per row of a list or DataFrame, through one or more models.

``batch(df, model, template="Classify: {review}")`` runs the rows with a fixed
pool of workers, rate limits and retries, shows progress, checkpoints every
finished row to SQLite and resumes where it stopped when called again.
``mode="provider"`` sends the rows through the OpenAI or Anthropic batch API
instead (half price, results within 24 hours).
"""

from notebook_llm.batches._provider import resume_provider_batch
from notebook_llm.batches._result import BatchEstimate, BatchResult
from notebook_llm.batches._run import abatch, batch, batch_jobs, estimate

__all__ = [
    "BatchEstimate",
    "BatchResult",
    "abatch",
    "batch",
    "batch_jobs",
    "estimate",
    "resume_provider_batch",
]
