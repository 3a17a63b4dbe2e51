"""TeacherSession against the fake teacher: a real HTTP server on loopback that counts what it sees."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pyarrow as pa
import pytest

from tasks.core.errors import UserError
from tasks.generation.parsing import parse_reply
from tasks.teacher.config import TeacherConfig
from tasks.teacher.credentials import TeacherAuthError
from tasks.teacher.preflight import preflight
from tasks.teacher.session import TeacherSession

REPO = Path(__file__).resolve().parents[2]
RETRYABLE = {"http_429", "http_500", "http_504", "connection", "malformed_body", "timeout"}


def seeds_table(n: int, start: int = 0) -> pa.Table:
    idx = list(range(start, start + n))
    return pa.table(
        {
            "seed_index": pa.array(idx, pa.int64()),
            "seed": [f"def scale_{i}(x):\n    return x * {i}\n" for i in idx],
        }
    )


def config(url: str, **overrides) -> TeacherConfig:
    fast = {"retry_base_s": 0.01, "retry_max_s": 0.05, "concurrency": 64, "api_key_env": ""}
    return TeacherConfig(base_url=url, model="fake-teacher", **{**fast, **overrides})


def run(cfg: TeacherConfig, seeds: pa.Table, cache_path=None, **kwargs):
    async def go():
        async with TeacherSession(cfg, cache_path=cache_path, **kwargs) as session:
            replies, stats = await session.complete_shard(seeds)
            return replies, stats, session.summary()

    return asyncio.run(go())


STABLE = (
    "key",
    "seed_index",
    "content",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "system_fingerprint",
    "max_tokens",
    "request_seed",
    "error",
)


def stable(replies):
    return [tuple(getattr(r, f) for f in STABLE) for r in replies]


# ---------------------------------------------------------------------------- happy path
@pytest.mark.parametrize("output_format", ["sections", "json"])
def test_every_seed_gets_a_parseable_reply_in_order(fake_teacher, output_format):
    seeds = seeds_table(40, start=100)
    replies, stats, _ = run(config(fake_teacher.base_url, output_format=output_format), seeds)

    assert [r.seed_index for r in replies] == list(range(100, 140))
    assert [r.request_seed for r in replies] == [976 + i for i in range(100, 140)]
    assert all(r.error is None and r.finish_reason == "stop" and r.max_tokens == 2500 for r in replies)
    pairs = [parse_reply(r.content, r.finish_reason, output_format) for r in replies]
    assert all(hasattr(p, "problem") for p in pairs), pairs[:3]
    assert len({(p.problem, p.solution) for p in pairs}) == 40  # different seeds, different pairs
    assert stats.rows_in == stats.rows_out == 40 and not stats.dropped
    server = fake_teacher.stats()
    assert server["requests"] == server["unique_requests"] == 40
    assert (server["prompt_tokens"], server["completion_tokens"]) == (
        stats.extra["tokens_in"],
        stats.extra["tokens_out"],
    )


def test_same_request_twice_in_a_shard_is_sent_once(fake_teacher):
    seeds = pa.concat_tables([seeds_table(5), seeds_table(5)])
    replies, stats, _ = run(config(fake_teacher.base_url), seeds)
    assert stable(replies[:5]) == stable(replies[5:])
    assert fake_teacher.stats()["requests"] == 5 and stats.rows_out == 10


def test_prompt_that_fills_the_context_is_not_sent(fake_teacher):
    seeds = pa.table({"seed_index": [0, 1], "seed": ["x = 1", "word " * 9000]})
    replies, stats, _ = run(config(fake_teacher.base_url), seeds)
    assert replies[0].error is None
    assert replies[1].error == "prompt_too_long" and replies[1].max_tokens <= 0
    assert fake_teacher.stats()["requests"] == 1 and dict(stats.dropped) == {"prompt_too_long": 1}


# ---------------------------------------------------------------------------- faults
@pytest.mark.parametrize("transport", ["aiohttp", "openai"])
def test_faults_every_seed_accounted_no_duplicates_tokens_once(fake_teacher, transport):
    fake_teacher.configure(
        rate_429=0.06,
        retry_after_s=0.05,
        rate_500=0.05,
        rate_504=0.04,
        gateway_delay_s=0.1,
        rate_reset=0.05,
        rate_truncated=0.05,
        rate_length=0.1,
    )
    n = 300
    replies, stats, summary = run(config(fake_teacher.base_url, transport=transport), seeds_table(n))
    server = fake_teacher.stats()

    # every seed: one reply, in order, each with content or a reason
    assert [r.seed_index for r in replies] == list(range(n))
    assert all((r.content is not None) != (r.error is not None) for r in replies)
    assert stats.rows_out + stats.dropped_total == n
    assert len({r.key for r in replies}) == n  # no duplicates
    # transient faults were retried, and each kind was seen
    assert all(r.error is None for r in replies), stats.dropped
    for kind in ("429", "500", "504", "reset", "truncated"):
        assert server["by_outcome"].get(kind, 0) > 0, server["by_outcome"]
    retries = stats.extra["retries"]
    assert set(retries) <= RETRYABLE and {"http_429", "http_500", "http_504", "malformed_body"} <= set(retries)
    # resets: aiohttp says "connection"; the SDK's aiohttp adapter reports them as connect timeouts
    assert retries.get("connection", 0) + retries.get("timeout", 0) >= server["by_outcome"]["reset"]
    assert stats.extra["requests"] == server["requests"] == n + sum(retries.values())
    # a completed request is never sent again; tokens are counted once, as the server billed them
    assert server["repeats_of_completed"] == 0 and server["completed_requests"] == n
    assert (stats.extra["tokens_in"], stats.extra["tokens_out"]) == (server["prompt_tokens"], server["completion_tokens"])
    assert summary.extra["tokens_in"] == server["prompt_tokens"]
    # finish_reason=length is a reply (paid for, cached); parsing drops it with its reason
    truncated = [r for r in replies if r.finish_reason == "length"]
    assert truncated and all(parse_reply(r.content, r.finish_reason).reason == "length_truncated" for r in truncated)


def test_exhausted_retries_are_counted_failures(fake_teacher):
    fake_teacher.configure(rate_500=0.5)
    n = 60
    replies, stats, _ = run(config(fake_teacher.base_url, max_retries=1), seeds_table(n))
    failed = [r for r in replies if r.error]
    assert failed and all(r.error == "http_500_retries_exhausted" and r.attempts == 2 for r in failed)
    assert stats.rows_out + stats.dropped["http_500_retries_exhausted"] == n
    assert len(replies) == n


def test_timeouts_are_retried_then_counted(fake_teacher):
    fake_teacher.configure(latency=1.0)
    replies, stats, _ = run(config(fake_teacher.base_url, request_timeout_s=0.2, max_retries=1), seeds_table(3))
    assert [r.error for r in replies] == ["timeout_retries_exhausted"] * 3
    assert stats.extra["retries"] == {"timeout": 3}


def test_non_retryable_errors_fail_at_once(fake_teacher):
    fake_teacher.configure(models=["another-model"])
    replies, stats, _ = run(config(fake_teacher.base_url), seeds_table(4))
    assert [(r.error, r.attempts) for r in replies] == [("http_404", 1)] * 4
    assert fake_teacher.stats()["requests"] == 4 and dict(stats.dropped) == {"http_404": 4}

    fake_teacher.configure(models=None, context_size=300)
    fake_teacher.reset()
    replies, stats, _ = run(config(fake_teacher.base_url), seeds_table(4))
    assert [(r.error, r.attempts) for r in replies] == [("http_400_context_length", 1)] * 4
    assert fake_teacher.stats()["requests"] == 4


def test_401_stops_the_run_with_a_clear_message(fake_teacher, monkeypatch):
    fake_teacher.configure(api_key="sk-right-one")
    monkeypatch.setenv("OSSFORGE_TEST_TEACHER_KEY", "sk-wrong-one-31337")
    cfg = config(fake_teacher.base_url, api_key_env="OSSFORGE_TEST_TEACHER_KEY", concurrency=4)
    with pytest.raises(TeacherAuthError) as info:
        run(cfg, seeds_table(50))
    message = str(info.value)
    assert "401" in message and "$OSSFORGE_TEST_TEACHER_KEY" in message and "sk-wrong" not in message
    assert fake_teacher.stats()["requests"] < 50  # stopped, not one 401 per seed


# ---------------------------------------------------------------------------- rate limits
@pytest.fixture
def fake_teacher_process():
    """The fake teacher in its own process (`python -m tests.support.fake_teacher`), so its arrival stamps do
    not wait on this process's GIL: window counts then measure the client, not the test rig."""
    from support.fake_teacher import FakeTeacherClient

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import free_port, wait_for_http

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_teacher", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/stats", timeout=60, proc=proc)
        yield FakeTeacherClient(f"http://127.0.0.1:{port}/v1")
    finally:
        proc.terminate()
        proc.wait(10)


