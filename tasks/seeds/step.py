"""The seeds stage as Prefect task runs: `sample-seeds`."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.core.parquet_io import rebatch, write_parquet_atomic
from tasks.core.sources import counts_line
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


@task(name="sample-seeds", cache_policy=NO_CACHE)
def sample_seeds_task(
    seed_cfg: SeedConfig, seeds_dir: Path, per_file: int, exclude_digests: list[str] | None = None
) -> tuple[list[str], dict]:
    """Sample seeds and stage them as one Parquet file per generation shard.

    Seeds whose digest is in `exclude_digests` (consumed by earlier versions) are dropped
    with a reason, so an incremental run only pays for seeds it has not seen."""
    for stale in seeds_dir.glob("shard-*.parquet"):
        stale.unlink()
    batches, stats = sample_seeds(seed_cfg, batch_size=per_file)
    excluder = SeedExcluder(exclude_digests) if exclude_digests else None
    exclusion = StageStats("seeds")
    if excluder is not None:
        batches = rebatch((run_step(excluder, b, exclusion).kept for b in batches), per_file)
    paths = []
    with timed(stats):
        for i, batch in enumerate(batches):
            paths.append(str(write_parquet_atomic(batch, seeds_dir / f"shard-{i:05d}.parquet")))
    if excluder is not None:
        stats = chained(stats, exclusion)
    get_run_logger().info("%s; %d shard files", counts_line(stats), len(paths))
    return paths, stats.as_dict()
