"""One generation shard as its own flow run: the unit a multi-worker refresh spreads out.

Deployed on the CPU pool (prefect.yaml: `generate-shard/cpu`). A refresh with
`shard_deployment` set launches one run of it per seed shard with `run_deployment`; any
worker of the pool picks it up. The shard runs through the same cached `generate-shard`
task as in-process refreshes, so a finished shard is never paid for twice, and every
process takes its teacher permits from one Prefect global rate limit, a batch at a time,
and reserves its spend in the run's ledger (tasks/teacher/ledger.py): one budget per run.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_run

from tasks.generation.shard_job import ShardJob, summary_path
from tasks.generation.step import cached_shard_task
from tasks.core.parquet_io import write_json_atomic
from tasks.teacher.session import TeacherSession
from tasks.teacher.limits import prefect_rate_limit_permits


def worker_name() -> str:
    # Set by Prefect workers in the environment of the runs they start.
    return os.environ.get("PREFECT__WORKER_NAME") or f"{socket.gethostname()}:{os.getppid()}"


@flow(name="generate-shard", log_prints=True)
async def generate_shard_flow(job: ShardJob) -> dict:
    logger = get_run_logger()
    work_dir = Path(job.work_dir)
    name = Path(job.seeds_path).stem
    limit = job.rate_limit
    permits = prefect_rate_limit_permits(limit.name, limit.batch_size()) if limit is not None else None
    # The run's ledger makes the budget the run's, however many workers take its shards.
    async with TeacherSession(job.teacher, cache_path=job.cache_path, permits=permits, ledger_path=job.ledger_path) as session:
        shard_task = cached_shard_task(work_dir, job.seeds_path)
        summary = await shard_task(job.seeds_path, job.seeds_sha256, job.teacher, job.work_dir, session=session)
    summary = {**summary, "worker": worker_name(), "flow_run_id": str(current_run.get_id())}
    write_json_atomic(summary, Path(summary_path(job.work_dir, name)))
    logger.info("%s done on %s", name, summary["worker"])
    return summary
