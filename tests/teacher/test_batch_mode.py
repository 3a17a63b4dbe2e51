"""Batch mode end to end against the fake Batch API, through the real `openai` SDK.

A shard generated in batch mode gives the same rows as the same seeds generated live;
results come back shuffled and are matched by custom_id; batches split at the limits;
expired requests are retried in a new batch (then live, or dropped) and counted; the budget
stops submission before its limit.
"""

from __future__ import annotations

import asyncio

import pytest

from support.batch_shards import run_shard, teacher_config, write_seed_file
from tasks.teacher.batch_ledger import BatchLedger
from tasks.teacher.cache import endpoint_scope

ROW_COLUMNS_THAT_DIFFER = ("created_at",)  # when the reply arrived: differs between any two runs


def comparable(table):
    rows = table.drop_columns(list(ROW_COLUMNS_THAT_DIFFER)).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


def test_batch_rows_equal_live_rows(tmp_path, fake_teacher):
    seeds = write_seed_file(tmp_path / "seeds.parquet", 40)
    fake_teacher.configure(batch_delay_s=0.05, rate_length=0.1)
    live = asyncio.run(run_shard(teacher_config(fake_teacher.base_url, "live"), tmp_path / "live", seeds))
    live_stats = fake_teacher.stats()
    fake_teacher.reset()

    cfg = teacher_config(fake_teacher.base_url, "batch", batch_max_requests=15)
    batch = asyncio.run(run_shard(cfg, tmp_path / "batch", seeds))
    stats = fake_teacher.stats()

    assert comparable(batch["pairs_table"]) == comparable(live["pairs_table"])
    assert batch["failures_table"].to_pylist() == live["failures_table"].to_pylist()  # length_truncated drops alike
    assert live["parse"]["dropped"] and batch["parse"] == {**live["parse"], "seconds": batch["parse"]["seconds"]}
    # Split at 15 requests per batch: 15 + 15 + 10; no live request at all.
    assert stats["batch"]["batches_created"] == 3
    assert stats["batch"]["batch_requests_received"] == 40
    assert stats["by_outcome"] == {"batch_200": 40}
    assert stats["repeats"] == 0
    extra = batch["teacher"]["extra"]
    assert extra["mode"] == "batch" and extra["batches_created"] == 3 and extra["batch_replies"] == 40
    assert extra["requests"] == 0 and extra["cache_hits"] == 0  # bought in this run, not an earlier one
    # Same tokens as live, at half the price.
    live_extra = live["teacher"]["extra"]
    assert (extra["tokens_in"], extra["tokens_out"]) == (live_extra["tokens_in"], live_extra["tokens_out"])
    assert (live_stats["prompt_tokens"], live_stats["completion_tokens"]) == (extra["tokens_in"], extra["tokens_out"])
    assert extra["cost_usd"] == pytest.approx(live_extra["cost_usd"] / 2, rel=1e-6)


def test_rerun_after_batch_submits_nothing(tmp_path, fake_teacher):
    seeds = write_seed_file(tmp_path / "seeds.parquet", 12)
    cfg = teacher_config(fake_teacher.base_url, "batch")
    first = asyncio.run(run_shard(cfg, tmp_path / "w", seeds))
    again = asyncio.run(run_shard(cfg, tmp_path / "w", seeds))
    stats = fake_teacher.stats()
    assert stats["batch"]["batches_created"] == 1
    assert again["teacher"]["extra"]["cache_hits"] == 12 and again["teacher"]["extra"]["batches_created"] == 0
    assert comparable(again["pairs_table"]) == comparable(first["pairs_table"])


@pytest.mark.parametrize("fallback", ["live", "none"])
def test_expired_part_is_retried_and_counted(tmp_path, fake_teacher, fallback):
    seeds = write_seed_file(tmp_path / "seeds.parquet", 60)
    fake_teacher.configure(batch_expire_rate=0.3)
    cfg = teacher_config(fake_teacher.base_url, "batch", batch_retries=1, batch_fallback=fallback)
    result = asyncio.run(run_shard(cfg, tmp_path / "w", seeds))
    stats = fake_teacher.stats()
    extra = result["teacher"]["extra"]

    expired_first = extra["batch_retried"]["batch_expired"]  # expired in the first batch, put in a second
    assert 5 < expired_first < 40
    expired_total = extra["batch_failures"]["batch_expired"]
    expired_twice = expired_total - expired_first
    assert stats["batch"]["lines_batch_expired"] == expired_total
    assert stats["batch"]["batches_created"] == 2 and stats["batch"]["batches_expired"] >= 1
    assert extra["batch_replies"] == 60 - expired_twice
    if fallback == "live":
        assert extra["batch_fallback_live"] == {"batch_expired": expired_twice}
        assert stats["by_outcome"].get("200", 0) == expired_twice == extra["requests"]
        assert result["pairs"] == 60
        # The live ones cost the live price: cost = batch price on the rest + live price on them.
        assert extra["live_fallback_replies"] == expired_twice
    else:
        assert stats["by_outcome"].get("200", 0) == 0
        assert result["teacher"]["dropped"] == ({"batch_expired": expired_twice} if expired_twice else {})
        assert result["pairs"] == 60 - expired_twice
    assert stats["repeats_of_completed"] == 0  # nothing answered was asked again


@pytest.mark.parametrize("run_ledger", [False, True], ids=["process-budget", "run-budget"])
def test_budget_stops_submission_before_the_limit(tmp_path, fake_teacher, run_ledger):
    seeds = write_seed_file(tmp_path / "seeds.parquet", 30)
    # Each request's worst case is its prompt (~150 tokens) + max_tokens (100): a 2,000-token
    # budget holds 7-8 of them; the rest are never submitted.
    cfg = teacher_config(fake_teacher.base_url, "batch", max_tokens_cap=100, max_total_tokens=2000)
    ledger = tmp_path / "w" / ".cache" / "budget" / "run.sqlite" if run_ledger else None
    result = asyncio.run(run_shard(cfg, tmp_path / "w", seeds, ledger_path=ledger))
    stats = fake_teacher.stats()
    submitted = stats["batch"]["batch_requests_received"]
    assert 0 < submitted < 12
    assert result["teacher"]["dropped"] == {"budget_exhausted": 30 - submitted}
    extra = result["teacher"]["extra"]
    assert extra["batch_requests_submitted"] == submitted and extra["budget_stopped"]
    assert extra["tokens_in"] + extra["tokens_out"] <= 2000 + 250  # at most one request's worst case over


def test_ledger_records_every_request(tmp_path, fake_teacher):
    seeds = write_seed_file(tmp_path / "seeds.parquet", 9)
    cfg = teacher_config(fake_teacher.base_url, "batch", batch_max_requests=4)
    asyncio.run(run_shard(cfg, tmp_path / "w", seeds))
    ledger = BatchLedger(tmp_path / "w" / ".cache" / "batches.sqlite", endpoint_scope(fake_teacher.base_url))
    try:
        assert ledger.counts() == {"ingested": 3}
    finally:
        ledger.close()
    assert not list((tmp_path / "w" / ".cache" / "batch-inputs").glob("*.jsonl"))  # input files removed once ingested
