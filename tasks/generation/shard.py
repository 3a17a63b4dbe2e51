"""One generation shard: seeds -> teacher replies -> parsed pairs, staged as Parquet.

Every seed of the shard ends either as a pair row in `pairs_path` or as a failure row
(with its stage and reason) in `failures_path`; the returned summary counts both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.schema import AUDIT_SCHEMA, DATASET_SCHEMA, SEED_COLUMNS
from tasks.generation.parsing import ParseFailure, parse_reply
from tasks.core.parquet_io import write_parquet_atomic
from tasks.core.stats import StageStats

# Pairs are staged without the near-dedup columns, which later steps fill in.
PAIR_SCHEMA = pa.schema([f for f in DATASET_SCHEMA if f.name not in ("cluster_id", "cluster_size")])
# The teacher's tests (output formats *_tests), for validation; not published (DATASET_SCHEMA).
PAIR_SCHEMA = PAIR_SCHEMA.append(pa.field("tests", pa.string()))


def row_id(request_key: str) -> str:
    """A row's id is its teacher request's content address: stable across reruns."""
    return request_key[:24]


def build_pair_rows(seeds: pa.Table, replies, teacher_cfg) -> tuple[list[dict], list[dict], StageStats, StageStats]:
    """Join seeds with their replies; returns (pair rows, failure rows, teacher stats, parse stats)."""
    teacher_stats = StageStats("teacher", rows_in=seeds.num_rows)
    parse_stats = StageStats("parse")
    pairs, failures = [], []
    for seed, reply in zip(seeds.select(SEED_COLUMNS).to_pylist(), replies, strict=True):
        rid = row_id(reply.key)
        if reply.error:
            teacher_stats.drop(reply.error)
            failures.append({"id": rid, "stage": "teacher", "reason": reply.error})
            continue
        teacher_stats.rows_out += 1
        parse_stats.rows_in += 1
        parsed = parse_reply(reply.content, reply.finish_reason, teacher_cfg.output_format)
        if isinstance(parsed, ParseFailure):
            parse_stats.drop(parsed.reason)
            failures.append({"id": rid, "stage": "parse", "reason": parsed.reason, "solution": reply.content})
            continue
        parse_stats.rows_out += 1
        pairs.append(
            {
                "id": rid,
                **seed,
                "problem": parsed.problem,
                "solution": parsed.solution,
                "tests": parsed.tests,
                "teacher_model": teacher_cfg.model,
                "temperature": teacher_cfg.temperature,
                "top_p": teacher_cfg.top_p,
                "request_seed": reply.request_seed,
                "max_tokens": reply.max_tokens,
                "output_format": teacher_cfg.output_format,
                "finish_reason": reply.finish_reason,
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "system_fingerprint": reply.system_fingerprint,
                "created_at": reply.received_at.astimezone(dt.timezone.utc),
            }
        )
    return pairs, failures, teacher_stats, parse_stats


async def generate_shard(seeds_path: Path, session, teacher_cfg, pairs_path: Path, failures_path: Path) -> dict:
    """Send one shard's seeds to the teacher and stage what comes back. Returns a JSON-able summary.

    Reading seeds, parsing replies and writing Parquet run in a thread: the event loop
    keeps answering the other shards' in-flight requests meanwhile."""
    seeds = await asyncio.to_thread(pq.read_table, seeds_path)
    settled = None
    if teacher_cfg.teacher_mode == "batch":  # buy the replies through the Batch API into the cache first
        from tasks.teacher.batch_run import reprice_live_fallback, run_batches

        settled = await run_batches(session, seeds)
    replies, session_stats = await session.complete_shard(seeds, settled=settled)
    if settled is not None:
        reprice_live_fallback(settled, replies, session_stats, teacher_cfg)
    return await asyncio.to_thread(
        _stage_replies, seeds_path, seeds, replies, session_stats, teacher_cfg, pairs_path, failures_path
    )


def _stage_replies(seeds_path: Path, seeds: pa.Table, replies, session_stats, teacher_cfg, pairs_path: Path,
                   failures_path: Path) -> dict:
    pairs, failures, teacher_stats, parse_stats = build_pair_rows(seeds, replies, teacher_cfg)
    teacher_stats.seconds = session_stats.seconds
    teacher_stats.extra = session_stats.extra
    write_parquet_atomic(pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA), pairs_path)
    write_parquet_atomic(pa.Table.from_pylist(failures, schema=AUDIT_SCHEMA), failures_path)
    return {
        "shard": seeds_path.stem,
        "seeds": seeds.num_rows,
        "pairs": len(pairs),
        "pairs_path": str(pairs_path),
        "failures_path": str(failures_path),
        "teacher": teacher_stats.as_dict(),
        "parse": parse_stats.as_dict(),
    }


def merge_summaries(summaries: list[dict]) -> tuple[StageStats, StageStats, pa.Table]:
    """The generation stage over all shards: teacher stats, parse stats, and the failures
    audit (shard order)."""
    teacher, parse = StageStats("teacher"), StageStats("parse")
    for s in summaries:
        teacher.merge(StageStats.from_dict("teacher", s["teacher"]))
        parse.merge(StageStats.from_dict("parse", s["parse"]))
    failures = [pq.read_table(s["failures_path"]) for s in summaries]
    return teacher, parse, pa.concat_tables(failures) if failures else AUDIT_SCHEMA.empty_table()
