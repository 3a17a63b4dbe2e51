"""Batch mode for one generation shard: buy the shard's missing replies through the Batch API.

`run_batches(session, seeds)` builds the requests the session would send live, leaves out
those the reply cache already answers, re-attaches to batches an earlier (killed) run
submitted, submits the rest (split at the provider's limits, each batch's worst-case cost
reserved in the budget first), waits, and files every reply in the reply cache. Then the
shard goes the normal way (`session.complete_shard(seeds, settled=outcome)`): its replies
come from the cache; parsing, validation and accounting are those of live mode.

Requests a batch could not answer (expired, cancelled, failed, a 429/5xx inside it) go
into a new batch up to `batch_retries` times, then live (`batch_fallback: live`: the
session sends them as cache misses) or are dropped with their reason
(`batch_fallback: none`). Final refusals (a 400) fail as they would live. Every one is
counted by reason in the shard's stats.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from tasks.core.errors import UserError
from tasks.teacher.batch_api import BatchApi
from tasks.teacher.batch_ingest import retryable
from tasks.teacher.batch_ledger import BatchLedger, LedgerBatch
from tasks.teacher.batch_requests import batch_line, split_at_limits
from tasks.teacher.batch_submit import attach, submit
from tasks.teacher.batch_watch import RequestFacts, watch

BUDGET_REASON = "budget_exhausted"


@dataclass
class BatchOutcome:
    """What batch mode settled for a shard, handed to `TeacherSession.complete_shard(settled=...)`."""

    bought: set[str] = field(default_factory=set)  # keys answered by a batch of this run (fresh spend)
    failed: dict[str, str] = field(default_factory=dict)  # keys given up on, with the reason
    stats: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # batch failures by reason (each occurrence)
    retried: Counter = field(default_factory=Counter)  # requests put in a new batch, by what failed
    fallback_live: Counter = field(default_factory=Counter)  # requests left to live mode, by what failed

    def figures(self) -> dict:
        return {
            "mode": "batch",
            **{name: self.stats[name] for name in ("batches_created", "batches_reattached", "batch_requests_submitted",
                                                   "batch_replies", "batch_api_calls", "batch_unexpected_lines")},
            "batch_failures": dict(sorted(self.failures.items())),
            "batch_retried": dict(sorted(self.retried.items())),
            "batch_fallback_live": dict(sorted(self.fallback_live.items())),
        }


class _ShardBatches:
    def __init__(self, session, ledger: BatchLedger, requests: dict):
        self.session = session
        self.cfg = session.cfg
        self.ledger = ledger
        self.requests = requests  # key -> the session's request (body, tokens, max_tokens, seed)
        self.outcome = BatchOutcome()
        self.left_live: set[str] = set()
        self.reserved: dict[str, float] = {}  # key -> expected completion reserved in the budget

    def pending(self) -> list[str]:
        open_keys = [k for k in self.requests if k not in self.outcome.failed and k not in self.left_live]
        cached = self.session.cache.lookup(open_keys)
        return [k for k in open_keys if k not in cached]

    async def run(self) -> BatchOutcome:
        async with BatchApi(self.cfg) as api:
            while pending := self.pending():
                waiting = await self._reattach(api, pending)
                held = {k for entry in waiting for k in self.ledger.keys_of(entry.local_id)}
                fresh = self._decide([k for k in pending if k not in held])
                waiting += await self._submit(api, fresh)
                if not waiting:
                    break
                await self._wait(api, waiting)
            self.outcome.stats["batch_api_calls"] += api.calls
        return self.outcome

    async def _reattach(self, api: BatchApi, pending: list[str]) -> list[LedgerBatch]:
        attached = []
        for entry in self.ledger.unfinished(pending):
            found = await attach(api, self.ledger, entry)
            if found is not None:
                attached.append(found)
                self.outcome.stats["batches_reattached"] += 1
                await self._reserve(self.ledger.keys_of(found.local_id), refusable=False)
        return attached

    def _decide(self, keys: list[str]) -> list[tuple[str, int]]:
        """(key, round) for every key to submit now; the others are failed or left to live mode."""
        history = self.ledger.history(keys)
        submit_now = []
        for key in keys:
            rounds, last = history.get(key, (0, "ok"))
            if rounds == 0 or last == "ok":  # never batched, or its reply left the cache since
                submit_now.append((key, rounds))
            elif not retryable(last):
                self.outcome.failed[key] = last
            elif rounds <= self.cfg.batch_retries:
                self.outcome.retried[last] += 1
                submit_now.append((key, rounds))
            elif self.cfg.batch_fallback == "live":
                self.outcome.fallback_live[last] += 1
                self.left_live.add(key)
            else:
                self.outcome.failed[key] = last
        return submit_now

    async def _reserve(self, keys: list[str], refusable: bool = True) -> list[str]:
        """Reserve each request's worst case (max_tokens) in the budget; returns the keys admitted."""
        budget = self.session.budget
        admitted = []
        for key in keys:
            req = self.requests.get(key)
            if req is None or key in self.reserved:
                continue
            expected = budget.admit(req.prompt_tokens, req.max_tokens, worst_case=True)
            while expected is None and getattr(budget, "waiting", False):  # the run's budget: reservations in flight
                if self.reserved and refusable:
                    # Some are ours, held until our batches end: submit what fits now, the
                    # rest once they have settled (the next round of `run`), never live.
                    return admitted
                await asyncio.sleep(0.05)  # other processes' reservations: they settle soon
                expected = budget.admit(req.prompt_tokens, req.max_tokens, worst_case=True)
            if expected is None and refusable:
                self.outcome.failed[key] = BUDGET_REASON
                continue
            if expected is not None:
                self.reserved[key] = expected
            admitted.append(key)
        return admitted

    def settle(self, keys, usage: dict[str, tuple[int, int]] | None = None) -> None:
        """Settle each key's reservation with its reply's real usage (none: nothing billed).

        Settled as soon as the batch is ingested, so the next round's admissions see the
        real spend; complete_shard does not charge these replies again (`bought`)."""
        usage = usage or {}
        budget = self.session.budget
        for key in keys:
            expected = self.reserved.pop(key, None)
            used = usage.get(key)
            if expected is not None:
                budget.finish(self.requests[key].prompt_tokens, expected, used)
            elif used is not None:  # answered by a batch this run never reserved (re-attached past the limit)
                budget.charge(*used)

    async def _submit(self, api: BatchApi, fresh: list[tuple[str, int]]) -> list[LedgerBatch]:
        created = []
        by_round: dict[int, list[str]] = {}
        for key, round_no in fresh:
            by_round.setdefault(round_no, []).append(key)
        input_dir = self.ledger.path.parent / "batch-inputs"
        for round_no, keys in sorted(by_round.items()):
            admitted = await self._reserve(keys)
            lines = [batch_line(k, self.requests[k].body) for k in admitted]
            for chunk in split_at_limits(lines, self.cfg.batch_max_requests, self.cfg.batch_max_bytes):
                created.append(await submit(api, self.ledger, chunk, round_no, input_dir))
                self.outcome.stats["batches_created"] += 1
                self.outcome.stats["batch_requests_submitted"] += len(chunk)
        return created

    async def _wait(self, api: BatchApi, waiting: list[LedgerBatch]) -> None:
        known = {k: RequestFacts(r.max_tokens, r.request_seed, r.prompt_tokens) for k, r in self.requests.items()}
        cfg = self.cfg
        done = await asyncio.gather(*(
            watch(api, self.ledger, self.session.cache, entry, cfg.model, known, cfg.batch_poll_s,
                  cfg.batch_poll_max_s, self.session.counter.count)
            for entry in waiting
        ))
        for ingested in done:
            self.outcome.stats["batch_unexpected_lines"] += ingested.unexpected_lines
            for key, result in ingested.outcomes.items():
                if key not in self.requests:
                    continue
                if result == "ok":
                    self.outcome.bought.add(key)
                    self.outcome.stats["batch_replies"] += 1
                else:
                    self.outcome.failures[result] += 1
            self.settle([k for k in ingested.outcomes if k in self.requests], ingested.usage)


