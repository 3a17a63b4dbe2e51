"""One spend ledger per run, shared by every process that sends to the teacher.

A multi-worker refresh runs each generation shard as its own flow run, often in another
process or on another worker; a budget kept in one process's memory would let every
shard spend the whole `max_cost_usd`. The run's budget lives instead in a small SQLite
file beside the reply cache (WAL mode: readers never block, one writer at a time), with
one row per sending process (a *holder*).

Before a request is sent its worst case (prompt + max_tokens, and that at the prices) is
reserved; when it is done the reservation is settled with the real usage. To keep the
hot path off the disk, a holder reserves a chunk of worst cases at once and hands them
out from memory; only an empty chunk costs a transaction. The run's commitment is

    sum over holders of (spent + possibly billed + reserved)

and a chunk is granted only while it is below the limit, so whatever mix of processes
sends, the run stops at the budget (plus at most one worst-case request: a budget smaller
than one request still buys one). Near the end chunks shrink to a single request, and a
holder whose request does not fit waits for the reservations in flight to settle.

A holder that dies (kill -9, a lost worker) cannot settle. Its row is found by the next
transaction of any holder: its process is gone (same host) or its heartbeat is older than
the lease (any host). What it had reserved counts as possibly billed: its requests may
have reached the provider, so the guard stays closed rather than hand the money out again.
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# Quantities are (tokens, usd) pairs: the two things a budget can limit.
Amount = tuple[float, float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS holders (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    beat REAL NOT NULL,              -- last transaction (unix s): the lease runs from here
    live INTEGER NOT NULL DEFAULT 1,
    reserved_tok REAL NOT NULL DEFAULT 0, reserved_usd REAL NOT NULL DEFAULT 0,
    spent_tok REAL NOT NULL DEFAULT 0, spent_usd REAL NOT NULL DEFAULT 0,
    billed_tok REAL NOT NULL DEFAULT 0, billed_usd REAL NOT NULL DEFAULT 0
)
"""


@dataclass
class Usage:
    """What a holder did since its last transaction (each an Amount)."""

    from_reserved: Amount = (0.0, 0.0)  # spend its reservations covered
    extra_spent: Amount = (0.0, 0.0)  # spend nobody reserved (cache hits: paid earlier; a reply over its worst case)
    extra_billed: Amount = (0.0, 0.0)  # possibly billed by failed attempts
    released: Amount = (0.0, 0.0)  # reservations handed back unused

    def empty(self) -> bool:
        return not any(any(v) for v in (self.from_reserved, self.extra_spent, self.extra_billed, self.released))


