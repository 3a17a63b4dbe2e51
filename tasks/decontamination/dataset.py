"""Decontaminate an existing dataset (Parquet file, directory of shards, glob or JSONL) into a
new dataset directory with the refresh output's layout: OUT/data/*.parquet (kept rows, every
input column, `id` included), OUT/audit/decontaminate.parquet, OUT/manifest.json.

The input is read once, a chunk at a time, through the decontamination step, so memory holds
one chunk of text, not the whole dataset.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pyarrow as pa

from tasks.core.parquet_io import rebatch
from tasks.core.schema import AUDIT_SCHEMA
from tasks.core.sources import FileSource, output_apart_from_input, stage_manifest
from tasks.core.step import run_step
from tasks.decontamination.decontaminate import (
    MATCH_CHUNK_ROWS, STAGE, DecontaminationConfig, Decontaminator, decontamination_report_markdown,
)
from tasks.publish.publish import publish_dataset

FIELDS = ("problem", "solution")


def decontaminate_dataset(input_path: str | os.PathLike, output_dir: str | os.PathLike,
                          cfg: DecontaminationConfig, shard_size: int = 10_000) -> dict:
    """Remove benchmark-contaminated rows of a dataset into output_dir; returns the manifest."""
    started = time.perf_counter()
    source = FileSource(input_path, FIELDS)  # InputError (a UserError) when nothing is there
    out = output_apart_from_input(source, output_dir, "decontaminated")
    first = next(source.chunks(), None)
    schema = first.schema if first is not None else None
    audits = []
    config = {"decontamination": cfg.model_dump(mode="json"), "shard_size": shard_size}

    with Decontaminator(cfg) as step:
        stats = step.new_stats()

        def kept_tables() -> Iterator[pa.Table]:
            for chunk in rebatch(source.chunks(), MATCH_CHUNK_ROWS):
                applied = run_step(step, chunk, stats)
                audits.append(applied.audit)
                yield applied.kept
            stats.extra = step.figures()

        def manifest() -> dict:
            data = stage_manifest(source, STAGE, stats.as_dict(), config)
            data["benchmarks"] = stats.extra.get("loaded", {})
            data["missing"] = stats.extra.get("missing", [])
            return data

        manifest = publish_dataset(
            out, kept_tables(), shard_size, manifest,
            audits=lambda: {STAGE: pa.concat_tables(audits) if audits else AUDIT_SCHEMA.empty_table()},
            schema=schema,
        )
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    return manifest


def summary_markdown(manifest: dict) -> str:
    text = decontamination_report_markdown(manifest["stages"][STAGE])
    text += f"\n\nSource `{manifest['source']}`; {manifest['rows']} rows written."
    if manifest.get("ids_added"):
        text += "\n\nThe input had no `id` column: ids were added (sha256 of row number and text)."
    return text
