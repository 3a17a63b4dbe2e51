"""A second language through `ossforge refresh`: the loopback teacher answers in JavaScript or
C++ (solution and tests, every 4th request seed's tests wrong), the refresh's validation runs
them through that language's runner, and the manifest's counts are exact. Skipped where the
toolchain is missing (CI installs node and g++)."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from support.fake_teacher import FakeTeacher, planted_test_failure
from tasks.sandbox.runners import available_runners


def refresh(url: str, out, *extra: str) -> subprocess.CompletedProcess:
    args = ["refresh", "--num-seeds", "40", "--teacher-base-url", url, "--teacher-model", "fake-teacher",
            "--api-key-env", "", "--concurrency", "8", "--output-dir", str(out), "--no-progress",
            "--no-near-dedup", "--no-decontaminate", *extra]  # fmt: skip
    return subprocess.run([sys.executable, "-m", "ossforge.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("language", ["javascript", "cpp"])
def test_refresh_validates_a_second_language_with_exact_counts(prefect_server, tmp_path, language):
    if language not in available_runners():
        pytest.skip(f"no {language} toolchain on this machine")
    server = FakeTeacher(latency=0.01, answer_language=language)
    url = server.start_in_thread()
    try:
        out = tmp_path / "ds"
        result = refresh(url, out, "--output-format", "sections_tests", "--language", "python")
    finally:
        server.stop_thread()
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["accounting"]["balanced"], manifest["accounting"]
    validate = manifest["stages"]["validate"]
    planted = sum(planted_test_failure(976 + i) for i in range(manifest["stages"]["seeds"]["out"]))
    assert validate["in"] == 40 and validate["dropped"] == {"tests_failed": planted}
    # The seeds were Python; the answers' fences say which runner ran them.
    assert validate["extra"]["by_language"] == {language: {"passed": 40 - planted, "tests_failed": planted}}
    assert validate["extra"]["isolation"] == "bwrap"
    kept = pq.read_table(out / "data")
    assert kept.num_rows == 40 - planted
    assert all(s.startswith(f"```{language}\n") for s in kept["solution"].to_pylist())
    audit = pq.read_table(out / "audit" / "validate.parquet")
    assert audit.num_rows == planted and all("Assert" in d for d in audit["detail"].to_pylist())