def test_rpm_never_exceeded_in_any_window(fake_teacher_process):
    fake_teacher = fake_teacher_process
    fake_teacher.configure(rate_429=0.1, retry_after_s=0.05, rate_500=0.05)
    cfg = config(fake_teacher.base_url, rpm=12, rate_window_s=1.0)
    replies, stats, _ = run(cfg, seeds_table(40))
    server = fake_teacher.stats(window=1.0)
    assert all(r.error is None for r in replies)
    assert server["requests"] > 40  # retries go through the limiter too
    assert server["max_requests_in_window"] <= 12, server


def test_tpm_never_exceeded_in_any_window(fake_teacher_process):
    fake_teacher = fake_teacher_process
    cfg = config(fake_teacher.base_url, tpm=900, max_tokens_cap=40, rate_window_s=1.0)
    replies, stats, _ = run(cfg, seeds_table(16))
    server = fake_teacher.stats(window=1.0)
    assert all(r.error is None for r in replies)
    # the server counts prompt + max_tokens per request, as providers do
    assert 0 < server["max_tokens_in_window"] <= 900, server


def test_rpm_counts_real_minutes(fake_teacher):
    cfg = config(fake_teacher.base_url, rpm=10)  # the default 60 s window

    async def go():
        async with TeacherSession(cfg) as session:
            task = asyncio.ensure_future(session.complete_shard(seeds_table(14)))
            await asyncio.sleep(2.0)
            seen = fake_teacher.server.counters.requests
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return seen

    assert asyncio.run(go()) == 10  # the rest wait for the minute to roll


