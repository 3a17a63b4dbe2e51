"""The dedup stages as Prefect task runs: `exact-dedup`, `near-dedup-signatures`,
`near-dedup-clusters`. Each logs its counts; the work is in exact.py and near.py."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.core.sources import FileSource, StagedRows, apply_to_files, counts_line, read_files
from tasks.core.stats import StageStats
from tasks.dedup.exact import STAGE as EXACT_STAGE, ExactDeduper
from tasks.dedup.near import NearDedupConfig, Signatures, candidate_edges, compute_signatures, decide_clusters

# Rows move between these tasks as files on disk; their inputs are never worth hashing.


@task(name="exact-dedup", cache_policy=NO_CACHE)
def exact_dedup_task(pair_files: list[str], out_dir: Path) -> StagedRows:
    """Drop exact copies of an earlier (problem, solution), the files read in seed order,
    so which copy is first does not depend on which shard finished first."""
    staged = apply_to_files(ExactDeduper(), read_files(pair_files), out_dir, StageStats(EXACT_STAGE))
    get_run_logger().info(counts_line(staged.stats))
    return staged


@task(name="near-dedup-signatures", cache_policy=NO_CACHE)
def near_dedup_signatures_task(rows: StagedRows, cfg: NearDedupConfig) -> Signatures:
    """MinHash signatures of every row (worker processes inside this one task run)."""
    signatures = compute_signatures(FileSource(_rows_dir(rows), cfg.fields), cfg)
    get_run_logger().info("signed %d rows in %.1f s", len(signatures), signatures.seconds)
    return signatures


@task(name="near-dedup-clusters", cache_policy=NO_CACHE)
def near_dedup_clusters_task(rows: StagedRows, signatures: Signatures, cfg: NearDedupConfig, out_dir: Path) -> StagedRows:
    """Candidate pairs -> duplicate clusters -> one kept row per cluster, applied to the rows."""
    source = FileSource(_rows_dir(rows), cfg.fields)
    plan = decide_clusters(signatures, candidate_edges(signatures, source, cfg), cfg)
    staged = apply_to_files(plan.step(), source.chunks(), out_dir, plan.new_stats())
    get_run_logger().info(counts_line(staged.stats))
    return staged


def _rows_dir(rows: StagedRows) -> str:
    # A stage's files are the only Parquet files of their directory (apply_to_files clears it).
    return str(Path(rows.files[0]).parent)
