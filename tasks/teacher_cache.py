"""The request cache: every teacher reply, stored under its request's content address.

A reply is committed here before anyone uses it, so a run killed at any moment (kill -9)
and started again re-sends nothing that already succeeded, and writes the same rows (the
reply's `received_at` comes back from here too).

SQLite in WAL mode with synchronous=NORMAL: a commit survives the process being killed
(it is in the WAL file; only an OS crash could lose the last commits, which then are just
re-sent). Writes are batched: replies queue on the event loop and one flush commits them
all in one transaction, then wakes every waiter at once, so thousands of replies a second
cost a handful of commits and no thread hops. Only replies the server answered in full
are stored; failures are retried by the next run. No request text and no credential is
ever stored: the key is a hash, the row is the reply.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    content TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    system_fingerprint TEXT,
    max_tokens INTEGER NOT NULL,
    request_seed INTEGER NOT NULL,
    received_at_us INTEGER NOT NULL
) WITHOUT ROWID
"""
_COLUMNS = (
    "key",
    "model",
    "content",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "system_fingerprint",
    "max_tokens",
    "request_seed",
    "received_at_us",
)
_INSERT = f"INSERT OR IGNORE INTO replies ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_LOOKUP_CHUNK = 500  # well under SQLite's bound-variable limit


@dataclass(frozen=True)
class CachedReply:
    key: str
    model: str
    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    system_fingerprint: str | None
    max_tokens: int
    request_seed: int
    received_at_us: int  # microseconds since the epoch, UTC

    def as_row(self) -> tuple:
        return tuple(getattr(self, name) for name in _COLUMNS)


class RequestCache:
    def __init__(self, path: str | Path, flush_interval_s: float = 0.01, max_batch: int = 2000):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")  # other worker processes may be committing
        self._db.execute(_SCHEMA)
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self._pending: list[tuple] = []
        self._batch_done: asyncio.Future | None = None
        self._flusher: asyncio.TimerHandle | None = None
        self.commits = 0
        self.rows_written = 0

    # --------------------------------------------------------------- reads
    def lookup(self, keys: list[str]) -> dict[str, CachedReply]:
        found: dict[str, CachedReply] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {', '.join(_COLUMNS)} FROM replies WHERE key IN ({marks})"
            for row in self._db.execute(query, chunk):
                found[row[0]] = CachedReply(*row)
        return found

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM replies").fetchone()[0]

    # --------------------------------------------------------------- writes
    async def put(self, reply: CachedReply) -> None:
        """Queue a reply and return once the transaction holding it has committed."""
        loop = asyncio.get_running_loop()
        if self._batch_done is None:
            self._batch_done = loop.create_future()
            self._flusher = loop.call_later(self.flush_interval_s, self.flush)
        done = self._batch_done
        self._pending.append(reply.as_row())
        if len(self._pending) >= self.max_batch:
            self.flush()
        await asyncio.shield(done)  # a cancelled waiter must not cancel the batch

    def flush(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        rows, self._pending = self._pending, []
        done, self._batch_done = self._batch_done, None
        if not rows:
            if done is not None and not done.done():
                done.set_result(None)
            return
        try:
            # One transaction per batch; under WAL + synchronous=NORMAL a commit is a
            # write to the WAL file (no fsync), well under a millisecond for a batch.
            self._db.execute("BEGIN")
            self._db.executemany(_INSERT, rows)
            self._db.execute("COMMIT")
        except BaseException as exc:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if done is not None and not done.done():
                done.set_exception(exc)
            return
        self.commits += 1
        self.rows_written += len(rows)
        if done is not None and not done.done():
            done.set_result(None)

    def close(self) -> None:
        self.flush()
        self._db.close()
