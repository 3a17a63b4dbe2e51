"""The teacher path's parts on their own: limiter, in-flight slots, budget, permits, cache, requests."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from tasks.core import progress
from tasks.teacher.cache import CachedReply, RequestCache
from tasks.teacher.config import TeacherConfig
from tasks.teacher.limits import BatchedPermits, Budget, InFlightSlots, SlidingWindowLimiter
from tasks.teacher.retry import backoff_delay, classify_reply, retry_after_seconds
from tasks.teacher.session import TeacherSession
from tasks.teacher.tokens import derive_max_tokens
from tasks.teacher.transport import HttpReply


def max_in_window(times: list[float], window: float) -> int:
    best = start = 0
    for end in range(len(times)):
        while times[end] - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_sliding_window_rpm_holds_in_every_window():
    async def go():
        limiter = SlidingWindowLimiter(rpm=5, tpm=None, window_s=0.4)
        times = []

        async def one():
            await limiter.acquire()
            times.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(14)))
        return sorted(times)

    times = asyncio.run(go())
    assert max_in_window(times, 0.4) <= 5
    assert times[-1] - times[0] >= 0.8  # 14 requests need at least three windows


def test_sliding_window_tpm_and_an_oversized_request():
    async def go():
        limiter = SlidingWindowLimiter(rpm=None, tpm=100, window_s=0.3)
        stamps = []
        for tokens in (40, 40, 40, 250, 10):  # 250 > tpm: goes alone into an empty window
            await limiter.acquire(tokens)
            stamps.append((time.monotonic(), tokens))
        return stamps

    stamps = asyncio.run(go())
    for i, (t, _) in enumerate(stamps):
        in_window = sum(tok for s, tok in stamps[: i + 1] if t - s < 0.3)
        assert in_window <= 100 or in_window == stamps[i][1]


def test_pause_holds_new_requests():
    async def go():
        limiter = SlidingWindowLimiter(None, None)
        limiter.pause(0.3)
        started = time.monotonic()
        await limiter.acquire()
        return time.monotonic() - started

    assert asyncio.run(go()) >= 0.29


def test_in_flight_slots_cap_fifo_and_cancellation():
    async def go():
        slots = InFlightSlots(3)
        running = peak = 0
        order = []

        async def one(i):
            nonlocal running, peak
            async with slots:
                running += 1
                peak = max(peak, running)
                order.append(i)
                await asyncio.sleep(0.01)
                running -= 1

        await asyncio.gather(*(one(i) for i in range(50)))
        # a cancelled waiter gives up its place without leaking a slot
        async with slots, slots, slots:
            waiter = asyncio.ensure_future(one(99))
            await asyncio.sleep(0.01)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        await asyncio.gather(*(one(i) for i in range(100, 106)))
        return peak, order

    peak, order = asyncio.run(go())
    assert peak == 3
    assert order[:50] == list(range(50)) and 99 not in order and order[50:] == list(range(100, 106))


def test_budget_admits_until_spent_and_then_stops():
    budget = Budget(max_cost_usd=None, max_total_tokens=1000, price_in_per_mtok=0, price_out_per_mtok=0)
    first = budget.admit(100, 2500)
    assert first == 2500  # nothing seen yet: expect the worst
    assert budget.admit(100, 2500) is None and budget.stopped  # in-flight estimate already over
    budget.finish(100, first, (100, 150))
    assert budget.admit(100, 2500) is None  # stopped stays stopped
    fresh = Budget(None, 1000, 0, 0)
    out = fresh.admit(100, 2500)
    fresh.finish(100, out, (100, 150))
    assert fresh.admit(100, 2500) == 150  # the mean completion seen so far
    fresh.charge(300, 300)
    assert fresh.tokens_in + fresh.tokens_out == 850
    priced = Budget(max_cost_usd=1.0, max_total_tokens=None, price_in_per_mtok=1e6, price_out_per_mtok=2e6)
    assert priced.cost(1, 1) == pytest.approx(3.0)


def test_batched_permits_fetch_once_per_batch():
    fetched = []

    async def fetch(n):
        fetched.append(n)

    async def go():
        permits = BatchedPermits(fetch, batch=10)
        await asyncio.gather(*(permits.take() for _ in range(35)))
        return permits.fetches

    assert asyncio.run(go()) == 4 and fetched == [10, 10, 10, 10]


def test_retry_policy():
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({}) is None
    assert classify_reply(HttpReply(200, {}, b'{"choices": [{"message": {"content": "x"}}]}')).action == "ok"
    assert classify_reply(HttpReply(200, {}, b'{"choices": [{"mess')).reason == "malformed_body"
    assert classify_reply(HttpReply(200, {}, b'{"choices": []}')).reason == "malformed_body"
    assert classify_reply(HttpReply(429, {"retry-after": "3"}, b"{}")).retry_after_s == 3.0
    quota = b'{"error": {"code": "insufficient_quota", "message": "You exceeded your current quota"}}'
    assert classify_reply(HttpReply(429, {}, quota)).action == "quota"
    ctx = b'{"error": {"message": "This model\'s maximum context length is 8192 tokens", "code": null}}'
    assert classify_reply(HttpReply(400, {}, ctx)).reason == "http_400_context_length"
    assert classify_reply(HttpReply(400, {}, b"bad")).reason == "http_400"
    assert classify_reply(HttpReply(401, {}, b"")).action == "auth"
    assert classify_reply(HttpReply(503, {}, b"")).action == "retry"
    assert classify_reply(HttpReply(404, {}, b"")).action == "fail"
    for attempt in range(1, 10):
        delay = backoff_delay(attempt, 0.5, 8.0)
        step = min(8.0, 0.5 * 2 ** (attempt - 1))
        assert step / 2 <= delay <= step
    assert 3.0 <= backoff_delay(1, 0.5, 1.0, retry_after_s=3.0) <= 3.3  # the server's wait wins over the cap


def _row(key: str, content: str = "x") -> CachedReply:
    return CachedReply(key, "m", content, "stop", 10, 20, "fp", 2500, 976, 1_700_000_000_000_000)


def test_cache_batches_commits_and_persists_before_returning(tmp_path):
    path = tmp_path / "requests.sqlite"

    async def go():
        cache = RequestCache(path)
        seen_by_other_process = []

        async def put(i):
            await cache.put(_row(f"k{i}", f"reply {i}"))
            # once put returns, another connection (another process) sees the row
            with sqlite3.connect(path) as other:
                seen_by_other_process.append(other.execute("SELECT 1 FROM replies WHERE key=?", (f"k{i}",)).fetchone())

        await asyncio.gather(*(put(i) for i in range(500)))
        found = cache.lookup([f"k{i}" for i in range(0, 600, 7)])
        commits = cache.commits
        await cache.aclose()
        return seen_by_other_process, found, commits

    seen, found, commits = asyncio.run(go())
    assert all(seen) and len(seen) == 500
    assert set(found) == {f"k{i}" for i in range(0, 500, 7)}
    assert found["k7"].content == "reply 7"
    assert commits < 50  # batched, not one transaction per reply


def test_shortcut_max_tokens_equals_exact_count():
    """Skipping tiktoken for short prompts never changes max_tokens (paper's rule)."""
    cfg = TeacherConfig(base_url="http://127.0.0.1:9/v1", model="m")
    session = TeacherSession(cfg)
    line = "    total = sum(value * weight for value, weight in zip(values, weights))  # é\n"
    for n_lines in (1, 15, 60, 70, 75, 80, 90, 200, 400):
        snippet = line * n_lines
        req = session.build_request(0, snippet)
        exact = derive_max_tokens(
            session.counter.count(session_user_prompt(snippet)), cfg.context_size, cfg.max_tokens_cap
        )
        assert req.max_tokens == exact, n_lines


def session_user_prompt(snippet: str) -> str:
    from tasks.teacher.prompts import build_messages

    return build_messages(snippet)[1]["content"]


def test_request_key_is_a_content_address():
    cfg = TeacherConfig(base_url="http://127.0.0.1:9/v1", model="m")
    a = TeacherSession(cfg).build_request(5, "x = 1")
    assert a.key == TeacherSession(cfg).build_request(5, "x = 1").key
    assert a.request_seed == 981
    assert a.key != TeacherSession(cfg).build_request(6, "x = 1").key  # seed
    assert a.key != TeacherSession(cfg).build_request(5, "x = 2").key  # messages
    assert a.key != TeacherSession(cfg.model_copy(update={"temperature": 0.7})).build_request(5, "x = 1").key
    assert a.key != TeacherSession(cfg.model_copy(update={"model": "n"})).build_request(5, "x = 1").key
    # where the session runs does not change what it asks
    assert a.key == TeacherSession(cfg.model_copy(update={"base_url": "http://other/v1"})).build_request(5, "x = 1").key


def test_progress_channel_counts_replies(fake_teacher):
    import pyarrow as pa

    counts = {}
    totals = {}

    def listener(what, advance, total):
        counts[what] = counts.get(what, 0) + advance
        if total is not None:
            totals[what] = total

    progress.listen(listener)
    try:
        cfg = TeacherConfig(base_url=fake_teacher.base_url, model="m", api_key_env="")

        async def go():
            async with TeacherSession(cfg) as session:
                session.expected_replies = 12
                await session.complete_shard(pa.table({"seed_index": [0, 1, 2, 3, 4, 5], "seed": ["a"] * 6}))

        asyncio.run(go())
    finally:
        progress.clear()
    assert counts["teacher replies"] == 6 and totals["teacher replies"] == 12
