"""Teacher calls at scale: one session per flow run, thousands of requests in flight.

A `TeacherSession` owns, for one flow run in one process: the HTTP transport (a pooled
aiohttp session or the official AsyncOpenAI client), the in-flight cap, the sliding-window
rate limiter, the spend budget and the request cache. Shard tasks running as coroutines on
the same event loop all call `complete_shard` on the one session, so limits are shared.

Per seed row: build the paper's messages, derive `max_tokens` from the context size with
tiktoken, content-address the request (sha256 of the canonical request body: model,
messages, sampling parameters, seed), answer from the cache if the reply is there, else
send it, retry what is transient, persist the reply, and return it. Every row comes back
as a `TeacherReply`: with content, or with `error` naming why not.

The API key is read from an environment variable or a Prefect Secret block when the
session opens; it lives only in the transport's Authorization header. It is not in the
config, the cache, the replies, the stats, or any message this module raises or logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import orjson
import pyarrow as pa

from tasks.core import progress as progress_channel
from tasks.core.errors import UserError
from tasks.core.stats import StageStats
from tasks.teacher.cache import CachedReply, RequestCache, endpoint_scope
from tasks.teacher.config import TeacherConfig
from tasks.teacher.credentials import aresolve_api_key, auth_error
from tasks.teacher.ledger import SharedTokenWindow, SpendLedger
from tasks.teacher.limits import BatchedPermits, Budget, InFlightSlots, SlidingWindowLimiter
from tasks.teacher.prompts import SYSTEM_PROMPT, build_messages, response_format
from tasks.teacher.retry import Verdict, backoff_delay, classify_reply
from tasks.teacher.tokens import MAX_TOKENS_MARGIN, derive_max_tokens, token_counter
from tasks.teacher.transport import TRANSPORTS, TransportError

log = logging.getLogger("ossforge.teacher")

PROGRESS_COUNTER = "teacher replies"  # the tasks.core.progress counter this session advances
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Failures after the request may have reached the model: a provider may bill the prompt
# (and whatever it generated) though no reply came back. Counted as "possibly billed".
POSSIBLY_BILLED = frozenset({"timeout", "connection", "malformed_body"})


class TeacherQuotaError(UserError):
    """The provider says the account's quota is used up (429 insufficient_quota)."""


@dataclass
class TeacherReply:
    key: str  # content address of the request: sha256 of its canonical body
    seed_index: int
    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    system_fingerprint: str | None
    max_tokens: int
    request_seed: int
    received_at: datetime  # when the reply first arrived (kept in the cache; a resumed run reuses it)
    error: str | None  # why the item has no reply: "http_404", "timeout_retries_exhausted", ...
    attempts: int
    from_cache: bool


# ----------------------------------------------------------------------------- the session
@dataclass(slots=True)
class _Request:
    key: str
    seed_index: int
    body: bytes
    prompt_tokens: int  # system + user, as a provider bills and rate-limits them
    max_tokens: int
    request_seed: int


class _ShardTally:
    __slots__ = ("requests", "retries", "tokens_in", "tokens_out", "cached_in", "cached_out", "cache_hits",
                 "possibly_billed", "possibly_billed_in")

    def __init__(self) -> None:
        self.requests = 0
        self.possibly_billed = self.possibly_billed_in = 0  # failed requests a provider may bill, their prompt tokens
        self.retries: Counter = Counter()
        self.tokens_in = self.tokens_out = self.cached_in = self.cached_out = self.cache_hits = 0


