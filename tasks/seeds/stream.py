"""Seeds staged as shard files by a child process, announced one file at a time.

Sampling is CPU work (reading and cutting documents, ~10 s for 75,000 seeds): in a child
process it neither delays the first teacher request nor competes with the event loop that
holds the requests in flight. Generation starts on the first shard file while sampling
goes on; the child's counts arrive with its last message.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue as queue_module
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

from tasks.core.errors import UserError
from tasks.core.parquet_io import rebatch, write_parquet_atomic
from tasks.core.stats import StageStats, timed
from tasks.core.step import AccountingError, run_step
from tasks.seeds.exclusion import SeedExcluder
from tasks.seeds.sampling import SeedConfig, sample_seeds


def chained(first: StageStats, then: StageStats) -> StageStats:
    """One stage's counts from two steps in a row: the first's input, the second's output,
    both steps' drops. The second must have received exactly what the first passed on."""
    if first.rows_out != then.rows_in:
        raise AccountingError(f"{first.name}: {first.rows_out} rows passed on, {then.rows_in} received")
    return StageStats(
        first.name, rows_in=first.rows_in, rows_out=then.rows_out, dropped=first.dropped + then.dropped,
        seconds=first.seconds + then.seconds, extra=first.extra,
    )


def stage_seed_shards(cfg: SeedConfig, seeds_dir: Path, per_file: int, exclude_digests: list[str] | None, announce) -> dict:
    """Sample seeds into seeds_dir/shard-NNNNN.parquet, `per_file` seeds each, calling
    `announce(path)` as each file lands. Seeds consumed by earlier versions (their digest
    files in `exclude_digests`) are dropped with a reason. Returns the seeds stage's counts."""
    for stale in seeds_dir.glob("shard-*.parquet"):
        stale.unlink()
    batches, stats = sample_seeds(cfg, batch_size=per_file)
    excluder = SeedExcluder(exclude_digests) if exclude_digests else None
    exclusion = StageStats("seeds")
    if excluder is not None:
        batches = rebatch((run_step(excluder, b, exclusion).kept for b in batches), per_file)
    with timed(stats):
        for i, batch in enumerate(batches):
            announce(str(write_parquet_atomic(batch, seeds_dir / f"shard-{i:05d}.parquet")))
    return (chained(stats, exclusion) if excluder is not None else stats).as_dict()


def _child(cfg: SeedConfig, seeds_dir: Path, per_file: int, exclude_digests, out: mp.Queue) -> None:
    parent = os.getppid()

    def announce(path: str) -> None:
        if os.getppid() != parent:  # the flow's process is gone (killed): nobody will read this
            os._exit(1)
        out.put(("shard", path))

    try:
        stats = stage_seed_shards(cfg, seeds_dir, per_file, exclude_digests, announce)
        out.put(("done", stats))
    except UserError as exc:
        out.put(("user_error", str(exc)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        out.put(("error", traceback.format_exc()))


class SeedShardStream:
    """`async for path in SeedShardStream(...)`: shard files as the child writes them, in
    seed order; `.stats` holds the seeds stage's counts once the iteration ends."""

    def __init__(self, cfg: SeedConfig, seeds_dir: Path, per_file: int, exclude_digests: list[str] | None = None):
        self.args = (cfg, Path(seeds_dir), per_file, exclude_digests or None)
        self.stats: dict | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        ctx = mp.get_context("spawn")  # the parent runs threads (Prefect): never fork it
        messages = ctx.Queue()
        child = ctx.Process(target=_child, args=(*self.args, messages), daemon=True, name="ossforge-seeds")
        child.start()
        try:
            while True:
                kind, payload = await asyncio.to_thread(self._next, messages, child)
                if kind == "shard":
                    yield payload
                elif kind == "done":
                    self.stats = payload
                    return
                elif kind == "user_error":
                    raise UserError(payload)
                else:
                    raise RuntimeError(f"seed sampling failed:\n{payload}")
        finally:
            if child.is_alive():
                child.terminate()
            await asyncio.to_thread(child.join)

    @staticmethod
    def _next(messages: mp.Queue, child) -> tuple[str, object]:
        while True:
            try:
                return messages.get(timeout=0.5)
            except queue_module.Empty:
                if not child.is_alive() and messages.empty():
                    return "error", f"the sampling process exited with code {child.exitcode} without a result"
