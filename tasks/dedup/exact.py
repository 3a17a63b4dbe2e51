"""Exact dedup on normalised problem + solution, as the paper's cleaning step does.

Normalisation is deliberately light (strip each line's trailing spaces and the text's
ends, collapse blank-line runs): near-duplicates are the MinHash step's job. Only a 16-byte
digest per kept row is held, so this runs in constant memory per row across shards.
"""

from __future__ import annotations

import hashlib
import re

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.core.parquet_io import write_parquet_atomic
from tasks.core.schema import AUDIT_SCHEMA
from tasks.core.sources import StagedRows
from tasks.core.stats import StageStats
from tasks.core.step import StepOutput, audit_rows, run_step

STAGE = "exact_dedup"
# Digests computed ahead (in a worker process, as each generation shard lands) travel in
# this column; the step uses them instead of hashing the texts again.
PAIR_DIGEST = "_pair_digest"

_BLANK_RUNS = re.compile(r"\n{3,}")


def normalise(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return _BLANK_RUNS.sub("\n\n", text)


def pair_digest(problem: str, solution: str) -> bytes:
    payload = normalise(problem) + "\x00" + normalise(solution)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).digest()


def pair_digests(table: pa.Table) -> pa.Array:
    """The digest of every row's (problem, solution), as a binary(16) column."""
    problems, solutions = table.column("problem").to_pylist(), table.column("solution").to_pylist()
    return pa.array([pair_digest(p, s) for p, s in zip(problems, solutions)], pa.binary(16))


class ExactDeduper:
    """Keeps the first occurrence of each (problem, solution) across every table it is given:
    a step (tasks/core/step.py) with memory. Feed it tables in a stable order (seed order),
    so which copy is "first" does not depend on timing."""

    stage = STAGE
    REASON = "exact_duplicate"

    def __init__(self) -> None:
        self.seen: dict[bytes, str] = {}

    def apply(self, table: pa.Table) -> StepOutput:
        ids = table.column("id").to_pylist()
        if PAIR_DIGEST in table.column_names:
            digests = table.column(PAIR_DIGEST).to_pylist()
        else:
            digests = pair_digests(table).to_pylist()
        dropped, first_ids = [], []
        for row_id, digest in zip(ids, digests):
            first = self.seen.get(digest)
            if first is None:
                self.seen[digest] = row_id
            else:
                first_ids.append(first)
            dropped.append(first is not None)
        mask = pa.array(dropped, type=pa.bool_())
        kept = table.filter(pc.invert(mask)) if table.num_rows else table
        return StepOutput(kept, audit_rows(table, mask, self.stage, self.REASON, duplicate_of=first_ids))


class ShardDedup:
    """Exact dedup of shards fed in seed order as they land, with one running digest set,
    so which copy is first does not depend on which shard finished first."""

    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob("*.parquet"):
            stale.unlink()
        self.out_dir = out_dir
        self.step = ExactDeduper()
        self.stats = StageStats(STAGE)
        self.files: list[str] = []
        self.audits: list[pa.Table] = []

    def add(self, path: str) -> StepOutput:
        out = run_step(self.step, pq.read_table(path), self.stats)
        self.files.append(str(write_parquet_atomic(out.kept, self.out_dir / Path(path).name)))
        self.audits.append(out.audit)
        return out

    def staged(self) -> StagedRows:
        audit = pa.concat_tables(self.audits) if self.audits else AUDIT_SCHEMA.empty_table()
        return StagedRows(self.files, self.stats, audit)
