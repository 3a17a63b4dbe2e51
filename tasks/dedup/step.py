"""The dedup stages as Prefect task runs: `exact-dedup` (one per generation shard, in seed
order, as shards land), `near-dedup-signatures` and `near-dedup-clusters` (once, at the
end). Each logs its counts; the work is in exact.py and near.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.core.sources import FileSource, StagedRows, apply_to_files, counts_line
from tasks.dedup.exact import ShardDedup
from tasks.dedup.near import (
    MINHASH, NearDedupConfig, Signatures, candidate_edges, collect_signatures, compute_signatures, decide_clusters,
    persist_signatures,
)

# Rows move between these tasks as files on disk; their inputs are never worth hashing.


@task(name="exact-dedup", cache_policy=NO_CACHE)
async def exact_dedup_task(shard: dict, dedup: ShardDedup) -> None:
    """One landed shard against every earlier one (digests computed in its clean-shard run);
    in a thread, so the event loop keeps serving the teacher."""
    out = await asyncio.to_thread(dedup.add, shard["prepared_path"])
    get_run_logger().info(
        "%s: %d in, %d kept; %s", shard["shard"], out.kept.num_rows + out.audit.num_rows, out.kept.num_rows,
        counts_line(dedup.stats),
    )


@task(name="near-dedup-signatures", cache_policy=NO_CACHE)
def near_dedup_signatures_task(rows: StagedRows, cfg: NearDedupConfig, lsh: list[int] | None = None) -> Signatures:
    """MinHash signatures of every row: collected when the rows were signed ahead (as their
    generation shard landed), else computed (worker processes inside this one task run)."""
    source = FileSource(_rows_dir(rows), cfg.fields)
    signed_ahead = MINHASH in pq.read_schema(rows.files[0]).names
    signatures = collect_signatures(source, cfg, lsh) if signed_ahead else compute_signatures(source, cfg)
    get_run_logger().info("signed %d rows in %.1f s", len(signatures), signatures.seconds)
    return signatures


@task(name="near-dedup-clusters", cache_policy=NO_CACHE)
def near_dedup_clusters_task(
    rows: StagedRows, signatures: Signatures, cfg: NearDedupConfig, out_dir: Path, persist: bool = True
) -> StagedRows:
    """Candidate pairs -> duplicate clusters -> one kept row per cluster, applied to the rows.

    persist=False: the kept rows' signatures are not added to `cfg.index_dir` here (it is
    still read, for the earlier versions): a later stage may drop some of them, and the
    index must learn only what is published (`persist_published_signatures_task`)."""
    source = FileSource(_rows_dir(rows), cfg.fields)
    decide_cfg = cfg if persist else cfg.model_copy(update={"index_dir": None})
    plan = decide_clusters(signatures, candidate_edges(signatures, source, cfg), decide_cfg)
    staged = apply_to_files(plan.step(), source.chunks(), out_dir, plan.new_stats())
    get_run_logger().info(counts_line(staged.stats))
    return staged


def _rows_dir(rows: StagedRows) -> str:
    # A stage's files are the only Parquet files of their directory (apply_to_files clears it).
    return str(Path(rows.files[0]).parent)


@task(name="near-dedup-index", cache_policy=NO_CACHE)
def persist_published_signatures_task(signatures: Signatures, published_files: list[str], cfg: NearDedupConfig) -> int:
    """Add the signatures of the rows actually published (after decontamination) to the
    near-dedup index, so later versions are deduplicated against those rows and no others.
    Returns how many were added."""
    published = set()
    for path in published_files:
        published.update(pq.read_table(path, columns=["id"])["id"].to_pylist())
    keep = np.array([i in published for i in signatures.ids.to_pylist()], dtype=bool)
    ids = [i for i, k in zip(signatures.ids.to_pylist(), keep) if k]
    persist_signatures(ids, signatures.sigs[keep], cfg.index_dir, cfg.version, cfg)
    get_run_logger().info("near-dedup index: %d published rows' signatures added to %s", len(ids), cfg.index_dir)
    return len(ids)
