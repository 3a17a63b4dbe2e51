"""Near-dedup an existing dataset (Parquet file, directory of shards, or JSONL) into a new
dataset directory with the refresh output's layout: OUT/data/*.parquet, OUT/manifest.json,
OUT/audit/near_dedup.parquet.

The input is streamed in chunks and read a few times (signatures, borderline candidates'
texts, output), so memory holds signatures and ids, not the text of a large dataset. The
plan is applied once, as a step (tasks/core/step.py), while the kept rows stream to the shards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pyarrow as pa

from tasks.core.schema import AUDIT_SCHEMA
from tasks.core.sources import FileSource, output_apart_from_input, stage_manifest
from tasks.core.step import run_step
from tasks.dedup.near import STAGE, NearDedupConfig, plan_near_dedup
from tasks.publish.publish import publish_dataset


def dedup_dataset(
    input_path: str | os.PathLike, output_dir: str | os.PathLike, cfg: NearDedupConfig, shard_size: int = 10_000
) -> dict:
    """Near-dedup a dataset into output_dir; returns the manifest."""
    started = time.perf_counter()
    source = FileSource(input_path, cfg.fields)
    out = output_apart_from_input(source, output_dir, "deduplicated")
    plan = plan_near_dedup(source, cfg)
    stats, step, audits = plan.new_stats(), plan.step(), []

    def kept_tables() -> Iterator[pa.Table]:
        for chunk in source.chunks():
            applied = run_step(step, chunk, stats)
            audits.append(applied.audit)
            yield applied.kept

    # The output schema (input columns + cluster columns), so an all-dropped result is
    # still a readable, empty dataset.
    first = next(source.chunks(), None)
    schema = plan.decide_chunk(first.slice(0, 0), 0).kept.schema if first is not None else None
    config = {"near_dedup": cfg.model_dump(mode="json"), "shard_size": shard_size}
    manifest = publish_dataset(
        out, kept_tables(), shard_size,
        manifest=lambda: stage_manifest(source, STAGE, stats.as_dict(), config),
        audits=lambda: {STAGE: pa.concat_tables(audits) if audits else AUDIT_SCHEMA.empty_table()},
        schema=schema,
    )
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    return manifest


def summary_markdown(manifest: dict) -> str:
    """The run in a few lines (the flow's artifact and the CLI's output)."""
    stage = manifest["stages"][STAGE]
    extra = stage.get("extra", {})
    dropped = ", ".join(f"{k}: {v}" for k, v in stage["dropped"].items()) or "none"
    lines = [
        f"# Near-dedup: kept {stage['out']} of {stage['in']} rows",
        "",
        f"Source `{manifest['source']}`; dropped {dropped}.",
        "",
        "| setting / figure | value |",
        "| --- | ---: |",
    ]
    for key in ("threshold", "num_perm", "bands", "rows_per_band", "ngram", "candidate_pairs", "duplicate_edges",
                "clusters_with_duplicates", "largest_cluster", "published_signatures", "signature_seconds",
                "lsh_seconds", "verify_seconds"):
        if key in extra:
            lines.append(f"| {key} | {extra[key]} |")
    lines.append(f"| seconds | {stage['seconds']} |")
    if manifest.get("ids_added"):
        lines += ["", "The input had no `id` column: ids were added (sha256 of row number and text)."]
    return "\n".join(lines)

