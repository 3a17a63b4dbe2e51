"""Validation inside `ossforge refresh`: the real CLI, a real Prefect server, a loopback teacher
that writes tests with a planted failing share; the counts in the manifest are exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from support.fake_teacher import FakeTeacher, planted_test_failure


@pytest.fixture(scope="module")
def teacher_url():
    server = FakeTeacher(latency=0.01)
    url = server.start_in_thread()
    yield url
    server.stop_thread()


def refresh(url: str, out, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    args = ["refresh", "--num-seeds", "40", "--teacher-base-url", url, "--teacher-model", "fake-teacher",
            "--api-key-env", "", "--concurrency", "8", "--output-dir", str(out), "--no-progress",
            "--no-near-dedup", "--no-decontaminate", *extra]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "ossforge.cli", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})  # fmt: skip


@pytest.mark.parametrize("output_format", ["sections_tests", "json_tests"])
def test_refresh_validates_and_drops_exactly_the_planted_failures(prefect_server, teacher_url, tmp_path, output_format):
    out = tmp_path / "ds"
    # Python seeds only: rows in a language without a runner would be kept as unverified.
    result = refresh(teacher_url, out, "--output-format", output_format, "--language", "python")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["accounting"]["balanced"], manifest["accounting"]
    stages = list(manifest["stages"])
    # after parsing, before dedup: each shard is validated in the clean-shard worker as it lands
    assert stages.index("parse") < stages.index("validate") < stages.index("exact_dedup")
    validate = manifest["stages"]["validate"]
    seeds = range(manifest["stages"]["seeds"]["out"])
    planted = sum(planted_test_failure(976 + i) for i in seeds)
    assert validate["in"] == 40 and validate["dropped"] == {"tests_failed": planted} and validate["out"] == 40 - planted
    assert validate["extra"]["isolation"] == "bwrap"
    assert validate["extra"]["by_language"] == {"python": {"passed": 40 - planted, "tests_failed": planted}}
    kept = pq.read_table(out / "data").column("request_seed").to_pylist()
    assert len(kept) == manifest["rows"] == 40 - planted
    assert not any(planted_test_failure(s) for s in kept)
    audit = pq.read_table(out / "audit" / "validate.parquet")
    assert audit.num_rows == planted and set(audit["reason"].to_pylist()) == {"tests_failed"}
    assert all("AssertionError at <tests>:1" == d for d in audit["detail"].to_pylist())
    card = (out / "README.md").read_text()  # the dataset card and the report's chart say it too
    assert f"pass rate python {(40 - planted) / 40:.1%}" in card and f"tests_failed {planted}" in card
    assert (out / "report" / "validation.png").stat().st_size > 0


def test_the_papers_format_is_not_validated(prefect_server, teacher_url, tmp_path):
    """No tests asked for: validation is skipped (logged), the rows are published as before."""
    out = tmp_path / "paper"
    result = refresh(teacher_url, out)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "validate" not in manifest["stages"] and manifest["rows"] == 40
    assert "Validation: **not run**" in (out / "README.md").read_text()
    assert not (out / "report" / "validation.png").exists()


def test_without_bubblewrap_refresh_refuses_before_any_request(teacher_url, tmp_path):
    """PATH without bwrap: one line, exit 2, nothing sent; --no-validate still runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    env = {"PATH": str(bin_dir)}
    result = refresh(teacher_url, tmp_path / "x", "--output-format", "sections_tests", env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().startswith("ossforge: error:") and "bubblewrap" in result.stderr
    assert "--accept-weak-sandbox" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_repair_round_recovers_the_pairs_the_teacher_fixes_and_counts_the_rest(prefect_server, tmp_path):
    """--repair: each failed pair goes back once with its error; the fake teacher fixes all but
    the multiples of 8. Exact counts, balanced accounting, repair spend in the usage, and a
    rerun buys nothing again."""
    server = FakeTeacher(latency=0.01)
    url = server.start_in_thread()
    try:
        out = tmp_path / "repaired"
        result = refresh(url, out, "--output-format", "json_tests", "--language", "python", "--repair")
        assert result.returncode == 0, result.stderr[-3000:]
        manifest = json.loads((out / "manifest.json").read_text())
        seeds = [976 + i for i in range(40)]
        failed_first = [s for s in seeds if planted_test_failure(s)]
        still = [s for s in seeds if planted_test_failure(s, 8)]
        validate = manifest["stages"]["validate"]
        assert manifest["accounting"]["balanced"], manifest["accounting"]
        assert validate["in"] == 40 and validate["out"] == 40 - len(still)
        assert validate["dropped"] == {"tests_failed": len(still)}
        repair = validate["extra"]["repair"]
        assert (repair["attempted"], repair["recovered"], repair["still_failing"]) == (
            len(failed_first), len(failed_first) - len(still), len(still))
        assert manifest["usage"]["requests_sent"] == 40 + len(failed_first)
        assert server.counters.requests == 40 + len(failed_first)
        kept = sorted(pq.read_table(out / "data").column("request_seed").to_pylist())
        assert kept == [s for s in seeds if s not in still]
        audit = pq.read_table(out / "audit" / "validate.parquet")
        assert audit.num_rows == len(still)

        again = refresh(url, out, "--output-format", "json_tests", "--language", "python", "--repair")
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.counters.requests == 40 + len(failed_first)  # every repair reply came from the cache
        assert json.loads((out / "manifest.json").read_text())["stages"]["validate"] == validate
    finally:
        server.stop_thread()
