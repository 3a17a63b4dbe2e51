"""The cost forecast (tasks/teacher/forecast.py): exact prompt tokens, completion from history,
cost in both modes, and close to what the live run then reports -- without sending anything."""

from __future__ import annotations

import asyncio

import pyarrow.parquet as pq
import pytest

from support.batch_shards import run_shard, seeds_table, teacher_config, write_seed_file
from tasks.teacher.forecast import DEFAULT_COMPLETION_TOKENS, forecast


def test_forecast_within_10_percent_of_the_live_run(tmp_path, fake_teacher):
    fake_teacher.configure(reply_chars=1200)  # replies of a known, realistic length
    cfg = teacher_config(fake_teacher.base_url, "live", max_tokens_cap=2000)
    work = tmp_path / "w"
    cache = work / ".cache" / "requests.sqlite"
    # An earlier refresh of other seeds gives the cache a history of this teacher's replies.
    asyncio.run(run_shard(cfg, work, write_seed_file(tmp_path / "earlier.parquet", 30, start=1000), "earlier"))
    fake_teacher.reset()

    seeds = write_seed_file(tmp_path / "new.parquet", 60)
    f = forecast(cfg, [pq.read_table(seeds)], cache)
    assert fake_teacher.stats()["requests"] == 0  # the forecast sent nothing
    assert f["completion_estimate"]["source"] == "history" and f["completion_estimate"]["history_replies"] == 30

    live = asyncio.run(run_shard(cfg, work, seeds))
    extra = live["teacher"]["extra"]
    assert f["requests"] == 60 == extra["requests"]
    assert f["prompt_tokens"] == extra["tokens_in"]  # counted exactly, as the provider bills them
    assert f["completion_tokens"] == pytest.approx(extra["tokens_out"], rel=0.10)
    assert f["cost_usd"]["live"] == pytest.approx(extra["cost_usd"], rel=0.10)
    assert f["cost_usd"]["batch"] == pytest.approx(f["cost_usd"]["live"] / 2, abs=2e-6)  # rounded to 1e-6


def test_forecast_without_history_uses_the_format_default_and_skips_cached(tmp_path, fake_teacher):
    cfg = teacher_config(fake_teacher.base_url, "batch", output_format="json", batch_max_requests=7, rpm=30)
    f = forecast(cfg, [seeds_table(20), seeds_table(5, start=20)], None)
    assert f["completion_estimate"] == {"source": "default:json", "tokens_per_reply": DEFAULT_COMPLETION_TOKENS["json"],
                                        "history_replies": 0}
    assert f["completion_tokens"] == 25 * DEFAULT_COMPLETION_TOKENS["json"]
    assert f["batches"] == 3 + 1  # per shard: 20 -> 7 + 7 + 6, 5 -> 5
    assert f["wall_time_s"]["live"]["limited_by"] == "rpm"
    assert f["wall_time_s"]["live"]["expected"] == pytest.approx(25 / 30 * 60, abs=0.1)

    # Replies already in the cache are free: not counted as requests.
    work = tmp_path / "w"
    seeds = write_seed_file(tmp_path / "s.parquet", 10)
    asyncio.run(run_shard(teacher_config(fake_teacher.base_url, "live", output_format="json"), work, seeds))
    again = forecast(cfg, [seeds_table(20)], work / ".cache" / "requests.sqlite")
    assert (again["cached"], again["requests"]) == (10, 10)
    assert fake_teacher.stats()["requests"] == 10  # only the live run's
