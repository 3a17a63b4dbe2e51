"""Exact dedup on normalised problem + solution, as the paper's cleaning step does.

Normalisation is deliberately light (strip each line's trailing spaces and the text's
ends, collapse blank-line runs): near-duplicates are the MinHash step's job. Only a 16-byte
digest per kept row is held, so this runs in constant memory per row across shards.
"""

from __future__ import annotations

import hashlib
import re

import pyarrow as pa

from tasks.core.stats import StageStats

_BLANK_RUNS = re.compile(r"\n{3,}")


def normalise(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return _BLANK_RUNS.sub("\n\n", text)


def pair_digest(problem: str, solution: str) -> bytes:
    payload = normalise(problem) + "\x00" + normalise(solution)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).digest()


class ExactDeduper:
    """Keeps the first occurrence of each (problem, solution); feed it tables in a stable order."""

    REASON = "exact_duplicate"

    def __init__(self) -> None:
        self.seen: dict[bytes, str] = {}
        self.stats = StageStats("exact_dedup")

    def filter(self, table: pa.Table) -> tuple[pa.Table, list[dict]]:
        """Returns the kept rows and one audit record per dropped row."""
        keep, audit = [], []
        ids = table.column("id").to_pylist()
        for i, (row_id, problem, solution) in enumerate(
            zip(ids, table.column("problem").to_pylist(), table.column("solution").to_pylist())
        ):
            digest = pair_digest(problem, solution)
            first = self.seen.get(digest)
            if first is None:
                self.seen[digest] = row_id
                keep.append(i)
            else:
                audit.append(
                    {"id": row_id, "stage": "exact_dedup", "reason": self.REASON, "duplicate_of": first,
                     "problem": problem, "solution": solution}
                )
        self.stats.rows_in += table.num_rows
        self.stats.rows_out += len(keep)
        if audit:
            self.stats.drop(self.REASON, len(audit))
        return table.take(pa.array(keep, type=pa.int64())), audit
