"""What a generation shard needs when it runs as its own flow run on another worker.

The refresh flow (flows/refresh.py) launches shards through the shard deployment
(flows/shard_worker.py) with a `ShardJob` as its parameter; both import it from here,
so neither flow module imports the other at load time. Workers share the dataset's
filesystem: the seed file, the staged pairs and the reply cache are paths on it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from tasks.teacher.session import TeacherConfig


class GlobalRateLimit(BaseModel):
    """A Prefect global concurrency limit with slot decay, shared by every worker process.

    Each process takes `batch` permits per call (one API call per batch, never per
    request); `requests_per_minute` becomes the limit and its decay rate.
    """

    name: str = Field("ossforge-teacher-rpm", description="global concurrency limit name")
    requests_per_minute: int = Field(ge=1, description="the provider's RPM, shared by all workers")
    batch: int = Field(50, ge=1, description="permits taken per Prefect call")

    def batch_size(self) -> int:
        # A batch larger than the limit could never be granted.
        return min(self.batch, self.requests_per_minute)


class ShardJob(BaseModel):
    seeds_path: str
    seeds_sha256: str
    teacher: TeacherConfig
    work_dir: str = Field(description="the refresh's .work directory: pairs/, failures/, results/, summaries/")
    cache_path: str = Field(description="the shared teacher reply cache (SQLite, WAL: safe across processes)")
    rate_limit: GlobalRateLimit | None = None
    ledger_path: str | None = Field(None, description="the run's spend ledger (one budget for every worker)")


def summary_path(work_dir: str, shard: str) -> str:
    """Where a shard flow run leaves its summary for the parent to read."""
    return f"{work_dir.rstrip('/')}/summaries/{shard}.json"
