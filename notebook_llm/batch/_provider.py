"""Provider batch APIs (placeholder while direct mode is tested)."""
from __future__ import annotations
from typing import Any
__all__ = ["resume_provider_batch", "run_provider"]
async def run_provider(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError
def resume_provider_batch(job_id: str) -> Any:
    raise NotImplementedError
