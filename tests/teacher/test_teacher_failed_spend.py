"""Spend on failed requests (issue 14): a request that timed out or lost its connection may
still be billed by the provider, so its prompt tokens count as "possibly billed": against
the budget, and in the manifest's usage."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from tasks.teacher.config import TeacherConfig
from tasks.teacher.session import TeacherSession

REPO = Path(__file__).resolve().parents[2]


def seeds_table(n: int) -> pa.Table:
    return pa.table({"seed_index": pa.array(range(n), pa.int64()), "seed": [f"def f_{i}(x):\n    return x + {i}\n" for i in range(n)]})


def run(cfg: TeacherConfig, seeds: pa.Table):
    async def go():
        async with TeacherSession(cfg) as session:
            replies, stats = await session.complete_shard(seeds)
            return replies, stats

    return asyncio.run(go())


def config(url: str, **overrides) -> TeacherConfig:
    fast = {"retry_base_s": 0.0, "retry_max_s": 0.0, "api_key_env": "", "price_per_mtok_in": 1e6, "price_per_mtok_out": 1e6}
    return TeacherConfig(base_url=url, model="fake-teacher", **{**fast, **overrides})


@pytest.mark.parametrize("fault", ["reset", "timeout"])
def test_failed_requests_count_against_the_budget(fake_teacher, fault):
    # $1 a token: every failed attempt costs its prompt, ~100 tokens = ~$100.
    if fault == "reset":
        fake_teacher.configure(rate_reset=1.0)
        extra = {}
    else:
        fake_teacher.configure(latency=0.5)
        extra = {"request_timeout_s": 0.05}
    cfg = config(fake_teacher.base_url, concurrency=1, max_retries=30, max_cost_usd=350.0, **extra)
    replies, stats = run(cfg, seeds_table(10))
    sent = fake_teacher.stats()["requests"]
    billed = stats.extra["possibly_billed_requests"]
    # Before: every seed retried 31 times (310 requests, $0 spent). Now: the budget stops
    # after about 350 / ~100 prompt tokens of possibly billed attempts.
    assert billed == stats.extra["requests"] == sent
    assert 2 <= sent <= 6, sent
    assert stats.extra["budget_stopped"] is True
    assert stats.dropped["budget_exhausted"] >= 9
    tokens = stats.extra["possibly_billed_tokens_in"]
    assert tokens >= 50 * sent and stats.extra["possibly_billed_cost_usd"] == pytest.approx(tokens * 1.0)
    assert stats.extra["cost_usd"] == 0  # nothing was answered: the confirmed cost stays apart


def test_the_manifest_counts_possibly_billed_requests(prefect_server, fake_teacher, tmp_path):
    fake_teacher.configure(rate_reset=0.3, fault_salt="possibly-billed")
    out = tmp_path / "out"
    args = [
        sys.executable, "-m", "ossforge.cli", "refresh", "--num-seeds", "20", "--teacher-base-url", fake_teacher.base_url,
        "--teacher-model", "fake-teacher", "--api-key-env", "", "--output-dir", str(out), "--no-progress",
        "--no-decontaminate", "--no-near-dedup", "--price-in", "1", "--price-out", "2",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    resets = fake_teacher.stats()["by_outcome"].get("reset", 0)
    assert resets > 0
    billed = json.loads((out / "manifest.json").read_text())["usage"]["possibly_billed"]
    assert billed["requests"] == resets
    assert billed["prompt_tokens"] >= 50 * resets
    assert billed["cost_usd"] == pytest.approx(billed["prompt_tokens"] / 1e6, abs=1e-6)
