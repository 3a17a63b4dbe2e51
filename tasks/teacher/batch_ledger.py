"""The batch ledger: which requests went into which batch, so nothing is submitted twice.

A small SQLite file beside the reply cache (`batches.sqlite`). Every step of a submission
is committed before the next one starts, so a run killed at any point (kill -9) and rerun
finds where it stopped:

  planned   the plan (local id, its request keys) is committed before the input file is
            uploaded; a plan with no batch behind it is dropped and its requests planned
            again (nothing was submitted);
  uploaded  the input file's id is committed as soon as the upload returns; before a batch
            is created for it, the provider's batch list is searched for one already made
            from that file (a kill between `batches.create` and its reply), so a crash
            there never creates a second batch;
  submitted the batch id, committed the moment `batches.create` returns;
  ingested  its replies are in the reply cache and every request's outcome is recorded.

A rerun re-attaches to every submitted, not yet ingested batch that holds one of its
requests. Outcomes of ingested batches say which requests expired or failed, and how many
batches each already went through (the retry rounds).

WAL + busy timeout: shard workers in other processes may share the file.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS batches (
        local_id TEXT PRIMARY KEY,
        scope TEXT NOT NULL,           -- the reply cache scope (endpoint) the batch answers for
        round INTEGER NOT NULL,        -- 0 for first submissions, n for the n-th retry batch
        input_path TEXT NOT NULL,
        input_file_id TEXT,
        batch_id TEXT,
        status TEXT NOT NULL,          -- planned | uploaded | submitted | ingested
        requests INTEGER NOT NULL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS batch_requests (
        key TEXT NOT NULL,
        local_id TEXT NOT NULL,
        outcome TEXT,                  -- NULL until ingested; "ok" or the failure reason
        PRIMARY KEY (key, local_id)
    )""",
    "CREATE INDEX IF NOT EXISTS batch_requests_local ON batch_requests (local_id)",
)
_CHUNK = 500  # bound variables per query, well under SQLite's limit


@dataclass(frozen=True)
class LedgerBatch:
    local_id: str
    round: int
    input_path: str
    input_file_id: str | None
    batch_id: str | None
    status: str
    requests: int


class BatchLedger:
    def __init__(self, path: str | Path, scope: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scope = scope
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a commit survives kill -9 (it is in the WAL)
        self._db.execute("PRAGMA busy_timeout=30000")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ reads
    def _batches_of(self, keys: list[str], where: str) -> list[LedgerBatch]:
        found: dict[str, LedgerBatch] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            rows = self._db.execute(
                f"""SELECT DISTINCT b.local_id, b.round, b.input_path, b.input_file_id, b.batch_id, b.status, b.requests
                    FROM batch_requests r JOIN batches b ON b.local_id = r.local_id
                    WHERE b.scope = ? AND {where} AND r.key IN ({",".join("?" * len(chunk))})""",
                [self.scope, *chunk],
            )
            for row in rows:
                found[row[0]] = LedgerBatch(*row)
        return sorted(found.values(), key=lambda b: b.local_id)

    def unfinished(self, keys: list[str]) -> list[LedgerBatch]:
        """Batches not yet ingested that hold any of `keys` (planned, uploaded or submitted)."""
        return self._batches_of(keys, "b.status != 'ingested'")

    def keys_of(self, local_id: str) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT key FROM batch_requests WHERE local_id = ?", (local_id,))]

    def history(self, keys: list[str]) -> dict[str, tuple[int, str]]:
        """Per key that went through ingested batches: (how many, the latest outcome)."""
        seen: dict[str, tuple[int, str]] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            rows = self._db.execute(
                f"""SELECT r.key, r.outcome FROM batch_requests r JOIN batches b ON b.local_id = r.local_id
                    WHERE b.scope = ? AND b.status = 'ingested' AND r.key IN ({",".join("?" * len(chunk))})
                    ORDER BY b.round, b.created_at""",
                [self.scope, *chunk],
            )
            for key, outcome in rows:  # oldest first: the last one seen is the latest
                seen[key] = (seen.get(key, (0, ""))[0] + 1, outcome)
        return seen

    def counts(self) -> Counter:
        """Batches by status (for stats and tests)."""
        return Counter(dict(self._db.execute("SELECT status, count(*) FROM batches GROUP BY status").fetchall()))

    # ------------------------------------------------------------------ writes (each one commit)
    def plan(self, local_id: str, round_no: int, input_path: str, keys: list[str]) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO batches VALUES (?, ?, ?, ?, NULL, NULL, 'planned', ?, ?)",
                (local_id, self.scope, round_no, input_path, len(keys), time.time()),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO batch_requests (key, local_id) VALUES (?, ?)", [(k, local_id) for k in keys]
            )

    def drop_plan(self, local_id: str) -> None:
        """A plan that never became a batch: forget it, its requests are planned again."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM batch_requests WHERE local_id = ?", (local_id,))
            self._db.execute("DELETE FROM batches WHERE local_id = ? AND batch_id IS NULL", (local_id,))

    def uploaded(self, local_id: str, input_file_id: str) -> None:
        self._db.execute(
            "UPDATE batches SET input_file_id = ?, status = 'uploaded' WHERE local_id = ?", (input_file_id, local_id)
        )

    def submitted(self, local_id: str, batch_id: str) -> None:
        self._db.execute("UPDATE batches SET batch_id = ?, status = 'submitted' WHERE local_id = ?", (batch_id, local_id))

    def ingested(self, local_id: str, outcomes: dict[str, str]) -> None:
        """Record every request's outcome ("ok" or a reason) and close the batch, in one commit."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE batch_requests SET outcome = ? WHERE local_id = ? AND key = ?",
                [(outcome, local_id, key) for key, outcome in outcomes.items()],
            )
            self._db.execute("UPDATE batches SET status = 'ingested' WHERE local_id = ?", (local_id,))