def test_retry_after_pauses_new_requests(fake_teacher):
    fake_teacher.configure(rate_429=1.0, retry_after_s=0.3)
    started = time.monotonic()
    replies, stats, _ = run(config(fake_teacher.base_url, max_retries=2, concurrency=1), seeds_table(2))
    assert [r.error for r in replies] == ["http_429_retries_exhausted"] * 2
    # 2 seeds x 2 waits of >= 0.3 s each (Retry-After honoured, not the 10 ms backoff)
    assert time.monotonic() - started >= 1.2


# ---------------------------------------------------------------------------- budget
def test_budget_stops_new_requests_and_counts_cached_spend(fake_teacher, tmp_path):
    probe, _, _ = run(config(fake_teacher.base_url), seeds_table(1))
    per_request = probe[0].prompt_tokens + probe[0].completion_tokens
    fake_teacher.reset()
    cfg = config(
        fake_teacher.base_url,
        concurrency=1,
        max_total_tokens=per_request * 10,
        price_per_mtok_in=1000.0,
        price_per_mtok_out=2000.0,
    )
    cache = tmp_path / "requests.sqlite"
    replies, stats, _ = run(cfg, seeds_table(30), cache)
    done = [r for r in replies if r.error is None]
    assert 5 <= len(done) < 30 and stats.extra["budget_stopped"] is True
    assert stats.dropped["budget_exhausted"] == 30 - len(done)
    spent = stats.extra["tokens_in"] + stats.extra["tokens_out"]
    assert spent <= cfg.max_total_tokens + per_request * 1.5  # at most about one request over
    expected_cost = (stats.extra["tokens_in"] * 1000 + stats.extra["tokens_out"] * 2000) / 1e6
    assert stats.extra["cost_usd"] == pytest.approx(expected_cost, rel=1e-6)

    # Same budget again: what is cached is free but counts; nothing new is bought.
    sent_before = fake_teacher.stats()["requests"]
    again, stats2, _ = run(cfg, seeds_table(30), cache)
    assert fake_teacher.stats()["requests"] == sent_before
    assert stats2.extra["cache_hits"] == len(done) and stats2.extra["budget_stopped"] is True


def test_cost_budget_in_dollars(fake_teacher):
    cfg = config(fake_teacher.base_url, concurrency=2, max_cost_usd=0.5, price_per_mtok_in=1000.0, price_per_mtok_out=1000.0)
    replies, stats, _ = run(cfg, seeds_table(20))
    assert stats.extra["budget_stopped"] and stats.dropped["budget_exhausted"] > 0
    per_request = (stats.extra["tokens_in"] + stats.extra["tokens_out"]) / stats.rows_out * 1000 / 1e6
    assert stats.extra["cost_usd"] <= 0.5 + 2 * per_request  # concurrency 2: at most ~2 requests over


