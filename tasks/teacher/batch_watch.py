"""Waiting for a batch and ingesting it: poll with backoff, download, match, write the reply cache.

Between polls the coroutine sleeps (`asyncio.sleep`): a flow can sit in Running for hours
holding no CPU. The wait doubles from `batch_poll_s` up to `batch_poll_max_s`.

Every reply goes into the same reply cache as a live reply (same key, same row), committed
before the ledger marks the batch ingested: killed in between, a rerun downloads the
files again and the cache's INSERT OR IGNORE keeps one row per request.

Several shards of one process may wait on the same batch (a request repeated across
shards, a rerun's re-attached batch): one watcher per batch per process, the rest await it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from tasks.teacher.batch_api import TERMINAL, BatchApi
from tasks.teacher.batch_ingest import read_results
from tasks.teacher.batch_ledger import BatchLedger, LedgerBatch
from tasks.teacher.batch_progress import BatchProgress
from tasks.teacher.cache import CachedReply, RequestCache

_watching: dict[tuple[str, str], asyncio.Future] = {}  # (ledger path, local id) -> the one watcher


@dataclass(frozen=True)
class RequestFacts:
    """What a cache row needs from the request (the body's max_tokens and seed, its prompt tokens)."""

    max_tokens: int
    request_seed: int
    prompt_tokens: int = 0  # used only when a reply carries no usage


@dataclass
class Ingested:
    batch_id: str
    status: str
    outcomes: dict[str, str]  # key -> "ok" or the failure reason
    unexpected_lines: int
    usage: dict[str, tuple[int, int]]  # key -> (prompt, completion) tokens of each reply, for the budget


def facts_from_input(path: str) -> dict[str, RequestFacts]:
    """The request facts of every line of a batch's input file (empty if the file is gone)."""
    facts: dict[str, RequestFacts] = {}
    if not Path(path).exists():
        return facts
    with open(path, "rb") as fh:
        for raw in fh:
            line = orjson.loads(raw)
            body = line["body"]
            facts[line["custom_id"]] = RequestFacts(int(body["max_tokens"]), int(body["seed"]))
    return facts


async def watch(api: BatchApi, ledger: BatchLedger, cache: RequestCache, entry: LedgerBatch, model: str,
                known: dict[str, RequestFacts], poll_s: float, poll_max_s: float, count_tokens) -> Ingested:
    """Wait for the batch, ingest it (once per process even if several shards wait on it)."""
    slot = (str(ledger.path), entry.local_id)
    running = _watching.get(slot)
    if running is None:
        running = asyncio.ensure_future(
            _watch_and_ingest(api, ledger, cache, entry, model, known, poll_s, poll_max_s, count_tokens)
        )
        _watching[slot] = running
        running.add_done_callback(lambda _: _watching.pop(slot, None))
    return await asyncio.shield(running)


async def _watch_and_ingest(api, ledger, cache, entry, model, known, poll_s, poll_max_s, count_tokens) -> Ingested:
    batch = await api.retrieve(entry.batch_id)
    progress = BatchProgress(entry.batch_id, entry.requests)
    delay = poll_s
    while True:
        counts = batch.request_counts
        await progress.update(counts.completed if counts else 0, counts.failed if counts else 0, batch.status)
        if batch.status in TERMINAL:
            break
        await asyncio.sleep(delay)  # no CPU held while the provider works
        delay = min(delay * 2, poll_max_s)
        batch = await api.retrieve(entry.batch_id)
    output = await api.download(batch.output_file_id)
    errors = await api.download(batch.error_file_id)
    submitted = set(ledger.keys_of(entry.local_id))
    results = read_results(submitted, output, errors, batch.status)
    facts = known
    if any(key not in known for key in results.replies):  # another shard's (or run's) requests: read the input file
        facts = {**facts_from_input(entry.input_path), **known}
    rows, outcomes = [], dict(results.failures)
    for key, data in results.replies.items():
        if key in facts:
            rows.append(cached_row(key, data, facts[key], model, count_tokens))
            outcomes[key] = "ok"
        else:  # neither the input file nor this shard knows the request: nothing to file it under
            outcomes[key] = "batch_request_unknown"
    await asyncio.gather(*(cache.put(row) for row in rows))  # committed before the ledger says ingested
    ledger.ingested(entry.local_id, outcomes)
    Path(entry.input_path).unlink(missing_ok=True)
    usage = {row.key: (row.prompt_tokens, row.completion_tokens) for row in rows}
    return Ingested(batch.id, batch.status, outcomes, results.unexpected, usage)


def cached_row(key: str, data: dict, facts: RequestFacts, model: str, count_tokens) -> CachedReply:
    """The cache row for a batch reply: the same fields a live reply of the same request gets."""
    choice = data["choices"][0]
    content = (choice.get("message") or {}).get("content")
    usage = data.get("usage") or {}
    prompt_tokens = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    return CachedReply(
        key=key,
        model=model,
        content=content,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=int(prompt_tokens if prompt_tokens is not None else facts.prompt_tokens),
        completion_tokens=int(completion_tokens if completion_tokens is not None else count_tokens(content or "")),
        system_fingerprint=data.get("system_fingerprint"),
        max_tokens=facts.max_tokens,
        request_seed=facts.request_seed,
        received_at_us=time.time_ns() // 1000,
    )
