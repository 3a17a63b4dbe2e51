"""Validate an existing dataset (Parquet file, directory of shards, glob or JSONL) into a new
dataset directory with the refresh output's layout: OUT/data/*.parquet (rows whose solution
passed its tests, every input column and `id` kept, plus validation_status and
validation_seconds), OUT/audit/validate.parquet (every dropped row with its reason and a
short stderr excerpt), OUT/manifest.json (counts, pass rate per language, isolation).

Rows need `solution` and `tests` columns (Markdown fences are stripped); `lang` (default
python) and `id` (default: a stable hash) are optional. The input streams through the step a
chunk at a time, so memory holds one chunk of code, not the dataset.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pyarrow as pa

from tasks.core.errors import UserError
from tasks.core.schema import AUDIT_SCHEMA
from tasks.core.stats import StageStats
from tasks.core.sources import FileSource, output_apart_from_input, stage_manifest
from tasks.core.step import run_step
from tasks.publish.publish import publish_dataset
from tasks.validation.validate import SECONDS, STAGE, STATUS, ValidationConfig, Validator, validation_summary

FIELDS = ("solution", "tests")  # what a row's stable id is made of when the input has none
CHUNK_ROWS = 256  # rows per sandbox batch: enough to keep every sandbox busy, small in memory


def output_schema(input_schema: pa.Schema) -> pa.Schema:
    """The input's columns (an earlier verdict replaced) plus this run's verdict."""
    names = [n for n in input_schema.names if n not in (STATUS, SECONDS)]
    schema = pa.schema([input_schema.field(n) for n in names])
    if "id" not in schema.names:
        schema = schema.append(pa.field("id", pa.string()))
    return schema.append(pa.field(STATUS, pa.string())).append(pa.field(SECONDS, pa.float64()))


def validate_dataset(input_path: str | os.PathLike, output_dir: str | os.PathLike, cfg: ValidationConfig,
                     shard_size: int = 10_000) -> dict:  # fmt: skip
    """Run every row's solution against its tests in the sandbox; keep what passes into
    output_dir; returns the manifest. Refuses (UserError) where bubblewrap cannot run,
    unless cfg accepts the weaker Python-level guards."""
    started = time.perf_counter()
    source = FileSource(input_path, FIELDS)  # InputError (a UserError) when nothing is there
    out = output_apart_from_input(source, output_dir, "validated")
    first = next(source.chunks(), None)
    if first is not None:
        missing = [f for f in FIELDS if f not in first.column_names]
        if missing:
            raise UserError(f"input rows need {' and '.join(missing)} column(s); columns are {first.column_names}")
    schema = output_schema(first.schema) if first is not None else None
    audits: list[pa.Table] = []
    config = {"validation": cfg.model_dump(mode="json"), "shard_size": shard_size}

    with Validator(cfg) as step:
        stats = StageStats(STAGE)

        def kept_tables() -> Iterator[pa.Table]:
            for chunk in source.chunks():
                for offset in range(0, chunk.num_rows, CHUNK_ROWS):
                    applied = run_step(step, chunk.slice(offset, CHUNK_ROWS), stats)
                    audits.append(applied.audit)
                    yield applied.kept
            stats.extra.update(validation_summary(step))

        def manifest() -> dict:
            return stage_manifest(source, STAGE, stats.as_dict(), config)

        manifest = publish_dataset(
            out, kept_tables(), shard_size, manifest,
            audits=lambda: {STAGE: pa.concat_tables(audits) if audits else AUDIT_SCHEMA.empty_table()},
            schema=schema,
        )
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    return manifest


def summary_line(manifest: dict) -> str:
    stage = manifest["stages"][STAGE]
    dropped = ", ".join(f"{k} {v}" for k, v in stage["dropped"].items()) or "none"
    extra = stage.get("extra", {})
    rates = ", ".join(f"{lang} {rate:.1%}" for lang, rate in extra.get("pass_rate", {}).items()) or "n/a"
    return (f"kept {stage['out']} of {stage['in']} rows (dropped: {dropped}); pass rate {rates}; "
            f"isolation {extra.get('isolation')}")


def summary_markdown(manifest: dict) -> str:
    stage = manifest["stages"][STAGE]
    extra = stage.get("extra", {})
    lines = ["# Validation", "", summary_line(manifest), "", "| language | outcome | rows |", "| --- | --- | ---: |"]
    for lang, counts in extra.get("by_language", {}).items():
        lines += [f"| {lang} | {outcome} | {n} |" for outcome, n in counts.items()]
    lines += ["", f"Source `{manifest['source']}`; {manifest['rows']} rows written."]
    if extra.get("isolation") == "weak":
        lines += ["", "**The sandbox was WEAK** (no bubblewrap; Python-level guards only)."]
    return "\n".join(lines)
