"""Rows a stage reads and writes: a user's dataset read in chunks, with the checks and the
manifest every one-stage dataset command (ossforge dedup, ossforge decontaminate) shares;
and a refresh stage's rows staged as Parquet for the next stage.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.core.errors import UserError
from tasks.core.parquet_io import InputError, input_files, iter_tables, rebatch, write_parquet_atomic
from tasks.core.schema import AUDIT_SCHEMA
from tasks.core.stats import StageStats
from tasks.core.step import RowStep, run_step

CHUNK_ROWS = 2000  # rows per chunk a source yields: big enough for numpy, small enough to stream


def joined_texts(table: pa.Table, fields: Sequence[str]) -> list[str]:
    """Each row's `fields` joined by newlines (nulls count as empty); the fields must be columns."""
    columns = [pc.fill_null(pc.cast(table[f], pa.string()), "").to_pylist() for f in fields]
    if len(columns) == 1:
        return columns[0]
    return ["\n".join(parts) for parts in zip(*columns)]


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
        if any(f.suffix != ".parquet" for f in self.files):
            return None
        try:
            return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read {self.source}: {str(exc).splitlines()[0]}") from None

    def _stable_ids(self, chunk: pa.Table, offset: int) -> pa.Array:
        missing = [f for f in self.fields if f not in chunk.column_names]
        if missing:
            raise UserError(f"fields {missing} are not columns of the input (columns: {chunk.column_names})")
        texts = joined_texts(chunk, self.fields)
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
    """The manifest of a one-stage dataset command, before publishing adds files and checksums.

    A stage that could not check everything it was asked to (decontamination's benchmarks
    that could not be loaded: `extra.missing`) makes the status "partial" and names them."""
    dropped = sum(stats["dropped"].values())
    not_checked = list(stats.get("extra", {}).get("missing", []))
    return {
        "status": "partial" if not_checked else "complete",
        "not_checked": not_checked,
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


# --- a stage's rows staged on disk (the refresh's work directory) -------------------------
@dataclass
class StagedRows:
    """What a stage hands the next one in a refresh: its kept rows as Parquet files (in row
    order), its counts, and the audit of what it dropped."""

    files: list[str]
    stats: StageStats
    audit: pa.Table

    @property
    def rows(self) -> int:
        return self.stats.rows_out


def apply_to_files(step: RowStep, tables: Iterable[pa.Table], out_dir: Path, stats: StageStats) -> StagedRows:
    """Run `step` over `tables` in order, counting into `stats` (run_step), and stage each
    table's kept rows as out_dir/part-NNNNN.parquet. Stale parts of an earlier run go first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.parquet"):
        stale.unlink()
    files, audits = [], []
    for i, table in enumerate(tables):
        out = run_step(step, table, stats)
        files.append(str(write_parquet_atomic(out.kept, out_dir / f"part-{i:05d}.parquet")))
        audits.append(out.audit)
    audit = pa.concat_tables(audits) if audits else AUDIT_SCHEMA.empty_table()
    return StagedRows(files, stats, audit)


def read_files(files: Iterable[str | os.PathLike]) -> Iterator[pa.Table]:
    for f in files:
        yield pq.read_table(f)


def counts_line(stats: StageStats) -> str:
    """A stage's counts in one line, for its task's log."""
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats.dropped.items())) or "none"
    return f"{stats.name}: {stats.rows_in} in, {stats.rows_out} out; dropped {dropped}; {stats.seconds:.1f} s"
