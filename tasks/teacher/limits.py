"""Provider limits for the teacher fan-out: requests/tokens per minute, cool-downs, budgets.

Providers count requests and tokens per rolling minute. A leaky or token bucket lets a
full bucket burst and then refill, which can put up to twice the budget inside one
60-second window; the sliding-window limiter here admits a request only when the last
window (plus a small margin for the time the request takes to reach the server) holds
fewer than `rpm` requests and at most `tpm` tokens, so no window ever goes over.

All of it lives on one event loop: every shard task of a flow run shares one limiter and
one budget, so limits are shared, not multiplied. Across processes, the budget and the
TPM window are the run's through a shared ledger file (tasks/teacher/ledger.py), and
`BatchedPermits` takes permits from a global limit (a Prefect rate limit) a batch at a
time, never per request.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Awaitable, Callable

from tasks.teacher.ledger import SpendLedger, Usage


class SlidingWindowLimiter:
    def __init__(self, rpm: int | None, tpm: int | None, window_s: float = 60.0):
        if rpm is not None and rpm <= 0:
            raise ValueError("rpm must be positive")
        if tpm is not None and tpm <= 0:
            raise ValueError("tpm must be positive")
        self.rpm = rpm
        self.tpm = tpm
        # The margin covers the gap between admitting a request here and the server
        # stamping its arrival (network, a busy server working through a burst), so the
        # server's own count of any window stays within the limits. 0.6 s of a minute.
        self.window_s = window_s + max(0.25, 0.01 * window_s)
        self._sent: deque[tuple[float, int]] = deque()  # (admitted at, tokens)
        self._tokens_in_window = 0
        self._lock = asyncio.Lock()  # waiters queue in arrival order
        self._paused_until = 0.0
        self.waited_s = 0.0  # total time requests spent waiting here (for stats)

    @property
    def active(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def pause(self, seconds: float) -> None:
        """A provider said "retry after N s": no new request leaves before then."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self, tokens: int = 0) -> None:
        if not self.active and self._paused_until <= time.monotonic():
            return  # the common, unlimited case: no lock, no clock bookkeeping
        async with self._lock:
            started = time.monotonic()
            while True:
                now = time.monotonic()
                wait = self._paused_until - now
                if wait <= 0:
                    wait = self._wait_for_room(now, tokens)
                if wait <= 0:
                    if self.active:
                        self._sent.append((now, tokens))
                        self._tokens_in_window += tokens
                    self.waited_s += now - started
                    return
                await asyncio.sleep(wait)

    def _wait_for_room(self, now: float, tokens: int) -> float:
        sent = self._sent
        horizon = now - self.window_s
        while sent and sent[0][0] <= horizon:
            self._tokens_in_window -= sent.popleft()[1]
        wait = 0.0
        if self.rpm is not None and len(sent) >= self.rpm:
            wait = sent[len(sent) - self.rpm][0] - horizon
        if self.tpm is not None and sent and self._tokens_in_window + tokens > self.tpm:
            # Wait until enough of the oldest requests leave the window. A request larger
            # than the whole budget goes alone into an empty window rather than never.
            excess = self._tokens_in_window + tokens - self.tpm
            freed = 0
            for admitted_at, used in sent:
                freed += used
                if freed >= excess:
                    wait = max(wait, admitted_at - horizon)
                    break
            else:
                wait = max(wait, sent[-1][0] - horizon)
        return wait + 1e-3 if wait > 0 else 0.0


class Admission(float):
    """`Budget.admit`'s answer: the expected completion tokens (a float, as before), carrying
    the worst case it reserved in the run's ledger so `finish` can settle it."""

    reserved: tuple[float, float] = (0.0, 0.0)