# ---------------------------------------------------------------------------- cache and resume
def test_rerun_sends_nothing_and_returns_identical_replies(fake_teacher, tmp_path):
    cache = tmp_path / "requests.sqlite"
    first, _, _ = run(config(fake_teacher.base_url), seeds_table(50), cache)
    sent = fake_teacher.stats()["requests"]
    second, stats, _ = run(config(fake_teacher.base_url), seeds_table(50), cache)
    assert fake_teacher.stats()["requests"] == sent
    assert stable(first) == stable(second)
    assert [r.received_at for r in first] == [r.received_at for r in second]
    assert all(r.from_cache for r in second) and stats.extra["cache_hits"] == 50


def test_progress_callback_sees_every_seed(fake_teacher, tmp_path):
    cache = tmp_path / "requests.sqlite"
    run(config(fake_teacher.base_url), seeds_table(10), cache)
    seen = []
    run(config(fake_teacher.base_url), seeds_table(20), cache, progress=seen.append)
    assert sorted(r.seed_index for r in seen) == list(range(20))
    assert sum(r.from_cache for r in seen) == 10


KILLED_RUN = """
import asyncio, sys
import pyarrow as pa
from tasks.teacher.config import TeacherConfig
from tasks.teacher.session import TeacherSession
url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = TeacherConfig(base_url=url, model="fake-teacher", api_key_env="", concurrency=16,
                    retry_base_s=0.01, retry_max_s=0.05)
idx = list(range(n))
seeds = pa.table({"seed_index": pa.array(idx, pa.int64()),
                  "seed": [f"def scale_{i}(x):\\n    return x * {i}\\n" for i in idx]})
async def main():
    async with TeacherSession(cfg, cache_path=cache) as session:
        await session.complete_shard(seeds)
asyncio.run(main())
"""


