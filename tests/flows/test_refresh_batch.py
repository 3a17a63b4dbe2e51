"""`ossforge refresh --teacher-mode batch` and `--dry-run` end to end: the real CLI, a real
Prefect server, the fake teacher's Batch API through the real openai SDK."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support.fake_teacher import FakeTeacher

PLANTED_KEY = "sk-ossforge-planted-batch-4b9e1c7a2d"


@pytest.fixture(scope="module")
def teacher():
    server = FakeTeacher(latency=0.01, rate_length=0.05, api_key=PLANTED_KEY, batch_delay_s=0.2)
    url = server.start_in_thread()
    yield server, url
    server.stop_thread()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ossforge.cli", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TEACHER_KEY": PLANTED_KEY})


def refresh_args(url: str, out: Path, *extra: str) -> list[str]:
    return ["refresh", "--num-seeds", "24", "--teacher-base-url", url, "--teacher-model", "fake-teacher",
            "--api-key-env", "TEACHER_KEY", "--output-dir", str(out), "--no-progress", "--no-near-dedup",
            "--no-decontaminate", "--price-in", "1", "--price-out", "2", *extra]


def data_rows(out: Path) -> list[dict]:
    rows = pq.read_table(out / "data").drop_columns(["created_at"]).to_pylist()
    return sorted(rows, key=lambda r: r["id"])


def test_batch_refresh_equals_live_refresh(prefect_server, teacher, tmp_path):
    server, url = teacher
    live = run_cli(*refresh_args(url, tmp_path / "live"))
    assert live.returncode == 0, live.stderr[-3000:]
    live_requests = server.counters.requests
    server.reset()

    fast_polls = tmp_path / "batch.json"
    fast_polls.write_text(json.dumps({"teacher": {"batch_poll_s": 0.05, "batch_poll_max_s": 0.2}}))
    batch = run_cli(*refresh_args(url, tmp_path / "batch", "--teacher-mode", "batch", "--config", str(fast_polls)))
    assert batch.returncode == 0, batch.stderr[-3000:]
    stats = server.counters.snapshot(60)
    assert server.batch_api.stats["batches_created"] >= 1
    assert stats["requests"] == live_requests == 24 and stats["by_outcome"] == {"batch_200": 24}  # no live request

    assert data_rows(tmp_path / "batch") == data_rows(tmp_path / "live")
    m_live = json.loads((tmp_path / "live" / "manifest.json").read_text())
    m_batch = json.loads((tmp_path / "batch" / "manifest.json").read_text())
    assert m_batch["accounting"]["balanced"] and m_batch["rows"] == m_live["rows"]
    assert m_batch["usage"]["prompt_tokens"] == m_live["usage"]["prompt_tokens"]
    assert m_batch["usage"]["cost_usd"] == pytest.approx(m_live["usage"]["cost_usd"] / 2, abs=2e-6)  # both rounded to 1e-6
    assert PLANTED_KEY not in batch.stdout + batch.stderr
    # The batch's progress artifact reached the server: requests completed of total, at 100%.
    from prefect.client.orchestration import get_client

    async def progress_artifacts():
        async with get_client() as client:
            return [a for a in await client.read_artifacts() if a.type == "progress"
                    and (a.description or "").startswith("teacher batch")]

    batch_progress = asyncio.run(progress_artifacts())
    assert batch_progress and all(float(a.data) == 100.0 for a in batch_progress), batch_progress
    assert any("of 24" in a.description for a in batch_progress)
    for path in (tmp_path / "batch").rglob("*"):  # ledger, cache, manifest, shards: never the key
        if path.is_file():
            assert PLANTED_KEY.encode() not in path.read_bytes(), path


def test_bad_batch_options_are_one_line_errors(tmp_path):
    for option, value in (("--teacher-mode", "bulk"), ("--batch-fallback", "retry"), ("--batch-discount", "1.5")):
        result = run_cli(*refresh_args("http://127.0.0.1:9/v1", tmp_path / "x", option, value))
        assert result.returncode == 2, (option, result.stderr[-2000:])
        assert "Traceback" not in result.stderr and option.strip("-").split("-")[-1] in result.stderr.lower()


def test_dry_run_forecasts_and_sends_nothing(prefect_server, teacher, tmp_path):
    server, url = teacher
    server.reset()
    out = tmp_path / "dry"
    result = run_cli(*refresh_args(url, out, "--dry-run", "--rpm", "600", "--teacher-mode", "batch",
                                   "--batch-discount", "0.4", "--batch-fallback", "none"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert server.counters.requests == 0 and not server.batch_api.stats.get("files_uploaded")  # sent nothing
    forecast = json.loads((out / "forecast.json").read_text())
    assert forecast["requests"] == 24 and forecast["prompt_tokens"] > 24 * 100
    assert forecast["mode"] == "batch" and forecast["price_per_mtok"] == {"live": [1.0, 2.0], "batch": [0.6, 1.2]}
    assert forecast["cost_usd"]["batch"] == pytest.approx(forecast["cost_usd"]["live"] * 0.6, abs=2e-6)  # rounded to 1e-6
    assert forecast["wall_time_s"]["live"]["limited_by"] == "rpm"
    assert "forecast" in result.stdout and "cost USD" in result.stdout
    assert not (out / "manifest.json").exists()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["refresh-forecast"])))

    found = asyncio.run(artifacts())
    assert found and "cost USD" in found[0].data
