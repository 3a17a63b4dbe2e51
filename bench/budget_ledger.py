"""Hot-path cost of the run's spend ledger: admit + finish per request, in-memory budget vs
a budget backed by the shared SQLite ledger (chunked reservations), same run.

    .venv/bin/python bench/budget_ledger.py [requests]

Prints one JSON line: microseconds per request each way and the ledger's transactions."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.teacher.ledger import SpendLedger  # noqa: E402
from tasks.teacher.limits import Budget  # noqa: E402


def per_request_us(budget: Budget, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        out = budget.admit(400, 2500)
        budget.finish(400, out, (400, 300))
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    limit = n * 10_000  # never reached: the cost measured is the bookkeeping's
    plain = per_request_us(Budget(1e9, limit, 0.5, 1.5), n)
    with tempfile.TemporaryDirectory() as d:
        ledger = SpendLedger(Path(d) / "budget.sqlite", limit, 1e9)
        shared = Budget(1e9, limit, 0.5, 1.5, ledger=ledger)
        with_ledger = per_request_us(shared, n)
        transactions = ledger.transactions
        shared.close()
    print(json.dumps({
        "bench": "budget_ledger", "requests": n, "in_memory_us_per_request": round(plain, 2),
        "ledger_us_per_request": round(with_ledger, 2), "ledger_transactions": transactions,
        "ratio": round(with_ledger / plain, 2), "share_of_a_request_at_600_per_s": round(with_ledger / (1e6 / 600), 4),
    }))


if __name__ == "__main__":
    main()