@dataclass
class Grant:
    """The answer to a reservation: `amount` granted, or none, then `wait` (reservations
    in flight may settle below the limit) or exhausted (nothing can free up)."""

    amount: Amount | None
    wait: bool = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SpendLedger:
    """A holder's connection to the run's ledger file (one per process, opened by its Budget)."""

    def __init__(self, path: str | Path, max_tokens: float | None, max_usd: float | None, lease_s: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.limits = (math.inf if max_tokens is None else float(max_tokens), math.inf if max_usd is None else float(max_usd))
        self.lease_s = lease_s
        self.host = socket.gethostname()
        self.holder = uuid.uuid4().hex
        self.transactions = 0
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        self._db.execute(_SCHEMA)
        with self._transaction():
            self._db.execute(
                "INSERT INTO holders (id, host, pid, beat) VALUES (?, ?, ?, ?)",
                (self.holder, self.host, os.getpid(), time.time()),
            )

    # ------------------------------------------------------------------ transactions
    def _transaction(self):
        ledger = self

        class _Tx:
            def __enter__(self):
                ledger._db.execute("BEGIN IMMEDIATE")  # one writer: read-then-grant is atomic
                ledger.transactions += 1

            def __exit__(self, exc_type, *rest):
                ledger._db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    def _settle(self, usage: "Usage") -> None:
        """Move used reservations to spend, add spend that was never reserved, give back released."""
        r, x, b, f = usage.from_reserved, usage.extra_spent, usage.extra_billed, usage.released
        self._db.execute(
            "UPDATE holders SET beat = ?, reserved_tok = reserved_tok - ? - ?, reserved_usd = reserved_usd - ? - ?, "
            "spent_tok = spent_tok + ? + ?, spent_usd = spent_usd + ? + ?, "
            "billed_tok = billed_tok + ?, billed_usd = billed_usd + ? WHERE id = ?",
            (time.time(), r[0], f[0], r[1], f[1], r[0], x[0], r[1], x[1], b[0], b[1], self.holder),
        )

    def _expire_dead(self, now: float) -> None:
        rows = self._db.execute("SELECT id, host, pid, beat FROM holders WHERE live = 1 AND id != ?", (self.holder,))
        dead = [
            hid for hid, host, pid, beat in rows.fetchall()
            if (host == self.host and not _pid_alive(pid)) or beat < now - self.lease_s
        ]
        for hid in dead:
            # Its reservations may have been sent: possibly billed, never handed out again.
            self._db.execute(
                "UPDATE holders SET live = 0, billed_tok = billed_tok + reserved_tok, billed_usd = billed_usd + reserved_usd, "
                "reserved_tok = 0, reserved_usd = 0 WHERE id = ?",
                (hid,),
            )

    def _committed(self) -> tuple[Amount, Amount]:
        """(committed, of which still reserved by live holders) over the whole run."""
        tok, usd, rtok, rusd = self._db.execute(
            "SELECT COALESCE(SUM(spent_tok + billed_tok + reserved_tok), 0), COALESCE(SUM(spent_usd + billed_usd + reserved_usd), 0), "
            "COALESCE(SUM(reserved_tok), 0), COALESCE(SUM(reserved_usd), 0) FROM holders"
        ).fetchone()
        return (tok, usd), (rtok, rusd)

    # ------------------------------------------------------------------ the holder's calls
    def reserve(self, one: Amount, most: int, usage: "Usage") -> Grant:
        """Settle what this holder used since its last call (its unused reservation released
        in `usage`: less than one request is no use to it), then reserve up to `most` times
        `one` (a request's worst case) while the run's commitment is below the limits."""
        now = time.time()
        with self._transaction():
            self._settle(usage)
            self._expire_dead(now)
            committed, reserved = self._committed()
            room = [limit - used for limit, used in zip(self.limits, committed)]
            if any(r <= 0 for r in room):
                # Full. Reservations in flight (this holder's or others') may settle lower.
                return Grant(None, wait=any(r > 1e-9 for r in reserved))
            # Leave room for the other holders: at most half of what is left, at least one request.
            fits = min((r / 2) / o if o > 0 else math.inf for r, o in zip(room, one))
            k = max(1, min(most, int(fits)))
            amount = (one[0] * k, one[1] * k)
            self._db.execute(
                "UPDATE holders SET reserved_tok = reserved_tok + ?, reserved_usd = reserved_usd + ? WHERE id = ?",
                (amount[0], amount[1], self.holder),
            )
            return Grant(amount)

    def settle(self, usage: "Usage") -> None:
        """Record usage (and hand back unused reservations); doubles as the heartbeat."""
        with self._transaction():
            self._settle(usage)

    def spent(self) -> Amount:
        """The run's settled spend, possibly billed included (reservations not)."""
        with self._transaction():
            self._expire_dead(time.time())
            row = self._db.execute(
                "SELECT COALESCE(SUM(spent_tok + billed_tok), 0), COALESCE(SUM(spent_usd + billed_usd), 0) FROM holders"
            ).fetchone()
        return row[0], row[1]

    def close(self, usage: "Usage") -> None:
        """The holder is done: settle, give back what it did not use, leave the lease."""
        with self._transaction():
            self._settle(usage)
            self._db.execute(
                "UPDATE holders SET live = 0, billed_tok = billed_tok + MAX(reserved_tok, 0), "
                "billed_usd = billed_usd + MAX(reserved_usd, 0), reserved_tok = 0, reserved_usd = 0 WHERE id = ?",
                (self.holder,),
            )
        self._db.close()


def run_totals(path: str | Path) -> dict:
    """What a run's ledger holds (for tests and the manifest): spend, possibly billed, reserved, holders."""
    db = sqlite3.connect(path, timeout=60)
    try:
        row = db.execute(
            "SELECT COALESCE(SUM(spent_tok),0), COALESCE(SUM(spent_usd),0), COALESCE(SUM(billed_tok),0), "
            "COALESCE(SUM(billed_usd),0), COALESCE(SUM(reserved_tok),0), COUNT(*) FROM holders"
        ).fetchone()
    finally:
        db.close()
    keys = ("spent_tokens", "spent_usd", "possibly_billed_tokens", "possibly_billed_usd", "reserved_tokens", "holders")
    return dict(zip(keys, row))


# ----------------------------------------------------------------------------- one TPM window per run
_WINDOW_SCHEMA = "CREATE TABLE IF NOT EXISTS tpm_window (at REAL NOT NULL, tokens REAL NOT NULL)"


class SharedTokenWindow:
    """The run's tokens-per-minute window, shared by every process through the ledger file.

    A process takes tokens a chunk at a time (about `hold_s` seconds' worth of the rate),
    recorded with the time it took them; a chunk is good for `hold_s` seconds, then what
    is left of it is dropped (it stays counted: the window may only err on the safe side).
    A chunk is granted only while the tokens taken in the last window (plus the margin for
    a request to reach the server, plus `hold_s`, during which a chunk may still be used)
    and the chunk stay within `tpm`. So however many processes send, no window the provider
    sees holds more than `tpm` tokens. Per request it is memory only; one transaction per
    chunk (~1 per `hold_s` per busy process).
    """

    def __init__(self, path: str | Path, tpm: int, window_s: float = 60.0, hold_s: float | None = None):
        self.tpm = tpm
        self.hold_s = hold_s = window_s / 60 if hold_s is None else hold_s  # 1 s of a minute
        self.horizon_s = window_s + max(0.25, 0.01 * window_s) + hold_s
        self.chunk = max(1.0, tpm * hold_s / window_s)
        self._left = 0.0
        self._good_until = 0.0
        self._lock = None
        self.transactions = 0
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_WINDOW_SCHEMA)

    async def take(self, tokens: int) -> None:
        import asyncio

        if self._left >= tokens and time.monotonic() < self._good_until:
            self._left -= tokens
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one chunk request per process at a time; the rest queue in order
            while not (self._left >= tokens and time.monotonic() < self._good_until):
                wait = self._grant(tokens)
                if wait > 0:
                    await asyncio.sleep(wait)
            self._left -= tokens

    def _grant(self, tokens: int) -> float:
        """Take a chunk (at least `tokens`) if the window has room: 0, else seconds to wait."""
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        self.transactions += 1
        try:
            self._db.execute("DELETE FROM tpm_window WHERE at <= ?", (now - self.horizon_s,))
            rows = self._db.execute("SELECT at, tokens FROM tpm_window ORDER BY at").fetchall()
            used = sum(t for _, t in rows)
            room = self.tpm - used
            if room >= tokens or not rows:  # a request larger than the whole tpm goes alone into an empty window
                granted = max(float(tokens), min(self.chunk, room))
                self._db.execute("INSERT INTO tpm_window (at, tokens) VALUES (?, ?)", (now, granted))
                self._db.execute("COMMIT")
                self._left, self._good_until = granted, time.monotonic() + self.hold_s
                return 0.0
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        # Wait until enough of the oldest grants leave the window.
        excess, freed = tokens - room, 0.0
        for at, t in rows:
            freed += t
            if freed >= excess:
                return max(1e-3, at + self.horizon_s - now + 1e-3)
        return max(1e-3, rows[-1][0] + self.horizon_s - now + 1e-3)

    def close(self) -> None:
        self._db.close()
