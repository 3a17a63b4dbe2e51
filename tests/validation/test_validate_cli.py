"""`ossforge validate` on an existing dataset, through the real CLI and the real sandbox:
exact counts per reason, every input column kept, one-line errors for a user's mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

ROWS = [
    {"solution": "def add(a, b):\n    return a + b", "tests": "assert add(1, 2) == 3", "source": "a"},
    {"solution": "```python\ndef sub(a, b):\n    return a - b\n```", "tests": "```python\nassert sub(3, 1) == 2\n```",
     "source": "fenced"},
    {"solution": "def mul(a, b):\n    return a + b", "tests": "assert mul(2, 3) == 6", "source": "wrong"},
    {"solution": "def broken(:\n    pass", "tests": "assert True", "source": "syntax"},
    {"solution": "import sys\nsys.exit(0)", "tests": "assert False", "source": "early-exit"},
    {"solution": "def f():\n    return 1", "tests": "", "source": "no-tests"},
    {"solution": "def spin():\n    while True:\n        pass", "tests": "spin()", "source": "timeout"},
]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ossforge.cli", "validate", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})  # fmt: skip


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_validate_jsonl_keeps_passing_rows_and_audits_each_failure_with_its_reason(tmp_path):
    src = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    out = tmp_path / "validated"
    result = run_cli("--input", src, "--output", str(out), "--seconds", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kept 2 of 7 rows" in result.stdout and "isolation bwrap" in result.stdout
    kept = pq.read_table(out / "data")
    assert sorted(kept["source"].to_pylist()) == ["a", "fenced"]
    assert {"id", "solution", "tests", "source", "validation_status", "validation_seconds"} <= set(kept.column_names)
    assert set(kept["validation_status"].to_pylist()) == {"passed"}
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["stages"]["validate"]
    assert manifest["accounting"]["balanced"] and manifest["ids_added"]
    assert stage["dropped"] == {"crash": 1, "no_tests": 1, "syntax_error": 1, "tests_failed": 1, "timeout": 1}
    assert stage["extra"]["pass_rate"] == {"python": round(2 / 6, 4)}  # no_tests ran nothing
    audit = pq.read_table(out / "audit" / "validate.parquet")
    assert audit.num_rows == 5 and set(audit["stage"].to_pylist()) == {"validate"}
    assert not set(audit["id"].to_pylist()) & set(kept["id"].to_pylist())


def test_validate_parquet_keeps_ids_and_marks_other_languages_unverified_or_drops_them(tmp_path):
    rows = [{"id": "py-1", "lang": "python", "solution": "x = 1", "tests": "assert x == 1"},
            {"id": "zz-1", "lang": "brainfuck", "solution": "+.", "tests": "+."}]
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), src / "part-0.parquet")
    out = tmp_path / "kept"
    result = run_cli("--input", str(src), "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    kept = pq.read_table(out / "data")
    assert dict(zip(kept["id"].to_pylist(), kept["validation_status"].to_pylist())) == {
        "py-1": "passed", "zz-1": "unverified"}
    dropped = run_cli("--input", str(src), "--output", str(tmp_path / "dropped"), "--unverified", "drop")
    assert dropped.returncode == 0, dropped.stderr[-3000:]
    manifest = json.loads((tmp_path / "dropped" / "manifest.json").read_text())
    assert manifest["stages"]["validate"]["dropped"] == {"no_runner": 1} and manifest["rows"] == 1


def test_user_mistakes_are_one_line_errors(tmp_path):
    missing = run_cli("--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o"))
    no_tests = run_cli("--input", write_jsonl(tmp_path / "x.jsonl", [{"solution": "x = 1"}]), "--output",
                       str(tmp_path / "o2"))
    inside = run_cli("--input", str(tmp_path), "--output", str(tmp_path / "out"))
    bad_policy = run_cli("--input", str(tmp_path / "x.jsonl"), "--output", str(tmp_path / "o3"), "--unverified", "maybe")
    for result in (missing, no_tests, inside, bad_policy):
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "tests" in no_tests.stderr and "inside the input directory" in inside.stderr
    assert not (tmp_path / "o2" / "manifest.json").exists()


def test_without_bubblewrap_it_refuses_unless_the_weak_sandbox_is_accepted(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    src = write_jsonl(tmp_path / "one.jsonl", ROWS[:1])
    refused = run_cli("--input", src, "--output", str(tmp_path / "o"), env={"PATH": str(bin_dir)})
    assert refused.returncode == 2 and "bubblewrap" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "o" / "manifest.json").exists()
    weak = run_cli("--input", src, "--output", str(tmp_path / "w"), "--accept-weak-sandbox", env={"PATH": str(bin_dir)})
    assert weak.returncode == 0, weak.stderr[-2000:]
    assert "isolation weak" in weak.stdout
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert manifest["stages"]["validate"]["extra"]["isolation"] == "weak" and manifest["rows"] == 1


def test_the_validate_flow_publishes_its_summary(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client

    src = write_jsonl(tmp_path / "pairs.jsonl", ROWS[:3])
    result = run_cli("--input", src, "--output", str(tmp_path / "v"), "--prefect")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kept 2 of 3 rows" in result.stdout

    async def summary() -> str:
        async with get_client() as client:
            artifact = await client.read_latest_artifacts()
            return [a for a in artifact if a.key == "validation-summary"][0].data

    import asyncio

    assert "| python | tests_failed | 1 |" in asyncio.run(summary())
