"""`ossforge evaluate` through the real CLI: scoring a samples file made elsewhere (EvalPlus
format), bad samples in one line, and the refusal without bubblewrap unless
--accept-weak-sandbox (then the summary says isolation=weak). A real Prefect server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tasks.core.schema import EVAL_RESULT_SCHEMA
from tasks.evaluation.benchmarks import load_benchmark


def evaluate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ossforge.cli", "evaluate", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})  # fmt: skip


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def humaneval():
    return load_benchmark("humaneval", limit=4)


def planted_samples(humaneval, mbpp):
    """HumanEval/0 as a whole solution, /1 as a completion of the prompt, /2 wrong, /3 missing,
    /10 beyond the limit; Mbpp/2 right, Mbpp/3 wrong."""
    h = humaneval
    return [
        {"task_id": h[0].task_id, "solution": h[0].prompt + h[0].canonical_solution},
        {"task_id": h[1].task_id, "completion": h[1].canonical_solution},
        {"task_id": h[2].task_id, "solution": f"def {h[2].entry_point}(*args):\n    return None\n"},
        {"task_id": mbpp[0].task_id, "solution": mbpp[0].prompt + mbpp[0].canonical_solution},
        {"task_id": mbpp[1].task_id, "solution": f"def {mbpp[1].entry_point}(*args):\n    return 12345\n"},
        {"task_id": "HumanEval/10", "completion": "    pass\n"},  # beyond --limit 4: ignored, counted
    ]


def test_a_samples_file_is_scored_without_a_model(prefect_server, humaneval, shared_benchmarks, tmp_path):
    mbpp = load_benchmark("mbpp+", shared_benchmarks, tmp_path / "cache", limit=2)
    samples = write_jsonl(tmp_path / "samples.jsonl", planted_samples(humaneval, mbpp))
    out = tmp_path / "eval"
    result = evaluate("--samples", samples, "--benchmarks", "humaneval,mbpp+", "--limit", "4", "--output-dir", str(out),
                      "--benchmark-dir", str(shared_benchmarks), "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] is None and summary["samples"] == samples and summary["isolation"] == "bwrap"
    assert summary["generation"]["backend"] == "samples" and summary["generation"]["samples"] == 6
    assert summary["generation"]["outside_limit"] == 1 and summary["generation"]["missing"] == 3
    he, mb = summary["benchmarks"]["humaneval"], summary["benchmarks"]["mbpp+"]
    assert (he["problems"], he["passed"], he["pass@1"]) == (4, 2, 0.5)  # /3 had no sample: failed, not skipped
    assert he["errors"] == {"assertion": 1, "no_code": 1}
    assert (mb["problems"], mb["passed"], mb["plus_passed"]) == (4, 1, 1)  # Mbpp/4, /5: no sample
    table = pq.read_table(out / "results.parquet")
    assert table.schema.equals(EVAL_RESULT_SCHEMA)
    rows = {(r["benchmark"], r["task_id"]): r for r in table.to_pylist()}
    assert rows[("humaneval", humaneval[1].task_id)]["program"] == humaneval[1].prompt + humaneval[1].canonical_solution
    assert rows[("humaneval", humaneval[3].task_id)]["error_detail"] == "no sample for this task"
    assert "pass@1" in result.stdout


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (None, "not found"),
        (['{"task_id": "HumanEval/0", "solution": "x"}', "{not json"], "samples.jsonl:2: not JSON"),
        (['{"task_id": "HumanEval/999", "completion": "x"}'], "unknown task_id 'HumanEval/999'"),
        (['{"task_id": "HumanEval/0", "answer": "x"}'], "neither 'solution' nor 'completion'"),
        (['{"task_id": "HumanEval/0", "solution": "x"}', '{"task_id": "HumanEval/0", "solution": "y"}'], "appears again"),
    ],
    ids=["missing-file", "bad-json", "unknown-task", "neither-field", "twice"],
)
def test_bad_samples_are_one_line_and_exit_2(tmp_path, lines, message):
    path = tmp_path / "samples.jsonl"
    if lines is not None:
        write_jsonl(path, lines)
    result = evaluate("--samples", str(path), "--benchmarks", "humaneval", "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    err = result.stderr.strip()
    assert err.startswith("ossforge: error:") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_model_and_samples_are_one_or_the_other(tmp_path):
    both = evaluate("--model", "tiny", "--samples", str(tmp_path / "s.jsonl"), "--output-dir", str(tmp_path / "o"))
    neither = evaluate("--output-dir", str(tmp_path / "o"))
    for result in (both, neither):
        assert result.returncode == 2 and "--samples" in result.stderr and "Traceback" not in result.stderr


def test_without_bubblewrap_evaluate_refuses_unless_weak_is_accepted(prefect_server, humaneval, tmp_path):
    """PATH without bwrap: one line, exit 2; with --accept-weak-sandbox it scores and says weak."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python")
    env = {"PATH": str(bin_dir)}
    samples = write_jsonl(tmp_path / "samples.jsonl", [
        {"task_id": humaneval[0].task_id, "completion": humaneval[0].canonical_solution},
        {"task_id": humaneval[1].task_id, "completion": "    return []\n"},
    ])  # fmt: skip
    args = ["--samples", samples, "--benchmarks", "humaneval", "--limit", "2", "--output-dir", str(tmp_path / "out")]
    refused = evaluate(*args, env=env)
    assert refused.returncode == 2, refused.stderr[-2000:]
    err = refused.stderr.strip()
    assert err.startswith("ossforge: error:") and "bubblewrap" in err and "--accept-weak-sandbox" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()

    weak = evaluate(*args, "--accept-weak-sandbox", env=env)
    assert weak.returncode == 0, weak.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["isolation"] == "weak" and "bwrap" not in summary["sandbox_guards"]
    assert summary["benchmarks"]["humaneval"]["passed"] == 1
    assert "WEAK" in weak.stdout