class Budget:
    """Stops new teacher requests once the run's spend would pass `max_cost_usd` or `max_total_tokens`.

    Spend counts the replies this dataset already holds (cache hits: paid for earlier) and
    the ones received now. A new request starts only while spend so far plus the expected
    cost of the requests in flight is below the budget; expected cost is the prompt plus
    the mean completion seen so far (max_tokens until the first reply). So a run ends at
    most about one request's cost over the budget, and a budget smaller than one
    worst-case request still buys one. After the first refusal no new request starts:
    the run is "stopped by budget", and what is in flight finishes and is recorded.

    A request that timed out, lost its connection or came back cut short may still have
    been billed by the provider (it saw the prompt, and may have generated): its prompt
    tokens count as "possibly billed" (`charge_possibly_billed`), against the budget too,
    and a retry is refused once the spend so counted reaches the budget.

    With a `SpendLedger` (tasks/teacher/ledger.py) the budget is the whole run's, however
    many processes send: each admitted request also reserves its worst case (prompt +
    max_tokens) in the shared ledger, a chunk at a time, and `finish` settles it with the
    real usage. When the run's commitment is at the limit but reservations are still in
    flight, `admit` returns None with `waiting` set (not `stopped`): try again after
    `admit_when_room`'s short pause, when they may have settled below the limit.
    """

    def __init__(
        self,
        max_cost_usd: float | None,
        max_total_tokens: int | None,
        price_in_per_mtok: float,
        price_out_per_mtok: float,
        ledger: SpendLedger | None = None,
        chunk: int = 32,
    ):
        self.max_cost_usd = max_cost_usd
        self.max_total_tokens = max_total_tokens
        self.price_in = price_in_per_mtok / 1e6
        self.price_out = price_out_per_mtok / 1e6
        self.tokens_in = 0
        self.tokens_out = 0
        self.replies = 0
        self.possibly_billed_in = 0  # prompt tokens of requests that failed after they may have been billed
        self._inflight_tokens_in = 0
        self._inflight_tokens_out = 0.0
        self._inflight_requests = 0
        self.stopped = False
        # The run's ledger (None: this process's budget is the run's). Reservations are
        # taken `chunk` worst cases at a time; `_free` is what this process holds unused.
        self.ledger = ledger if self.limited else None
        self.chunk = chunk
        self.waiting = False
        self._free = [0.0, 0.0]
        self._usage = Usage()
        self._retry_ledger_at = 0.0

    @property
    def limited(self) -> bool:
        return self.max_cost_usd is not None or self.max_total_tokens is not None

    def cost(self, tokens_in: float, tokens_out: float) -> float:
        return tokens_in * self.price_in + tokens_out * self.price_out

    @property
    def spent_usd(self) -> float:
        return self.cost(self.tokens_in + self.possibly_billed_in, self.tokens_out)

    def exhausted(self) -> bool:
        """Spend so far (possibly billed included, estimates of in-flight requests not) reached the budget."""
        if self.ledger is not None:
            self.sync()
            used_tok, used_usd = self.ledger.spent()  # every process of the run
            return (self.max_total_tokens is not None and used_tok >= self.max_total_tokens) or (
                self.max_cost_usd is not None and used_usd >= self.max_cost_usd
            )
        used_in = self.tokens_in + self.possibly_billed_in
        return (self.max_total_tokens is not None and used_in + self.tokens_out >= self.max_total_tokens) or (
            self.max_cost_usd is not None and self.cost(used_in, self.tokens_out) >= self.max_cost_usd
        )

    def _expected_out(self, max_tokens: int) -> float:
        return self.tokens_out / self.replies if self.replies else float(max_tokens)

    def admit(self, prompt_tokens: int, max_tokens: int, worst_case: bool = False) -> float | None:
        """Admit one request: returns its expected completion tokens (hand it to `finish`), or None.

        worst_case: expect max_tokens, not the mean so far (a batch is paid for whole, hours
        later, so what it holds of the budget must cover the most it can cost)."""
        if self.stopped:
            return None
        out = float(max_tokens) if worst_case else self._expected_out(max_tokens)
        if self.limited and self.ledger is None:  # with a ledger, its worst-case reservations decide
            total_in = self.tokens_in + self.possibly_billed_in + self._inflight_tokens_in
            total_out = self.tokens_out + self._inflight_tokens_out
            over_tokens = self.max_total_tokens is not None and total_in + total_out >= self.max_total_tokens
            over_cost = self.max_cost_usd is not None and self.cost(total_in, total_out) >= self.max_cost_usd
            if over_tokens or over_cost:
                self.stopped = True
                return None
        if self.ledger is not None:
            worst = (float(prompt_tokens + max_tokens), self.cost(prompt_tokens, max_tokens))
            if not self._reserve(worst):
                return None
            out = Admission(out)
            out.reserved = worst
        self._inflight_tokens_in += prompt_tokens
        self._inflight_tokens_out += out
        self._inflight_requests += 1
        return out

    async def admit_when_room(self, prompt_tokens: int, max_tokens: int, pause_s: float = 0.05) -> float | None:
        """`admit`, waiting while the run's ledger is full of reservations that may still settle."""
        while True:
            admitted = self.admit(prompt_tokens, max_tokens)
            if admitted is not None or not self.waiting:
                return admitted
            await asyncio.sleep(pause_s)

    def _covers(self, worst: tuple[float, float]) -> bool:
        limits = (self.max_total_tokens, self.max_cost_usd)
        return all(limit is None or free >= need - 1e-12 for limit, free, need in zip(limits, self._free, worst))

    def _reserve(self, worst: tuple[float, float]) -> bool:
        """Take a request's worst case from this process's chunk, reserving a new chunk when it is short."""
        self.waiting = False
        if not self._covers(worst):
            now = time.monotonic()
            if now < self._retry_ledger_at:
                self.waiting = True  # a request just found the ledger full: one ledger call per pause
                return False
            usage = self._take_usage()
            usage.released, self._free = (self._free[0], self._free[1]), [0.0, 0.0]  # too little to use: back to the run
            grant = self.ledger.reserve(worst, self.chunk, usage)
            if grant.amount is None:
                if grant.wait:
                    self.waiting = True
                    self._retry_ledger_at = now + 0.05
                else:
                    self.stopped = True
                return False
            self._free = [self._free[0] + grant.amount[0], self._free[1] + grant.amount[1]]
        self._free = [self._free[0] - worst[0], self._free[1] - worst[1]]
        return True

    def finish(self, prompt_tokens: int, expected_out: float, used: tuple[int, int] | None) -> None:
        """An admitted request is done: drop its estimate, charge what it used (None: nothing billed)."""
        self._inflight_tokens_in -= prompt_tokens
        self._inflight_tokens_out -= expected_out
        self._inflight_requests -= 1
        if used is not None:
            self._charge_here(*used)
        if self.ledger is not None and isinstance(expected_out, Admission):
            worst = expected_out.reserved
            real = (float(sum(used)), self.cost(*used)) if used is not None else (0.0, 0.0)
            covered = (min(real[0], worst[0]), min(real[1], worst[1]))
            u = self._usage
            u.from_reserved = (u.from_reserved[0] + covered[0], u.from_reserved[1] + covered[1])
            u.extra_spent = (u.extra_spent[0] + real[0] - covered[0], u.extra_spent[1] + real[1] - covered[1])
            # What the request did not use stays this process's, for its next requests.
            self._free = [self._free[0] + worst[0] - covered[0], self._free[1] + worst[1] - covered[1]]

    def charge_possibly_billed(self, prompt_tokens: int) -> None:
        """A sent request failed in a way a provider may still bill (timeout, reset, cut-off body)."""
        self.possibly_billed_in += prompt_tokens
        if self.ledger is not None:
            b = self._usage.extra_billed
            self._usage.extra_billed = (b[0] + prompt_tokens, b[1] + self.cost(prompt_tokens, 0))

    def charge(self, used_in: int, used_out: int) -> None:
        """Spend nothing reserved: a reply the dataset already holds (paid for earlier)."""
        self._charge_here(used_in, used_out)
        if self.ledger is not None:
            x = self._usage.extra_spent
            self._usage.extra_spent = (x[0] + used_in + used_out, x[1] + self.cost(used_in, used_out))

    def _charge_here(self, used_in: int, used_out: int) -> None:
        self.tokens_in += used_in
        self.tokens_out += used_out
        self.replies += 1

    def _take_usage(self) -> Usage:
        usage, self._usage = self._usage, Usage()
        return usage

    def sync(self) -> None:
        """Write this process's usage to the run's ledger (the heartbeat). While nothing is in
        flight, unused reservations go back, so a process between shards starves nobody."""
        if self.ledger is None:
            return
        usage = self._take_usage()
        if self._inflight_requests == 0 and any(self._free):
            usage.released = (self._free[0], self._free[1])
            self._free = [0.0, 0.0]
        self.ledger.settle(usage)

    def close(self) -> None:
        """Settle with the run's ledger and leave it (the session is closing)."""
        if self.ledger is None:
            return
        usage = self._take_usage()
        usage.released = (self._free[0], self._free[1])
        self._free = [0.0, 0.0]
        self.ledger.close(usage)
        self.ledger = None


