"""Near-dedup an existing dataset (Parquet file, directory of shards, or JSONL) into a new
dataset directory with the refresh output's layout: OUT/data/*.parquet, OUT/manifest.json,
OUT/audit/near_dedup.parquet.

The input is streamed in chunks and read a few times (signatures, borderline candidates'
texts, audit, output), so memory holds signatures and ids, not the text of a large dataset.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from tasks.core.errors import UserError
from tasks.core.schema import AUDIT_SCHEMA
from tasks.dedup.near import CHUNK_ROWS, STAGE, NearDedupConfig, document_texts, plan_near_dedup
from tasks.publish.publish import publish_dataset
from tasks.core.parquet_io import InputError, input_files, iter_tables, rebatch


class FileSource:
    """Rows of a user's dataset, in file order. Rows without an `id` column get a stable one:
    the first 16 hex digits of sha256(row number, compared text), the same on every run
    over the same input."""

    def __init__(self, source: str | os.PathLike, fields: tuple[str, ...]):
        self.source = str(source)
        self.files = input_files(self.source)  # InputError when nothing is there
        self.fields = fields
        self.ids_added = False

    def chunks(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """Chunks of CHUNK_ROWS rows; with `columns`, only those (an `id` asked for and absent
        is made, so `columns` must then include the compared fields)."""
        offset = 0
        try:
            for chunk in rebatch(iter_tables(self.source, columns), CHUNK_ROWS):
                if "id" not in chunk.column_names and (columns is None or "id" in columns):
                    chunk = chunk.append_column("id", self._stable_ids(chunk, offset))
                    self.ids_added = True
                offset += chunk.num_rows
                yield chunk
        except pa.ArrowInvalid as exc:
            raise InputError(f"input files at {self.source!r} do not share one schema: {str(exc).splitlines()[0]}") from None

    def num_rows(self) -> int | None:
        """From Parquet footers without reading data; None when a JSONL file is among the inputs."""
        import pyarrow.parquet as pq

        if any(f.suffix != ".parquet" for f in self.files):
            return None
        try:
            return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read {self.source}: {str(exc).splitlines()[0]}") from None

    def _stable_ids(self, chunk: pa.Table, offset: int) -> pa.Array:
        texts = document_texts(chunk, self.fields)
        return pa.array(
            [hashlib.sha256(f"{offset + i}\0{t}".encode()).hexdigest()[:16] for i, t in enumerate(texts)], pa.string()
        )


def output_apart_from_input(source: FileSource, output_dir: str | os.PathLike, what: str) -> Path:
    """The resolved output directory of a dataset command; a UserError when it holds the
    input files or lies inside the input directory (a rerun would read the last output)."""
    out = Path(output_dir).resolve()
    if any(out == f.resolve() or out in f.resolve().parents for f in source.files):
        raise UserError(f"--output {output_dir} holds the input files; write the {what} dataset elsewhere")
    src_dir = Path(source.source).resolve()
    if src_dir.is_dir() and src_dir in out.parents:
        raise UserError(f"--output {output_dir} is inside the input directory {source.source}; write it elsewhere")
    return out


def stage_manifest(source: FileSource, stage: str, stats: dict, config: dict) -> dict:
    """The manifest of a one-stage dataset command, before publishing adds files and checksums."""
    dropped = sum(stats["dropped"].values())
    return {
        "status": "complete",
        "source": source.source,
        "ids_added": source.ids_added,
        "config": config,
        "stages": {stage: stats},
        "accounting": {
            "rows_in": stats["in"],
            "rows": stats["out"],
            "dropped": dropped,
            "balanced": stats["in"] == stats["out"] + dropped,
        },
    }


def dedup_dataset(
    input_path: str | os.PathLike, output_dir: str | os.PathLike, cfg: NearDedupConfig, shard_size: int = 10_000
) -> dict:
    """Near-dedup a dataset into output_dir; returns the manifest."""
    started = time.perf_counter()
    source = FileSource(input_path, cfg.fields)
    out = output_apart_from_input(source, output_dir, "deduplicated")
    plan = plan_near_dedup(source, cfg)

    audit_parts = []
    offset = 0
    for chunk in source.chunks():
        audit_parts.append(plan.apply(chunk, offset)[1])
        offset += chunk.num_rows
    audit = pa.concat_tables(audit_parts) if audit_parts else AUDIT_SCHEMA.empty_table()

    def kept_tables() -> Iterator[pa.Table]:
        pos = 0
        for chunk in source.chunks():
            kept, _ = plan.apply(chunk, pos)
            pos += chunk.num_rows
            yield kept

    # The output schema (input columns + cluster columns), so an all-dropped result is
    # still a readable, empty dataset.
    first = next(source.chunks(), None)
    schema = plan.apply(first.slice(0, 0), 0)[0].schema if first is not None else None
    config = {"near_dedup": cfg.model_dump(mode="json"), "shard_size": shard_size}
    manifest = stage_manifest(source, STAGE, plan.stats.as_dict(), config)
    manifest = publish_dataset(out, kept_tables(), shard_size, manifest, audits={STAGE: audit}, schema=schema)
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

