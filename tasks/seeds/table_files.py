"""JSONL and Parquet files as a corpus: one document per row, text in the content column."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.errors import UserError
from tasks.seeds.documents import CorpusOptions, Document, Rejected, Wanted, hash64, record_to_document
from tasks.seeds.source_tree import relative_posix

TABLE_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")


def is_table_file(path: str | Path) -> bool:
    return str(path).lower().endswith(TABLE_SUFFIXES)


@dataclass
class TableCorpus:
    """Rows of JSONL or Parquet files: one document per row, text in the content column.

    Rows are shuffled with a bounded buffer (like a streamed hub dataset): the order of files
    and Parquet row groups is permuted per pass, and rows pass through a shuffle buffer of
    `shuffle_buffer` documents, so memory stays bounded whatever the corpus size.
    """

    root: Path
    files: list[Path]
    seed_source: str
    opts: CorpusOptions
    description: str = ""
    stats: dict = field(default_factory=lambda: {"files_listed": 0, "documents_read": 0})

    def __post_init__(self):
        self.stats["files_listed"] = len(self.files)
        for path in self.files:
            self._check_columns(path)

    def _rel(self, path: Path) -> str:
        return relative_posix(path, self.root)

    def _check_columns(self, path: Path) -> None:
        names = self._column_names(path)
        if names is None:
            return  # an empty file: nothing to check
        missing = self.opts.missing_columns(names)
        if missing:
            raise UserError(
                f"{path}: no column {missing[0]!r} (columns: {', '.join(sorted(names)) or 'none'}); "
                "set the matching *_column option"
            )

    def _column_names(self, path: Path) -> set[str] | None:
        if str(path).lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            try:
                return set(pq.read_schema(path).names)
            except Exception as exc:  # pyarrow raises several types for a bad file
                raise UserError(f"cannot read Parquet file {path}: {str(exc).splitlines()[0]}") from None
        try:
            with _open_text(path) as fh:
                for line in fh:
                    if line.strip():
                        record = json.loads(line)
                        if not isinstance(record, dict):
                            raise UserError(f"{path}: expected one JSON object per line")
                        return set(record)
        except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read JSONL file {path}: {str(exc).splitlines()[0]}") from None
        return None

    def _units(self) -> list[tuple[Path, int | None]]:
        units: list[tuple[Path, int | None]] = []
        for path in self.files:
            if str(path).lower().endswith(".parquet"):
                import pyarrow.parquet as pq

                units += [(path, g) for g in range(pq.ParquetFile(path).metadata.num_row_groups)]
            else:
                units.append((path, None))
        return units

    def _rows(self, path: Path, group: int | None) -> Iterator[tuple[str, dict | None]]:
        """(key, record) for every row of a unit; record None for an unparsable JSON line."""
        rel = self._rel(path)
        if group is None:
            with _open_text(path) as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        record = None
                    yield f"{rel}#L{lineno}", record if isinstance(record, dict) else None
            return
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        first = sum(pf.metadata.row_group(g).num_rows for g in range(group))
        names = set(pf.schema_arrow.names)
        cols = [c for c in self._columns() if c in names]
        row = first
        for batch in pf.iter_batches(batch_size=1024, row_groups=[group], columns=cols):
            for record in batch.to_pylist():
                yield f"{rel}#{row}", record
                row += 1

    def _columns(self) -> list[str]:
        o = self.opts
        return list(dict.fromkeys([o.content_column, o.language_column, o.path_column, o.repo_column, o.license_column]))

    def documents(self, pass_no: int, wanted: Wanted) -> Iterator[Document | Rejected]:
        seed = self.opts.random_seed
        units = sorted(self._units(), key=lambda u: hash64(seed, "unit", pass_no, self._rel(u[0]), u[1]))

        def records():
            for path, group in units:
                yield from self._rows(path, group)

        for key, record in _buffer_shuffle(records(), self.opts.shuffle_buffer, seed, pass_no):
            self.stats["documents_read"] += 1
            item = record_to_document(key, record, self.opts, wanted)
            if item is not None:
                yield item


def _open_text(path: Path):
    if str(path).lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _buffer_shuffle(items, size: int, seed: int, pass_no: int):
    """Deterministic shuffle buffer: memory for `size` items, order derived from the hashes."""
    buf = []
    for n, item in enumerate(items):
        if len(buf) < size:
            buf.append(item)
            continue
        slot = hash64(seed, "buf", pass_no, n) % size
        buf[slot], item = item, buf[slot]
        yield item
    while buf:  # drain in a permuted order
        slot = hash64(seed, "drain", pass_no, len(buf)) % len(buf)
        buf[slot], buf[-1] = buf[-1], buf[slot]
        yield buf.pop()
