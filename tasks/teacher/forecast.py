"""The cost forecast of a refresh, before any request: requests, tokens, cost, wall time.

Every request the run would send is built exactly as the session builds it (same prompt,
same max_tokens, same content address), so requests the reply cache already answers are
known to be free. Prompt tokens are counted exactly with tiktoken (system + user, as a
provider bills them). Completion tokens cannot be known before the teacher writes them:

- with a history (replies this teacher -- model and cache scope -- gave before, in the
  reply cache), each request is expected to take the mean completion of that history,
  capped at its max_tokens;
- without one, `DEFAULT_COMPLETION_TOKENS` per output format (below), capped likewise.

Cost is given for both modes: live at the live price, batch at live x (1 - batch_discount).
Wall time (live) is the slowest of three bounds: requests per minute (`rpm`), tokens per
minute (`tpm`, prompt + max_tokens as providers count them) and the in-flight cap
(`concurrency` requests, each taking `ASSUMED_LATENCY_S` plus its completion at
`ASSUMED_TOKENS_PER_S`). A batch returns within its completion window (24 h); its wall
time is the provider's, not forecast. Nothing is sent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import orjson
import pyarrow as pa

from tasks.teacher.batch_requests import batch_line, split_at_limits
from tasks.teacher.cache import endpoint_scope
from tasks.teacher.config import TeacherConfig
from tasks.teacher.prompts import SYSTEM_PROMPT

# Completion tokens expected per reply with no history. A rough prior: the paper's
# OSS-Instruct replies (problem + solution, ~2 KB of text) are ~500 tokens; the tests
# variants add a tests section. Replaced by the cache's own mean after the first run.
DEFAULT_COMPLETION_TOKENS = {"sections": 500, "json": 520, "sections_tests": 700, "json_tests": 720}
ASSUMED_LATENCY_S = 0.5  # time to first token, per request (live wall-time bound only)
ASSUMED_TOKENS_PER_S = 60.0  # decode speed of one request (live wall-time bound only)
MIN_HISTORY = 1  # replies of this teacher needed before the history replaces the default


def completion_history(cache_path: Path | None, cfg: TeacherConfig) -> tuple[int, float] | None:
    """(replies, mean completion tokens) this teacher gave before, from the reply cache; read-only."""
    if cache_path is None or not Path(cache_path).exists():
        return None
    scope = cfg.cache_scope or endpoint_scope(cfg.base_url)
    db = sqlite3.connect(f"file:{cache_path}?mode=ro", uri=True)
    try:
        n, mean = db.execute(
            "SELECT count(*), avg(completion_tokens) FROM replies WHERE endpoint = ? AND model = ?", (scope, cfg.model)
        ).fetchone()
    except sqlite3.OperationalError:  # an empty file: no table yet
        return None
    finally:
        db.close()
    return (n, float(mean)) if n >= MIN_HISTORY else None


def _cached_keys(cache_path: Path | None, cfg: TeacherConfig, keys: list[str]) -> set[str]:
    if cache_path is None or not Path(cache_path).exists():
        return set()
    scope = cfg.cache_scope or endpoint_scope(cfg.base_url)
    db = sqlite3.connect(f"file:{cache_path}?mode=ro", uri=True)
    found: set[str] = set()
    try:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = db.execute(
                f"SELECT key FROM replies WHERE endpoint = ? AND key IN ({','.join('?' * len(chunk))})", [scope, *chunk]
            )
            found.update(row[0] for row in rows)
    except sqlite3.OperationalError:
        pass
    finally:
        db.close()
    return found


class _Tally:
    def __init__(self) -> None:
        self.requests = self.cached = self.too_long = 0
        self.prompt_tokens = self.max_tokens = 0
        self.completion_tokens = 0.0
        self.batches = 0  # each generation shard buys its own batches


def forecast(cfg: TeacherConfig, seed_tables: Iterable[pa.Table], cache_path: Path | None) -> dict:
    """The forecast of sending every seed of `seed_tables` to the teacher (see the module doc).

    One table per generation shard: in batch mode each shard's requests make their own batches."""
    from tasks.teacher.session import TeacherSession  # builds requests; opens nothing until entered

    builder = TeacherSession(cfg.model_copy(update={"max_cost_usd": None}))
    count = builder.counter.count
    system_tokens = count(SYSTEM_PROMPT)
    history = completion_history(cache_path, cfg)
    expected_out = history[1] if history else float(DEFAULT_COMPLETION_TOKENS[cfg.output_format])
    t = _Tally()
    seeds = 0
    for table in seed_tables:
        seeds += table.num_rows
        requests = [builder.build_request(i, s) for i, s in
                    zip(table.column("seed_index").to_pylist(), table.column("seed").to_pylist())]
        cached = _cached_keys(cache_path, cfg, [r.key for r in requests])
        lines = []
        for req in requests:
            if req.max_tokens <= 0:
                t.too_long += 1
            elif req.key in cached:
                t.cached += 1
            else:
                user = orjson.loads(req.body)["messages"][1]["content"]
                t.requests += 1
                t.prompt_tokens += system_tokens + count(user)
                t.max_tokens += req.max_tokens
                t.completion_tokens += min(expected_out, req.max_tokens)
                lines.append(batch_line(req.key, req.body))
        t.batches += len(split_at_limits(lines, cfg.batch_max_requests, cfg.batch_max_bytes))
    return _report(cfg, seeds, t, history, expected_out, builder.encoding)


def _report(cfg: TeacherConfig, seeds: int, t: _Tally, history, expected_out: float, encoding: str) -> dict:
    live_in, live_out = cfg.live_prices()
    batch_in, batch_out = cfg.batch_prices()
    tokens_out = round(t.completion_tokens)
    return {
        "seeds": seeds,
        "requests": t.requests,
        "cached": t.cached,
        "prompt_too_long": t.too_long,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": tokens_out,
        "completion_estimate": {
            "source": "history" if history else f"default:{cfg.output_format}",
            "tokens_per_reply": round(expected_out, 1),
            "history_replies": history[0] if history else 0,
        },
        "max_tokens": t.max_tokens,
        "token_encoding": encoding,
        "price_per_mtok": {"live": [live_in, live_out], "batch": [batch_in, batch_out]},
        "priced": cfg.model_copy(update={"teacher_mode": "live"}).price_sources()["in"] is not None,
        "cost_usd": {
            "live": round((t.prompt_tokens * live_in + tokens_out * live_out) / 1e6, 6),
            "batch": round((t.prompt_tokens * batch_in + tokens_out * batch_out) / 1e6, 6),
        },
        "wall_time_s": {"live": _live_wall_time(cfg, t, expected_out), "batch": None,
                        "batch_window": "24h"},
        "batches": t.batches,
        "mode": cfg.teacher_mode,
    }


def _live_wall_time(cfg: TeacherConfig, t: _Tally, expected_out: float) -> dict:
    per_request_s = ASSUMED_LATENCY_S + expected_out / ASSUMED_TOKENS_PER_S
    bounds = {"concurrency": t.requests * per_request_s / cfg.concurrency}
    if cfg.rpm:  # whole windows' worth of requests, each window rate_window_s long
        bounds["rpm"] = t.requests / cfg.rpm * cfg.rate_window_s
    if cfg.tpm:
        bounds["tpm"] = (t.prompt_tokens + t.max_tokens) / cfg.tpm * cfg.rate_window_s
    limit = max(bounds, key=bounds.get)
    return {"expected": round(bounds[limit], 1), "limited_by": limit,
            "bounds": {k: round(v, 1) for k, v in bounds.items()}}
