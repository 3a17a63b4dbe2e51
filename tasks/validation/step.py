"""The validation stage as a Prefect task run: `validate-in-sandbox`. The work is in validate.py."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.core.sources import StagedRows, apply_to_files, counts_line, read_files
from tasks.core.stats import StageStats
from tasks.core.schema import AUDIT_SCHEMA
from tasks.validation.validate import STAGE, ValidationConfig, Validator, combine_shard_stats, validation_summary


@task(name="validate-in-sandbox", cache_policy=NO_CACHE)
def validate_task(pair_files: list[str], cfg: ValidationConfig, out_dir: Path) -> StagedRows:
    """Run every pair's solution against its tests in the sandbox (one per core); keep what
    passes. Refuses (a UserError) where bubblewrap cannot run, unless the config accepts the
    weaker Python-level guards."""
    with Validator(cfg) as validator:
        staged = apply_to_files(validator, read_files(pair_files), out_dir, StageStats(STAGE))
    staged.stats.extra.update(validation_summary(validator))
    logger = get_run_logger()
    logger.info(counts_line(staged.stats))
    if validator.isolation == "weak":
        logger.warning("validation ran WITHOUT bubblewrap (Python-level guards only); outputs are marked weak")
    return staged


def shard_validation(summaries: list[dict]) -> tuple[dict, pa.Table]:
    """The refresh's validation stage, done shard by shard in the clean-shard workers as
    shards landed: its counts and its audit (shard order)."""
    stats = combine_shard_stats([s["validate"] for s in summaries])
    audits = [pq.read_table(s["validate_audit_path"]) for s in summaries]
    if stats.extra.get("isolation") == "weak":
        get_run_logger().warning("validation ran WITHOUT bubblewrap (Python-level guards only); outputs are marked weak")
    return stats.as_dict(), pa.concat_tables(audits) if audits else AUDIT_SCHEMA.empty_table()
