"""The decontamination stage as a Prefect task run: `decontaminate`."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.core.parquet_io import rebatch
from tasks.core.sources import StagedRows, apply_to_files, counts_line, read_files
from tasks.decontamination.decontaminate import MATCH_CHUNK_ROWS, DecontaminationConfig, Decontaminator


@task(name="decontaminate", cache_policy=NO_CACHE)
def decontaminate_task(rows: StagedRows, cfg: DecontaminationConfig, out_dir: Path) -> StagedRows:
    """Remove rows that contain a benchmark problem (matchers in worker processes)."""
    with Decontaminator(cfg) as step:
        stats = step.new_stats()
        staged = apply_to_files(step, rebatch(read_files(rows.files), MATCH_CHUNK_ROWS), out_dir, stats)
        stats.extra = step.figures()
    logger = get_run_logger()
    logger.info(counts_line(stats))
    if stats.extra.get("missing"):
        logger.warning("benchmarks NOT checked (could not be loaded): %s", ", ".join(stats.extra["missing"]))
    return staged