def _utc_from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class TeacherSession:
    """`async with TeacherSession(cfg, cache_path=...) as s: replies, stats = await s.complete_shard(seeds)`.

    Every finished reply (cache hits included) advances the "teacher replies" counter of
    `tasks.core.progress` (the CLI's rich bar listens there); set `expected_replies` to the
    run's seed count for a true total, else the total grows as shards start.
    progress: also called with every finished reply, for callers that want the reply.
    permits: a `BatchedPermits` taken before every request attempt, for a limit shared
      between processes (a Prefect global rate limit, fetched a batch at a time).
    ledger_path: the run's spend ledger (tasks/teacher/ledger.py), shared by every process
      of one run: the budget is then the run's, not this session's.
    """

    def __init__(
        self,
        cfg: TeacherConfig,
        cache_path: str | Path | None = None,
        *,
        progress: Callable[[TeacherReply], None] | None = None,
        permits: BatchedPermits | None = None,
        ledger_path: str | Path | None = None,
    ):
        self.cfg = cfg
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.progress = progress
        self.permits = permits
        self.counter = token_counter(cfg.model)
        self._system_tokens = self.counter.count(SYSTEM_PROMPT)
        # Prompts up to this many UTF-8 bytes get max_tokens = cap under the paper's rule.
        self._cap_guaranteed_below = cfg.context_size - cfg.max_tokens_cap - MAX_TOKENS_MARGIN
        self._response_format = response_format(cfg.output_format, cfg.json_response_format)
        self.limiter = SlidingWindowLimiter(cfg.rpm, cfg.tpm, cfg.rate_window_s)
        cfg.check_priced()  # a cost budget with no price would never fire: refuse before any request
        self.budget = Budget(cfg.max_cost_usd, cfg.max_total_tokens, *cfg.prices())
        self.ledger_path = Path(ledger_path) if ledger_path is not None else None
        self._heartbeat: asyncio.Task | None = None
        self.tpm_window: SharedTokenWindow | None = None
        prices = cfg.price_sources()
        self._price_source = {"in": prices["source_in"], "out": prices["source_out"]}
        self.cache: RequestCache | None = None
        self._transport = None
        self._slots: InFlightSlots | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        self._fatal: UserError | None = None
        self.totals = StageStats("teacher")
        self._totals_tally = _ShardTally()
        self._started = time.perf_counter()
        self.expected_replies: int | None = None
        self._replies_declared = 0

    @property
    def encoding(self) -> str:
        """The tiktoken encoding that counted tokens (for the manifest)."""
        return self.counter.encoding_name

    async def __aenter__(self) -> "TeacherSession":
        # The key goes straight into the transport's Authorization header; the session keeps no copy.
        self._transport = TRANSPORTS[self.cfg.transport](
            self.cfg.base_url, await aresolve_api_key(self.cfg), self.cfg.concurrency, self.cfg.request_timeout_s
        )
        await self._transport.start()
        self._slots = InFlightSlots(self.cfg.concurrency)
        if self.ledger_path is not None and self.budget.limited:
            self.budget.ledger = SpendLedger(self.ledger_path, self.cfg.max_total_tokens, self.cfg.max_cost_usd)
            self._heartbeat = asyncio.ensure_future(self._beat())
        if self.ledger_path is not None and self.cfg.tpm is not None:
            # The provider's TPM is per account: one window for every process of the run.
            self.tpm_window = SharedTokenWindow(self.ledger_path, self.cfg.tpm, self.cfg.rate_window_s)
        if self.cache_path is not None:
            # Replies are the endpoint's own unless the user names a scope shared by replicas.
            self.cache = RequestCache(self.cache_path, scope=self.cfg.cache_scope or endpoint_scope(self.cfg.base_url))
        self._started = time.perf_counter()
        return self

    async def _beat(self, every_s: float = 2.0) -> None:
        # Keeps this process's lease in the run's ledger and hands back what it holds unused.
        while True:
            await asyncio.sleep(every_s)
            self.budget.sync()

    async def __aexit__(self, *exc) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        self.budget.close()
        if self.tpm_window is not None:
            self.tpm_window.close()
        if self.cache is not None:
            await self.cache.aclose()
        if self._transport is not None:
            await self._transport.close()

    # ------------------------------------------------------------------ requests
    def build_request(self, seed_index: int, snippet: str) -> _Request:
        return self.request_for(seed_index, build_messages(snippet, self.cfg.output_format))

    def request_for(self, seed_index: int, messages: list[dict]) -> _Request:
        """The request body for `messages` (system, user), with the paper's sampling settings
        and max_tokens rule; its key is the content address of the body."""
        cfg = self.cfg
        user = messages[1]["content"]
        user_bytes = len(user.encode())
        if cfg.tpm is None and user_bytes <= self._cap_guaranteed_below:
            # A token covers at least one byte, so this prompt has at most `user_bytes`
            # tokens and the paper's rule gives the cap whatever the exact count: skip
            # tiktoken (~0.1-0.3 ms a prompt, the largest client cost per request). The
            # estimate below only feeds the budget's in-flight guess, never max_tokens.
            user_tokens = user_bytes // 3
            max_tokens = cfg.max_tokens_cap
        else:
            user_tokens = self.counter.count(user)
            max_tokens = derive_max_tokens(user_tokens, cfg.context_size, cfg.max_tokens_cap)
        request_seed = cfg.seed_offset + seed_index
        body = {
            "model": cfg.model,
            "messages": messages,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "n": 1,
            "seed": request_seed,
            "max_tokens": max_tokens,
        }
        if self._response_format is not None:
            body["response_format"] = self._response_format
        # Sorted keys: the same request always hashes to the same address.
        payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        key = hashlib.sha256(payload).hexdigest()
        return _Request(key, seed_index, payload, self._system_tokens + user_tokens, max_tokens, request_seed)

    def _failed(self, req: _Request, reason: str, attempts: int) -> TeacherReply:
        return TeacherReply(
            key=req.key,
            seed_index=req.seed_index,
            content=None,
            finish_reason=None,
            prompt_tokens=0,
            completion_tokens=0,
            system_fingerprint=None,
            max_tokens=req.max_tokens,
            request_seed=req.request_seed,
            received_at=datetime.now(timezone.utc),
            error=reason,
            attempts=attempts,
            from_cache=False,
        )

    @staticmethod
    def _from_cached(req: _Request, row: CachedReply, from_cache: bool, attempts: int) -> TeacherReply:
        return TeacherReply(
            key=row.key,
            seed_index=req.seed_index,
            content=row.content,
            finish_reason=row.finish_reason,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            system_fingerprint=row.system_fingerprint,
            max_tokens=row.max_tokens,
            request_seed=row.request_seed,
            received_at=_utc_from_us(row.received_at_us),
            error=None,
            attempts=attempts,
            from_cache=from_cache,
        )

    async def _send(self, req: _Request, tally: _ShardTally) -> TeacherReply:
        """One request through budget, in-flight cap, rate limit, retries and the cache."""
        cfg = self.cfg
        if self._fatal is not None:
            raise self._fatal
        if req.max_tokens <= 0:
            return self._failed(req, "prompt_too_long", 0)
        expected_out: float | None = None
        attempts = 0
        try:
            while True:
                async with self._slots:
                    if expected_out is None:
                        # Admitted when it is about to leave, not when queued: the budget
                        # sees what is really in flight.
                        expected_out = await self.budget.admit_when_room(req.prompt_tokens, req.max_tokens)
                        if expected_out is None:
                            return self._failed(req, "budget_exhausted", 0)
                    await self.limiter.acquire(req.prompt_tokens + req.max_tokens)
                    if self.tpm_window is not None:
                        await self.tpm_window.take(req.prompt_tokens + req.max_tokens)
                    if self.permits is not None:
                        await self.permits.take()
                    if self._fatal is not None:
                        raise self._fatal
                    attempts += 1
                    tally.requests += 1
                    try:
                        verdict = classify_reply(await self._transport.post_chat(req.body))
                    except TransportError as exc:
                        verdict = Verdict("retry", exc.kind)
                    if verdict.reason in POSSIBLY_BILLED:
                        # Charged before the slot frees, like a reply: the budget must see it.
                        billed = self._prompt_tokens_exact(req)
                        self.budget.charge_possibly_billed(billed)
                        tally.possibly_billed += 1
                        tally.possibly_billed_in += billed
                    if verdict.action == "ok":
                        # Settle the budget before the slot frees: the next request's
                        # admission must see this one's real cost, not its estimate.
                        row = self._cached_row(req, verdict.data)
                        self.budget.finish(req.prompt_tokens, expected_out, (row.prompt_tokens, row.completion_tokens))
                        expected_out = None
                if verdict.action == "ok":
                    if self.cache is not None:
                        await self.cache.put(row)  # persisted before anyone sees it
                    tally.tokens_in += row.prompt_tokens
                    tally.tokens_out += row.completion_tokens
                    return self._from_cached(req, row, False, attempts)
                if verdict.action == "auth":
                    self._fatal = auth_error(cfg)
                    raise self._fatal
                if verdict.action == "quota":
                    self._fatal = TeacherQuotaError(
                        f"the teacher at {cfg.base_url} reports the account's quota is used up (HTTP 429 insufficient_quota)"
                    )
                    raise self._fatal
                if verdict.action == "fail":
                    return self._failed(req, verdict.reason, attempts)
                if verdict.reason == "http_429" and verdict.retry_after_s:
                    self.limiter.pause(verdict.retry_after_s)  # the provider's wait holds for every request
                if attempts > cfg.max_retries:
                    return self._failed(req, f"{verdict.reason}_retries_exhausted", attempts)
                if self.budget.limited and self.budget.exhausted():
                    self.budget.stopped = True  # failed attempts spent the budget: no retry, no new request
                    return self._failed(req, "budget_exhausted", attempts)
                tally.retries[verdict.reason] += 1  # counts re-sends, by what caused them
                await asyncio.sleep(backoff_delay(attempts, cfg.retry_base_s, cfg.retry_max_s, verdict.retry_after_s))
        finally:
            if expected_out is not None:  # admitted but never answered in full: nothing billed
                self.budget.finish(req.prompt_tokens, expected_out, None)

    def _prompt_tokens_exact(self, req: _Request) -> int:
        """The prompt's tiktoken count (`req.prompt_tokens` may be a bytes/3 guess); only failures pay for it."""
        return self._system_tokens + self.counter.count(orjson.loads(req.body)["messages"][1]["content"])

    def _cached_row(self, req: _Request, data: dict) -> CachedReply:
        choice = data["choices"][0]
        content = (choice.get("message") or {}).get("content")
        usage = data.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        # Servers that send no usage: count it ourselves, so token totals stay meaningful.
        if prompt_tokens is None:
            prompt_tokens = req.prompt_tokens
        if completion_tokens is None:
            completion_tokens = self.counter.count(content or "")
        return CachedReply(
            key=req.key,
            model=self.cfg.model,
            content=content,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(prompt_tokens),
            completion_tokens=int(completion_tokens),
            system_fingerprint=data.get("system_fingerprint"),
            max_tokens=req.max_tokens,
            request_seed=req.request_seed,
            received_at_us=time.time_ns() // 1000,
        )

    async def _one(self, req: _Request, tally: _ShardTally) -> TeacherReply:
        # The same request twice in flight (a retried shard, a repeated seed) is sent once.
        pending = self._inflight.get(req.key)
        if pending is not None:
            try:
                reply = await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # we were cancelled ourselves
                return await self._one(req, tally)  # the sender was cancelled: send it ourselves
            reply = replace(reply, seed_index=req.seed_index, from_cache=reply.error is None)
        else:
            future = asyncio.get_running_loop().create_future()
            self._inflight[req.key] = future
            try:
                reply = await self._send(req, tally)
                future.set_result(reply)
            except asyncio.CancelledError:
                future.cancel()
                raise
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
                raise
            finally:
                del self._inflight[req.key]
        self._report(reply)
        return reply

    def _report(self, reply: TeacherReply) -> None:
        progress_channel.report(PROGRESS_COUNTER, 1)
        if self.progress is not None:
            self.progress(reply)

    # ------------------------------------------------------------------ shards
    async def complete_shard(self, seeds: pa.Table, settled=None) -> tuple[list[TeacherReply], StageStats]:
        """One reply per seed row, in row order, and the shard's "teacher" StageStats.

        settled: what batch mode already did for these seeds (tasks/teacher/batch_run.py
        `BatchOutcome`): replies it bought are in the cache and count as this run's spend
        (`.bought`), requests it gave up on fail with its reason (`.failed`), unsent."""
        indexes = seeds.column("seed_index").to_pylist()
        snippets = seeds.column("seed").to_pylist()
        return await self.complete([self.build_request(i, s) for i, s in zip(indexes, snippets)], settled)

    async def complete_messages(self, seed_indexes: list[int], messages: list[list[dict]]) -> tuple[list[TeacherReply], StageStats]:
        """Like complete_shard for requests of the caller's own making (the validation repair
        round's): the same cache, limits, budget, retries and counts."""
        return await self.complete([self.request_for(i, m) for i, m in zip(seed_indexes, messages)])

    async def complete(self, requests: list[_Request], settled=None) -> tuple[list[TeacherReply], StageStats]:
        started = time.perf_counter()
        stats = StageStats("teacher", rows_in=len(requests))
        self._replies_declared += len(requests)
        progress_channel.report(PROGRESS_COUNTER, 0, total=max(self.expected_replies or 0, self._replies_declared))
        tally = _ShardTally()
        cached = self.cache.lookup([r.key for r in requests]) if self.cache is not None else {}

        replies: list[TeacherReply | None] = [None] * len(requests)
        to_send: list[tuple[int, _Request]] = []
        bought, gave_up = (settled.bought, settled.failed) if settled is not None else ((), {})
        for pos, req in enumerate(requests):
            row = cached.get(req.key)
            if row is None:
                if req.key in gave_up:  # batch mode's verdict (expired with no fallback, budget, a 400)
                    replies[pos] = self._failed(req, gave_up[req.key], 0)
                    self._report(replies[pos])
                else:
                    to_send.append((pos, req))
                continue
            fresh = req.key in bought  # bought by this run's batches: fresh spend, not an earlier run's
            reply = self._from_cached(req, row, not fresh, 0)
            replies[pos] = reply
            if fresh:  # batch mode charged the budget when the batch was ingested
                tally.tokens_in += row.prompt_tokens
                tally.tokens_out += row.completion_tokens
            else:
                tally.cache_hits += 1
                tally.cached_in += row.prompt_tokens
                tally.cached_out += row.completion_tokens
                self.budget.charge(row.prompt_tokens, row.completion_tokens)  # the dataset's spend, paid earlier
            self._report(reply)

        tasks = [asyncio.ensure_future(self._one(req, tally)) for _, req in to_send]
        try:
            done = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for (pos, _), reply in zip(to_send, done):
            replies[pos] = reply

        for reply in replies:
            if reply.error is None:
                stats.rows_out += 1
            else:
                stats.drop(reply.error)
        stats.seconds = time.perf_counter() - started
        stats.extra = self._figures(tally, stats.seconds)
        self._add_to_totals(stats, tally)
        return replies, stats  # type: ignore[return-value]

    def _figures(self, tally: _ShardTally, seconds: float) -> dict:
        fresh_cost = self.budget.cost(tally.tokens_in, tally.tokens_out)
        return {
            "requests": tally.requests,
            "cache_hits": tally.cache_hits,
            "retries": dict(sorted(tally.retries.items())),
            "retries_total": sum(tally.retries.values()),
            "tokens_in": tally.tokens_in,
            "tokens_out": tally.tokens_out,
            "cached_tokens_in": tally.cached_in,
            "cached_tokens_out": tally.cached_out,
            "cost_usd": round(fresh_cost, 6),
            "cached_cost_usd": round(self.budget.cost(tally.cached_in, tally.cached_out), 6),
            "req_per_s": round(tally.requests / seconds, 1) if seconds > 0 else 0.0,
            "possibly_billed_requests": tally.possibly_billed,
            "possibly_billed_tokens_in": tally.possibly_billed_in,
            "possibly_billed_cost_usd": round(self.budget.cost(tally.possibly_billed_in, 0), 6),
            "budget_stopped": self.budget.stopped,
            "encoding": self.encoding,
            "price_source": self._price_source,
        }

    def _add_to_totals(self, stats: StageStats, tally: _ShardTally) -> None:
        self.totals.merge(stats)
        t = self._totals_tally
        t.requests += tally.requests
        t.retries.update(tally.retries)
        t.tokens_in += tally.tokens_in
        t.tokens_out += tally.tokens_out
        t.cached_in += tally.cached_in
        t.cached_out += tally.cached_out
        t.cache_hits += tally.cache_hits
        t.possibly_billed += tally.possibly_billed
        t.possibly_billed_in += tally.possibly_billed_in

    def summary(self) -> StageStats:
        """The run's "teacher" stats over every shard so far (for the manifest)."""
        wall = time.perf_counter() - self._started
        self.totals.seconds = wall  # shards overlap: the stage's time is the session's wall time
        self.totals.extra = self._figures(self._totals_tally, wall)
        self.totals.extra["price_per_mtok"] = list(self.cfg.prices())
        return self.totals
