"""The seeds stage as a Prefect task run: `sample-seeds`, streaming shard files to generation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.core.sources import counts_line
from tasks.core.stats import StageStats
from tasks.seeds.sampling import SeedConfig
from tasks.seeds.stream import SeedShardStream

END_OF_SEEDS = None  # put on the queue after the last shard file (also when sampling fails)


@task(name="sample-seeds", cache_policy=NO_CACHE)
async def sample_seeds_task(
    seed_cfg: SeedConfig, seeds_dir: Path, per_file: int, exclude_digests: list[str] | None,
    shards: asyncio.Queue,
) -> dict:
    """Sample seeds in a child process, staged as one Parquet file per generation shard;
    each file goes on `shards` as soon as it is written, so generation starts at once.

    Seeds whose digest is in `exclude_digests` (consumed by earlier versions) are dropped
    with a reason, so an incremental run only pays for seeds it has not seen."""
    stream = SeedShardStream(seed_cfg, seeds_dir, per_file, exclude_digests)
    files = 0
    try:
        async for path in stream:
            files += 1
            await shards.put(path)
    finally:
        await shards.put(END_OF_SEEDS)
    get_run_logger().info("%s; %d shard files", counts_line(StageStats.from_dict("seeds", stream.stats)), files)
    return stream.stats
