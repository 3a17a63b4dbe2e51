"""Reading and writing datasets as Parquet shards.

Every file is written to a temporary name in the same directory and renamed into place,
so a reader (or a resumed run) never sees half a shard.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.errors import UserError

COMPRESSION = "zstd"


class InputError(UserError):
    """A user-supplied dataset that cannot be read."""


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression=COMPRESSION)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(obj, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rebatch(tables: Iterable[pa.Table], rows_per_batch: int) -> Iterator[pa.Table]:
    """Regroup a stream of tables into tables of exactly `rows_per_batch` rows (the last may be short)."""
    pending: list[pa.Table] = []
    pending_rows = 0
    for table in tables:
        offset = 0
        while offset < table.num_rows:
            take = min(rows_per_batch - pending_rows, table.num_rows - offset)
            pending.append(table.slice(offset, take))
            pending_rows += take
            offset += take
            if pending_rows == rows_per_batch:
                yield pa.concat_tables(pending).combine_chunks()
                pending, pending_rows = [], 0
    if pending_rows:
        yield pa.concat_tables(pending).combine_chunks()


def write_shards(
    tables: Iterable[pa.Table],
    data_dir: str | os.PathLike,
    shard_size: int,
    prefix: str = "train",
    schema: pa.Schema | None = None,
) -> list[dict]:
    """Write a stream of tables as shards of at most `shard_size` rows.

    Files are named `{prefix}-00000-of-0000N.parquet` (the Hugging Face convention) once the
    count is known. Returns one record per file: path (relative to data_dir's parent), rows,
    bytes and sha256. Stale shards from an earlier write of the same directory are removed.
    """
    if shard_size < 1:
        raise InputError("shard size must be at least 1")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, int]] = []
    for i, table in enumerate(rebatch(tables, shard_size)):
        if schema is not None:
            table = table.select(schema.names).cast(schema)
        staged.append((write_parquet_atomic(table, data_dir / f".{prefix}-{i:05d}.staged"), table.num_rows))
    if not staged and schema is not None:  # an empty dataset is still a loadable dataset
        staged.append((write_parquet_atomic(schema.empty_table(), data_dir / f".{prefix}-00000.staged"), 0))
    for old in data_dir.glob(f"{prefix}-*.parquet"):
        old.unlink()
    files = []
    for i, (tmp, rows) in enumerate(staged):
        final = data_dir / f"{prefix}-{i:05d}-of-{len(staged):05d}.parquet"
        os.replace(tmp, final)
        files.append(
            {
                "path": str(final.relative_to(data_dir.parent)),
                "rows": rows,
                "bytes": final.stat().st_size,
                "sha256": file_sha256(final),
            }
        )
    return files


def input_files(source: str | os.PathLike) -> list[Path]:
    """The data files behind a user's --input: a Parquet/JSONL file, a directory, or a glob."""
    src = str(source)
    path = Path(src)
    if path.is_dir():
        data = path / "data"
        root = data if data.is_dir() else path
        files = sorted(p for p in root.rglob("*") if p.suffix in {".parquet", ".jsonl", ".json"} and p.is_file())
        files = [p for p in files if p.name != "manifest.json" and not p.name.startswith(".")]
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(src, recursive=True) if Path(p).is_file())
    if not files:
        raise InputError(f"no Parquet or JSONL files found at {src!r}")
    return files


def read_table(source: str | os.PathLike) -> pa.Table:
    """Read a whole input dataset (Parquet file(s) or JSONL) into one Arrow table."""
    tables = list(iter_tables(source))
    try:
        return pa.concat_tables(tables, promote_options="default")
    except pa.ArrowInvalid as exc:
        raise InputError(f"input files at {source!r} do not share one schema: {exc}") from None


PARQUET_BATCH_ROWS = 10_000  # rows decoded at a time from a Parquet file


def iter_tables(source: str | os.PathLike, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """The tables of a user's --input, in file order; with `columns`, only those of them that
    a file has (Parquet reads just those columns' pages).

    Parquet is streamed PARQUET_BATCH_ROWS rows at a time: a single 1M-row file (one row
    group, as pyarrow writes it) read whole would hold all its text at once (100K rows of
    ~2.8 KB: 919 MB peak RSS read whole, 270 MB streamed). A file without rows still yields
    one empty table, so its schema is seen."""
    import pyarrow.json as pajson

    for path in input_files(source):
        try:
            if path.suffix == ".parquet":
                with pq.ParquetFile(path) as parquet:
                    schema = parquet.schema_arrow
                    wanted = None if columns is None else [c for c in columns if c in schema.names]
                    rows = 0
                    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
                        rows += batch.num_rows
                        yield pa.Table.from_batches([batch])
                    if not rows:
                        yield schema.empty_table() if wanted is None else schema.empty_table().select(wanted)
            else:
                table = pajson.read_json(path)
                yield table if columns is None else table.select([c for c in columns if c in table.column_names])
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
