"""One budget for the whole run, however many processes send (issue 14).

Each shard of a multi-worker refresh runs in its own process with its own TeacherSession;
before the run ledger each one had a fresh Budget, so two workers spent twice the budget."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.teacher.ledger import SpendLedger, Usage, run_totals
from tasks.teacher.limits import Budget
from teacher.test_teacher import fake_teacher_process  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[2]

# A shard worker in miniature: one process, one TeacherSession, its own seeds, the run's ledger.
WORKER = r"""
import asyncio, json, sys
sys.path[:0] = [sys.argv[5], sys.argv[5] + "/tests"]
from tasks.teacher.config import TeacherConfig
from tasks.teacher.session import TeacherSession
from teacher.test_teacher import seeds_table

url, limits, ledger, start = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
seeds = limits.pop("seeds", 40)
cfg = TeacherConfig(base_url=url, model="fake-teacher", api_key_env="", concurrency=16, retry_base_s=0.01,
                    retry_max_s=0.05, **limits)

async def main():
    async with TeacherSession(cfg, ledger_path=ledger) as session:
        replies, stats = await session.complete_shard(seeds_table(seeds, start=start))
    print(json.dumps({"tokens": stats.extra["tokens_in"] + stats.extra["tokens_out"], "rows": stats.rows_out,
                      "dropped": stats.dropped}))

asyncio.run(main())
"""


def two_workers(url: str, limits: dict, ledger: Path) -> list[dict]:
    """Two worker processes, each with its own seeds, started together; their shard stats."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, json.dumps(limits), str(ledger), str(start), str(REPO)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for start in (0, 1000)
    ]
    results = []
    for proc in workers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_worker_processes_share_one_budget(fake_teacher, tmp_path):
    from teacher.test_teacher import config, run, seeds_table

    probe, _, _ = run(config(fake_teacher.base_url), seeds_table(1))
    per_request = probe[0].prompt_tokens + probe[0].completion_tokens
    budget = per_request * 40  # half of the 80 seeds the two workers hold
    fake_teacher.reset()
    ledger = tmp_path / "cache" / "budget-run.sqlite"
    results = two_workers(fake_teacher.base_url, {"max_total_tokens": budget}, ledger)

    spent = sum(r["tokens"] for r in results)
    sent = fake_teacher.stats()["requests"]
    # Each worker alone would have bought ~40 rows (the whole budget): 80 in all, twice the budget.
    assert budget <= spent <= budget + 2 * per_request, (spent, budget, results)
    assert sent <= 42 and sum(r["rows"] for r in results) == sent
    assert sum(r["dropped"].get("budget_exhausted", 0) for r in results) == 80 - sent  # counted drops, not lost
    totals = run_totals(ledger)
    assert totals["spent_tokens"] == pytest.approx(spent) and totals["holders"] == 2
    assert totals["reserved_tokens"] == pytest.approx(0) and totals["possibly_billed_tokens"] == pytest.approx(0)


def test_two_worker_processes_share_one_tpm_window(fake_teacher_process, tmp_path):
    limits = {"tpm": 900, "max_tokens_cap": 40, "rate_window_s": 1.0, "seeds": 16}
    results = two_workers(fake_teacher_process.base_url, limits, tmp_path / "budget.sqlite")
    server = fake_teacher_process.stats(window=1.0)
    assert sum(r["rows"] for r in results) == 32
    # Each process alone keeps its own windows at 900: together they sent up to twice that.
    assert 0 < server["max_tokens_in_window"] <= 900, server


HOLDER = r"""
import sys, time
sys.path[:0] = [sys.argv[2]]
from tasks.teacher.ledger import SpendLedger, Usage
ledger = SpendLedger(sys.argv[1], max_tokens=10_000, max_usd=None)
grant = ledger.reserve((1000.0, 0.0), 3, Usage())
print(grant.amount[0], flush=True)
time.sleep(600)
"""


def test_a_dead_workers_reservation_counts_as_possibly_billed(tmp_path):
    path = tmp_path / "budget.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(REPO)], stdout=subprocess.PIPE, text=True)
    reserved = float(proc.stdout.readline())
    assert reserved == 3000.0
    os.kill(proc.pid, signal.SIGKILL)  # mid-request: it never settles
    proc.wait()

    budget = Budget(None, 10_000, 0, 0, ledger=SpendLedger(path, 10_000, None))
    admitted = [budget.admit(100, 900) for _ in range(8)]
    # 3,000 of the 10,000 went with the dead worker (it may have sent them): 7 worst cases of 1,000 remain;
    # the 8th waits for this process's own requests in flight.
    assert sum(a is not None for a in admitted) == 7 and budget.waiting and not budget.stopped
    assert run_totals(path)["possibly_billed_tokens"] == 3000.0
    for a in admitted[:7]:
        budget.finish(100, a, (100, 50))
    bought = 7
    time.sleep(0.06)  # a process that found the ledger full asks it again after a short pause
    while (a := budget.admit(100, 900)) is not None:
        budget.finish(100, a, (100, 50))
        bought += 1
    assert budget.stopped  # nothing in flight anywhere: the run's budget is spent
    budget.close()
    totals = run_totals(path)
    # Bought until spend + possibly billed reached the limit: (10,000 - 3,000) / 150 = 46.7 -> 47.
    assert bought == 47 and totals["spent_tokens"] == 47 * 150 and totals["reserved_tokens"] == pytest.approx(0)


def test_a_full_ledger_waits_for_reservations_in_flight():
    """Near the limit a process waits for others' reservations to settle, then buys the rest."""

    async def go(path):
        a = Budget(None, 1000, 0, 0, ledger=SpendLedger(path, 1000, None))
        b = Budget(None, 1000, 0, 0, ledger=SpendLedger(path, 1000, None))
        first = a.admit(100, 900)  # the worst case fills the budget
        assert first is not None
        assert b.admit(100, 900) is None and b.waiting and not b.stopped

        async def settle_soon():
            await asyncio.sleep(0.2)
            a.finish(100, first, (100, 50))
            a.sync()  # nothing in flight: a's unused reservation goes back

        settle = asyncio.ensure_future(settle_soon())
        second = await b.admit_when_room(100, 900)
        await settle
        assert second is not None
        b.finish(100, second, (100, 50))
        a.close()
        b.close()
        return run_totals(path)

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        totals = asyncio.run(go(Path(d) / "l.sqlite"))
    assert totals["spent_tokens"] == 300 and totals["reserved_tokens"] == pytest.approx(0)
