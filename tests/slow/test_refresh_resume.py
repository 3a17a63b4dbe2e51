"""`ossforge refresh` under fire: SIGKILL mid-run then resume, faults, limits, a planted key.

The real CLI in a subprocess, a real Prefect server, the fake teacher (a real HTTP server
on loopback, in this process) counting every request it receives.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
PLANTED_KEY = "sk-ossforge-PLANTED-resume-5b0c9e77d1"
ROW_FIELDS = ["id", "seed_index", "seed", "problem", "solution", "finish_reason", "prompt_tokens",
              "completion_tokens", "request_seed", "max_tokens", "system_fingerprint"]


def cli_args(url: str, out: Path, num_seeds: int, concurrency: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "ossforge.cli", "refresh",
        "--num-seeds", str(num_seeds), "--teacher-base-url", url, "--teacher-model", "fake-teacher",
        "--concurrency", str(concurrency), "--output-dir", str(out), "--api-key-env", "TEACHER_KEY",
        "--no-progress", "--no-decontaminate", "--no-near-dedup", *extra,
    ]


def env() -> dict:
    return {**os.environ, "TEACHER_KEY": PLANTED_KEY, "PYTHONPATH": str(REPO)}


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)


def rows(out: Path) -> list[tuple]:
    table = pa.concat_tables([pq.read_table(p, columns=ROW_FIELDS) for p in sorted((out / "data").glob("*.parquet"))])
    return sorted(zip(*(table.column(c).to_pylist() for c in ROW_FIELDS)))


def cached_keys(out: Path) -> set[str]:
    path = out / ".cache" / "requests.sqlite"
    if not path.exists():
        return set()
    try:
        with sqlite3.connect(path) as db:
            return {r[0] for r in db.execute("SELECT key FROM replies")}
    except sqlite3.OperationalError:
        return set()  # created, table not there yet


@pytest.fixture
def teacher(fake_teacher):
    fake_teacher.configure(api_key=PLANTED_KEY)
    return fake_teacher


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_resends_nothing_and_writes_the_same_rows(prefect_server, teacher, tmp_path):
    n = 400
    teacher.configure(latency=0.1, rate_500=0.05, rate_reset=0.03, rate_truncated=0.03, rate_length=0.05)
    reference = run_cli(cli_args(teacher.base_url, tmp_path / "reference", n, 16))
    assert reference.returncode == 0, reference.stderr[-3000:]
    teacher.reset()

    out = tmp_path / "killed"
    proc = subprocess.Popen(cli_args(teacher.base_url, out, n, 16), env=env(), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and len(cached_keys(out)) < 120:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and anything it started, mid-shard
    proc.wait()
    kept = cached_keys(out)
    assert 120 <= len(kept) < n, "the kill should land mid-run"
    assert not (out / "manifest.json").exists()

    resumed = run_cli(cli_args(teacher.base_url, out, n, 16))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    server = teacher.stats(keys=True)
    assert not kept & set(server["repeated_after_completion"]), "a persisted reply was bought twice"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["accounting"]["balanced"]
    assert rows(out) == rows(tmp_path / "reference")


def prepared_shards(out: Path) -> int:
    return len(list((out / ".work" / "prepared").glob("shard-*[0-9].parquet")))


@pytest.mark.slow
def test_sigkill_while_shards_are_cleaned_then_resume_with_every_stage_on(
    prefect_server, teacher, shared_benchmarks, tmp_path
):
    """Streaming: shards are validated, signed and matched as they land. A kill -9 once some
    shards are cleaned and others are still with the teacher; the rerun buys no reply twice,
    reuses what was cleaned, and publishes exactly the rows of an uninterrupted run."""
    n = 400
    teacher.configure(latency=0.4)  # 20 replies/s: the first shards are cleaned while later ones are out
    every_stage = ("--output-format", "json_tests", "--near-dedup", "--decontaminate", "--benchmark-dir",
                   str(shared_benchmarks), "--generation-shard-size", "100")  # fmt: skip
    args = [a for a in cli_args(teacher.base_url, tmp_path / "x", n, 8) if a not in ("--no-near-dedup", "--no-decontaminate")]

    def with_out(out: Path) -> list[str]:
        return [str(out) if a == str(tmp_path / "x") else a for a in args] + list(every_stage)

    reference = run_cli(with_out(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    teacher.reset()

    out = tmp_path / "killed"
    proc = subprocess.Popen(with_out(out), env=env(), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and prepared_shards(out) < 1:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = cached_keys(out)
    assert prepared_shards(out) >= 1 and len(kept) < n, "the kill should land after cleaning began, before the end"
    assert not (out / "manifest.json").exists()

    resumed = run_cli(with_out(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    server = teacher.stats(keys=True)
    assert not kept & set(server["repeated_after_completion"]), "a persisted reply was bought twice"
    manifest = json.loads((out / "manifest.json").read_text())
    expected = json.loads((tmp_path / "reference" / "manifest.json").read_text())
    assert manifest["accounting"]["balanced"]
    for stage in ("teacher", "parse", "validate", "exact_dedup", "near_dedup", "decontaminate"):
        assert {k: manifest["stages"][stage][k] for k in ("in", "out", "dropped")} == \
            {k: expected["stages"][stage][k] for k in ("in", "out", "dropped")}, stage
    assert rows(out) == rows(tmp_path / "reference")


@pytest.mark.slow
def test_faults_and_a_short_rate_window_through_the_cli(prefect_server, teacher, tmp_path):
    teacher.configure(rate_429=0.05, retry_after_s=0.05, rate_500=0.05, rate_504=0.03, gateway_delay_s=0.1,
                      rate_reset=0.03, rate_truncated=0.03, rate_length=0.05)
    config = tmp_path / "refresh.json"
    # Providers count per minute; a 2 s window keeps the test short with the same code path.
    config.write_text(json.dumps({"teacher": {"base_url": teacher.base_url, "model": "fake-teacher",
                                              "rate_window_s": 2.0, "rpm": 40, "retry_base_s": 0.02,
                                              "retry_max_s": 0.1}}))
    out = tmp_path / "ds"
    result = run_cli(cli_args(teacher.base_url, out, 120, 32, "--config", str(config)))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    server = teacher.stats(window=2.0)

    assert manifest["accounting"]["balanced"]
    seeds = manifest["stages"]["seeds"]["out"]
    dropped = sum(sum(s["dropped"].values()) for name, s in manifest["stages"].items() if name != "seeds")
    assert seeds == manifest["rows"] + dropped  # every seed: a row or a counted drop with its reason
    ids = [r[0] for r in rows(out)]
    assert len(ids) == len(set(ids)) == manifest["rows"]  # no duplicate rows
    assert server["max_requests_in_window"] <= 40, server  # never over the limit in any window
    assert server["repeats_of_completed"] == 0
    usage = manifest["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (server["prompt_tokens"], server["completion_tokens"])


@pytest.mark.slow
def test_planted_key_is_nowhere_in_prefect_or_the_output(prefect_server, teacher, tmp_path):
    teacher.configure(rate_500=0.1)
    out = tmp_path / "ds"
    result = run_cli(cli_args(teacher.base_url, out, 40, 8))
    assert result.returncode == 0, result.stderr[-3000:]

    import asyncio

    from prefect.client.orchestration import get_client

    async def everything_prefect_kept() -> str:
        async with get_client() as client:
            runs = await client.read_flow_runs()
            texts = [r.model_dump_json() for r in runs]
            texts += [t.model_dump_json() for t in await client.read_task_runs()]
            texts += [a.model_dump_json() for a in await client.read_artifacts()]
            texts += [log.model_dump_json() for log in await client.read_logs()]
            return "\n".join(texts)

    prefect_text = asyncio.run(everything_prefect_kept())
    assert "refresh" in prefect_text  # we did read the run back
    assert PLANTED_KEY not in prefect_text
    assert PLANTED_KEY not in result.stdout + result.stderr
    # every file: the dataset, the request cache, staged shards, Prefect's results and its database
    for root in (out, Path(os.environ["PREFECT_HOME"])):
        for path in root.rglob("*"):
            if path.is_file():
                assert PLANTED_KEY.encode() not in path.read_bytes(), f"API key leaked into {path}"
