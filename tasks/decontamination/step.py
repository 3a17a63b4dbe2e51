"""The decontamination stage as a Prefect task run: `decontaminate`."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.core.parquet_io import rebatch
from tasks.core.sources import StagedRows, apply_to_files, counts_line, read_files
from tasks.core.stats import StageStats
from tasks.decontamination.decontaminate import (
    CONTAMINATION, MATCH_CHUNK_ROWS, STAGE, ContaminationFilter, DecontaminationConfig, Decontaminator,
)


@task(name="decontaminate", cache_policy=NO_CACHE)
def decontaminate_task(
    rows: StagedRows, cfg: DecontaminationConfig, out_dir: Path, index_figures: dict | None = None
) -> StagedRows:
    """Remove rows that contain a benchmark problem. Rows matched ahead (as their generation
    shard landed; `index_figures` says what that index checked) are only filtered here;
    others are matched now, in worker processes."""
    if index_figures is not None:
        # Only a filter now: small chunks, and without the earlier stages' working columns
        # (signatures, shingle sets: "_"-prefixed), which would hold ~10 KB a row in memory.
        tables = (_without_working_columns(t) for t in read_files(rows.files))
        step = ContaminationFilter()
        stats = StageStats(STAGE)
        staged = apply_to_files(step, tables, out_dir, stats)
        stats.extra = step.figures(index_figures)
    else:
        tables = rebatch(read_files(rows.files), MATCH_CHUNK_ROWS)
        with Decontaminator(cfg) as step:
            stats = step.new_stats()
            staged = apply_to_files(step, tables, out_dir, stats)
            stats.extra = step.figures()
    logger = get_run_logger()
    logger.info(counts_line(stats))
    if stats.extra.get("missing"):
        logger.warning("benchmarks NOT checked (could not be loaded): %s", ", ".join(stats.extra["missing"]))
    return staged


def _without_working_columns(table):
    return table.drop_columns([c for c in table.column_names if c.startswith("_") and c != CONTAMINATION])
