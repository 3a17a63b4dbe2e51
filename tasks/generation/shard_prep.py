"""Cleaning that needs only its own shard, done as soon as the shard lands, in worker processes.

Each row's validation verdict, exact-dedup digest, near-dedup signature and benchmark
matches depend on that row alone, so they are computed per generation shard while the
teacher is still answering later shards (validation first: rows that fail their own tests
go to the shard's audit and are neither signed nor matched); only the decisions that need every row (which copy is first, which rows form
a cluster) wait (exact dedup in seed order as shards land, near-dedup clusters at the end).
The results travel as extra columns of the shard's rows (PAIR_DIGEST, MINHASH,
CONTAMINATION), which the later steps read instead of recomputing, and which publishing
leaves out.

The workers are separate processes (prep_worker.py): the event loop that holds thousands
of in-flight teacher requests never runs this CPU work. A prepared shard records what it
was made from (the pairs file's checksum and the settings' fingerprint), so a resumed run
redoes only shards whose inputs changed.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pydantic import BaseModel

from tasks.decontamination.decontaminate import DecontaminationConfig
from tasks.dedup.near import NearDedupConfig
from tasks.generation import prep_worker
from tasks.validation.validate import ValidationConfig


class PrepSettings(BaseModel):
    """What the per-shard work does: validation in the sandbox, near-dedup signatures and
    benchmark matches (each None when that stage is off); exact-dedup digests always."""

    validation: ValidationConfig | None = None
    near_dedup: NearDedupConfig | None = None
    decontamination: DecontaminationConfig | None = None

    def fingerprint(self) -> str:
        return json.dumps({
            "validation": self.validation.content_fingerprint() if self.validation else None,
            "near_dedup": self.near_dedup.content_fingerprint() if self.near_dedup else None,
            "decontamination": self.decontamination.content_fingerprint() if self.decontamination else None,
        }, sort_keys=True)


def default_workers() -> int:
    """One core stays with the teacher client's event loop; at most two for cleaning
    (each worker holds its own benchmark index)."""
    return max(1, min(2, (os.cpu_count() or 1) - 1))


def prep_pool(settings: PrepSettings, workers: int | None = None) -> ProcessPoolExecutor:
    """Worker processes for prep_worker.prepare_shard, started now so the benchmark index is
    built while the first shards are with the teacher."""
    # "spawn": the flow process runs threads (Prefect, the reply cache); forking them is unsafe.
    pool = ProcessPoolExecutor(
        workers or default_workers(), mp_context=mp.get_context("spawn"),
        initializer=prep_worker.init, initargs=(settings.model_dump_json(),),
    )
    pool.submit(int)  # start the workers (the pool only spawns on the first task)
    return pool


def prepared_path(work_dir: Path, shard: str) -> Path:
    return work_dir / "prepared" / f"{shard}.parquet"