class BatchedPermits:
    """Takes permits from a global limit `batch` at a time and hands them out one by one.

    `fetch(n)` blocks until n permits are granted, e.g. a Prefect global rate limit:
    `lambda n: prefect.concurrency.asyncio.rate_limit("teacher-rpm", occupy=n, strict=True)`.
    One fetch costs ~30 ms of Prefect client time (NOTES.md), so per request it would be
    the bottleneck; per batch of 100 it is 0.3 ms a request.
    """

    def __init__(self, fetch: Callable[[int], Awaitable[None]], batch: int = 100):
        if batch <= 0:
            raise ValueError("batch must be positive")
        self._fetch = fetch
        self.batch = batch
        self._left = 0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def take(self) -> None:
        if self._left > 0:
            self._left -= 1
            return
        async with self._lock:
            if self._left == 0:
                await self._fetch(self.batch)
                self.fetches += 1
                self._left = self.batch
            self._left -= 1


def prefect_rate_limit_permits(limit_name: str, batch: int = 100) -> BatchedPermits:
    """Permits from a Prefect global concurrency limit with slot decay (a rate limit).

    Create it once with `prefect gcl create teacher-rpm --limit N --slot-decay-per-second N/60`;
    every worker process then shares the provider's budget, one Prefect call per batch.
    """

    async def fetch(n: int) -> None:
        from prefect.concurrency.asyncio import rate_limit

        await rate_limit(limit_name, occupy=n, strict=True)

    return BatchedPermits(fetch, batch)


class InFlightSlots:
    """An in-flight cap (a semaphore) that hands a freed slot straight to the next waiter.

    asyncio.Semaphore leaves woken waiters in its queue until they run, and every release
    scans past them: with thousands of queued requests that scan made release cost ~75 us
    (measured here, Python 3.11), quadratic in bursts. Here release pops the next waiter,
    O(1), in arrival order.
    """

    def __init__(self, slots: int):
        self._free = slots
        self._waiters: deque[asyncio.Future] = deque()

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot arrived as we were cancelled: pass it on
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    async def __aexit__(self, *exc) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; _free is unchanged
                return
        self._free += 1