async def run_batches(session, seeds: pa.Table) -> BatchOutcome:
    """Buy a shard's missing replies through the Batch API (see the module doc)."""
    if session.cache is None or session.cache_path is None:
        raise UserError("batch mode needs the reply cache (batch replies are filed there): give the session a cache_path")
    requests: dict = {}
    for index, snippet in zip(seeds.column("seed_index").to_pylist(), seeds.column("seed").to_pylist()):
        req = session.build_request(index, snippet)
        if req.max_tokens > 0:  # prompt_too_long is the session's to report, as in live mode
            requests.setdefault(req.key, req)
    ledger = BatchLedger(session.cache_path.with_name("batches.sqlite"), session.cache.scope)
    runner = _ShardBatches(session, ledger, requests)
    try:
        return await runner.run()
    finally:
        runner.settle(list(runner.reserved))  # reservations of batches never waited for (an error): nothing billed
        ledger.close()


def reprice_live_fallback(outcome: BatchOutcome, replies, stats, cfg) -> None:
    """Requests sent live in a batch-mode run cost the live price: correct the shard's cost for them.

    The session prices every reply at the batch price in batch mode; a reply bought live
    here (a fallback) costs the difference more, added to `cost_usd` and shown apart."""
    live_in, live_out = cfg.live_prices()
    batch_in, batch_out = cfg.batch_prices()
    tokens_in = tokens_out = sent_live = 0
    for reply in replies:
        if reply.error is None and not reply.from_cache and reply.key not in outcome.bought:
            sent_live += 1
            tokens_in += reply.prompt_tokens
            tokens_out += reply.completion_tokens
    extra = (tokens_in * (live_in - batch_in) + tokens_out * (live_out - batch_out)) / 1e6
    stats.extra = {**stats.extra, **outcome.figures(), "live_fallback_replies": sent_live,
                   "cost_usd": round(stats.extra.get("cost_usd", 0.0) + extra, 6)}