def cached_keys(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT key FROM replies")}


def test_sigkill_mid_shard_then_resume_resends_nothing_completed(fake_teacher, tmp_path):
    n = 600
    fake_teacher.configure(latency=0.1, rate_500=0.05, rate_reset=0.03, rate_truncated=0.03, rate_length=0.05)
    reference, _, _ = run(config(fake_teacher.base_url, concurrency=64), seeds_table(n), tmp_path / "reference.sqlite")
    fake_teacher.reset()

    cache = tmp_path / "requests.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, fake_teacher.base_url, str(cache), str(n)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 60
    persisted = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            persisted = len(cached_keys(cache)) if cache.exists() else 0
        except sqlite3.OperationalError:
            persisted = 0  # the table is not there yet
        if persisted >= 150:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = cached_keys(cache)
    assert 150 <= len(kept) < n, "the kill should land mid-shard"

    resumed, stats, _ = run(config(fake_teacher.base_url, concurrency=64), seeds_table(n), cache)
    server = fake_teacher.stats(keys=True)
    # nothing persisted before the kill was sent again
    assert not kept & set(server["repeated_after_completion"]), server["repeats_of_completed"]
    assert stats.extra["cache_hits"] == len(kept)
    # and the rows are the ones an uninterrupted run gives
    assert stable(resumed) == stable(reference)

    # a third run: all from the cache, byte-identical, nothing sent
    sent = server["requests"]
    third, _, _ = run(config(fake_teacher.base_url), seeds_table(n), cache)
    assert fake_teacher.stats()["requests"] == sent
    assert stable(third) == stable(resumed) and [r.received_at for r in third] == [r.received_at for r in resumed]


# ---------------------------------------------------------------------------- preflight
def test_preflight_passes_on_a_healthy_teacher(fake_teacher):
    preflight(config(fake_teacher.base_url))
    fake_teacher.configure(models=["listed-alias"])  # not listed: the 1-token probe decides (404 here)
    with pytest.raises(UserError, match="has no model 'fake-teacher'"):
        preflight(config(fake_teacher.base_url))


def test_preflight_unreachable_is_one_line():
    with pytest.raises(UserError, match="unreachable") as info:
        preflight(config("http://127.0.0.1:9/v1"), timeout_s=2)
    assert "\n" not in str(info.value)


def test_preflight_missing_key_for_a_remote_teacher(monkeypatch):
    monkeypatch.delenv("OSSFORGE_UNSET_KEY", raising=False)
    cfg = TeacherConfig(base_url="https://teacher.invalid/v1", model="m", api_key_env="OSSFORGE_UNSET_KEY")
    with pytest.raises(UserError, match=r"set \$OSSFORGE_UNSET_KEY"):
        preflight(cfg)


def test_preflight_401(fake_teacher, monkeypatch):
    fake_teacher.configure(api_key="sk-right-one")
    monkeypatch.setenv("OSSFORGE_TEST_TEACHER_KEY", "sk-wrong-one-31337")
    with pytest.raises(TeacherAuthError, match="rejected the API key") as info:
        preflight(config(fake_teacher.base_url, api_key_env="OSSFORGE_TEST_TEACHER_KEY"))
    assert "sk-wrong" not in "".join(traceback.format_exception(info.value))


def test_config_rejects_bad_urls_and_unknown_fields():
    with pytest.raises(ValueError):
        TeacherConfig(base_url="127.0.0.1:8000", model="m")
    with pytest.raises(ValueError):
        TeacherConfig(base_url="http://x/v1", model="m", api_key="sk-nope")  # no field for a secret value


# ---------------------------------------------------------------------------- secrets
PLANTED = "sk-ossforge-PLANTED-7d41c9e2b8aa"


def test_planted_key_never_leaves_the_environment(fake_teacher, tmp_path, monkeypatch, caplog, capsys):
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OSSFORGE_TEST_TEACHER_KEY", PLANTED)
    fake_teacher.configure(api_key=PLANTED, rate_500=0.1, rate_429=0.1, retry_after_s=0.02, rate_reset=0.05)
    cfg = config(fake_teacher.base_url, api_key_env="OSSFORGE_TEST_TEACHER_KEY")
    preflight(cfg)
    cache = tmp_path / "cache" / "requests.sqlite"
    replies, stats, summary = run(cfg, seeds_table(60), cache)
    assert all(r.error is None for r in replies) and fake_teacher.stats()["requests"] > 60

    # Then a wrong key: the server echoes it back in its 401 body, as OpenAI does.
    wrong = "sk-ossforge-WRONG-0f0f0f0f"
    monkeypatch.setenv("OSSFORGE_TEST_TEACHER_KEY", wrong)
    with pytest.raises(TeacherAuthError) as info:
        run(cfg, seeds_table(5, start=500), cache)
    error_text = "".join(traceback.format_exception(info.value))

    captured = capsys.readouterr()
    texts = {
        "config repr": repr(cfg),
        "config json": cfg.model_dump_json(),
        "replies": repr(replies),
        "stats": json.dumps(stats.as_dict(), default=str),
        "summary": json.dumps(summary.as_dict(), default=str),
        "logs": caplog.text,
        "stdout": captured.out,
        "stderr": captured.err,
        "auth error": error_text,
    }
    for path in tmp_path.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    assert any(str(p).endswith(("requests.sqlite", "requests.sqlite-wal")) for p in texts)
    for secret in (PLANTED, wrong):
        leaks = [where for where, text in texts.items() if secret in text]
        assert not leaks, f"{secret} found in {leaks}"


@pytest.mark.slow
def test_key_from_a_prefect_secret_block(fake_teacher, prefect_server, monkeypatch):
    from prefect.blocks.system import Secret

    Secret(value=PLANTED).save("ossforge-test-teacher-key", overwrite=True)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake_teacher.configure(api_key=PLANTED)
    cfg = config(fake_teacher.base_url, api_key_env="OPENAI_API_KEY", api_key_secret_block="ossforge-test-teacher-key")
    preflight(cfg)
    replies, _, _ = run(cfg, seeds_table(3))
    assert all(r.error is None for r in replies)
    assert PLANTED not in cfg.model_dump_json()
    with pytest.raises(UserError, match="cannot load Prefect Secret block 'no-such-block'"):
        preflight(config(fake_teacher.base_url, api_key_secret_block="no-such-block"))


@pytest.mark.slow
def test_prefect_global_rate_limit_taken_per_batch(fake_teacher, prefect_server):
    """Several worker processes share a provider budget through a Prefect rate limit, a batch at a time."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from tasks.teacher.limits import prefect_rate_limit_permits

    name = "ossforge-test-teacher-rpm"

    async def go():
        async with get_client() as client:
            try:
                await client.delete_global_concurrency_limit_by_name(name)
            except Exception:
                pass
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=100, slot_decay_per_second=100)
            )
        permits = prefect_rate_limit_permits(name, batch=10)
        async with TeacherSession(config(fake_teacher.base_url), permits=permits) as session:
            replies, _ = await session.complete_shard(seeds_table(35))
        return permits.fetches, replies

    fetches, replies = asyncio.run(go())
    assert all(r.error is None for r in replies)
    assert fetches == 4  # 35 requests, permits fetched 10 at a time: 4 Prefect calls, not 35
