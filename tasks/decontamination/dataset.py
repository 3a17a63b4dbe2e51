"""Decontaminate an existing dataset (Parquet file, directory of shards, glob or JSONL) into a
new dataset directory with the refresh output's layout: OUT/data/*.parquet (kept rows, every
input column, `id` included), OUT/audit/decontaminate.parquet, OUT/manifest.json.

The input is read twice (flag, then write), so memory holds one chunk of text and a keep
mask per row, not the whole dataset.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pyarrow as pa

from tasks.core.schema import AUDIT_SCHEMA
from tasks.decontamination.decontaminate import STAGE, DecontaminationConfig, Decontaminator, decontamination_report_markdown
from tasks.dedup.dataset import FileSource, output_apart_from_input, stage_manifest
from tasks.publish.publish import publish_dataset
from tasks.core.parquet_io import rebatch

FIELDS = ("problem", "solution")
MATCH_CHUNK_ROWS = 50_000  # rows flagged per call: enough to keep the worker processes busy


def decontaminate_dataset(input_path: str | os.PathLike, output_dir: str | os.PathLike,
                          cfg: DecontaminationConfig, shard_size: int = 10_000) -> dict:
    """Remove benchmark-contaminated rows of a dataset into output_dir; returns the manifest."""
    started = time.perf_counter()
    source = FileSource(input_path, FIELDS)  # InputError (a UserError) when nothing is there
    out = output_apart_from_input(source, output_dir, "decontaminated")

    masks, audits = [], []
    schema = None
    with Decontaminator(cfg) as step:
        for chunk in rebatch(source.chunks(), MATCH_CHUNK_ROWS):
            schema = schema or chunk.schema
            keep, audit = step.flag(chunk)
            masks.append(pa.array(keep, type=pa.bool_()))
            audits.append(audit)
        stats = step.stats().as_dict()

    def kept_tables() -> Iterator[pa.Table]:
        for chunk, mask in zip(rebatch(source.chunks(), MATCH_CHUNK_ROWS), masks):
            yield chunk.filter(mask)

    config = {"decontamination": cfg.model_dump(mode="json"), "shard_size": shard_size}
    manifest = stage_manifest(source, STAGE, stats, config)
    manifest["benchmarks"] = stats.get("extra", {}).get("loaded", {})
    manifest["missing"] = stats.get("extra", {}).get("missing", [])
    audit = pa.concat_tables(audits) if audits else AUDIT_SCHEMA.empty_table()
    manifest = publish_dataset(out, kept_tables(), shard_size, manifest, audits={STAGE: audit}, schema=schema)
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    return manifest


def summary_markdown(manifest: dict) -> str:
    text = decontamination_report_markdown(manifest["stages"][STAGE])
    text += f"\n\nSource `{manifest['source']}`; {manifest['rows']} rows written."
    if manifest.get("ids_added"):
        text += "\n\nThe input had no `id` column: ids were added (sha256 of row number and text)."
    return text
