"""The decontamination step's contract, the `ossforge decontaminate` command and the Prefect flow."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.errors import UserError
from tasks.core.schema import AUDIT_SCHEMA
from tasks.decontamination.decontaminate import DecontaminationConfig, decontaminate, decontamination_report_markdown

REPO = Path(__file__).resolve().parents[2]


def _rows(shared) -> list[dict]:
    with gzip.open(shared / "HumanEval.jsonl.gz", "rt") as fh:
        he = [json.loads(line) for line in fh]
    with open(shared / "gsm8k_test.jsonl") as fh:
        gsm = [json.loads(line) for line in fh]
    rows = [
        {"id": f"clean-{i}", "lang": "python", "seed": f"x = {i}",
         "problem": f"Write a function `scale_{i}(values, factor)` that multiplies every reading of a sensor by a "
         f"calibration factor and rounds the result to {i % 4} decimals, skipping missing readings.",
         "solution": f"```python\ndef scale_{i}(values, factor):\n    return [round(v * factor, {i % 4}) "
         "for v in values if v is not None]\n```"}
        for i in range(40)
    ]
    rows.insert(5, {"id": "he-verbatim", "lang": "python", "seed": "s",
                    "problem": "Implement the function.", "solution": he[3]["prompt"] + he[3]["canonical_solution"]})
    rows.insert(20, {"id": "gsm-question", "lang": "python", "seed": "s",
                     "problem": "Write code for this:\n" + gsm[10]["question"], "solution": "print(42)"})
    return rows


def _cfg(shared, **kw) -> DecontaminationConfig:
    return DecontaminationConfig(benchmark_dir=str(shared), allow_hub=False, **kw)


def test_step_keeps_all_columns_and_audits_with_the_shared_schema(shared_benchmarks):
    rows = _rows(shared_benchmarks)
    table = pa.Table.from_pylist(rows)
    kept, audit, stats = decontaminate(table, _cfg(shared_benchmarks))
    assert kept.schema == table.schema
    assert kept.num_rows == len(rows) - 2 and "he-verbatim" not in kept.column("id").to_pylist()
    assert audit.schema == AUDIT_SCHEMA
    by_id = {r["id"]: r for r in audit.to_pylist()}
    assert by_id["he-verbatim"]["benchmark"] == "humaneval" and by_id["he-verbatim"]["benchmark_item"] == "HumanEval/3"
    assert by_id["gsm-question"]["benchmark"] == "gsm8k" and by_id["gsm-question"]["benchmark_item"] == "gsm8k/test/10"
    assert all(r["stage"] == "decontaminate" and r["reason"].startswith("contaminated_by_") for r in by_id.values())
    assert stats.name == "decontaminate" and stats.rows_in == len(rows) and stats.rows_out == kept.num_rows
    assert stats.dropped_total == 2
    extra = stats.extra
    assert extra["matchers"] == ["substring", "ngram", "minhash"]
    assert extra["removed"]["humaneval"] == {"substring": 1} and extra["removed"]["gsm8k"] == {"substring": 1}
    assert extra["flagged"]["humaneval"]["substring"] == 1
    assert extra["missing"] == ["apps", "ds1000", "multipl_e"]
    assert extra["loaded"]["gsm8k"]["items"] == 1319

    report = decontamination_report_markdown(stats)
    assert "2 of 42 rows removed" in report
    assert "`apps`" in report and "`ds1000`" in report and "`multipl_e`" in report
    assert "| humaneval | 164 |" in report
    # The manifest's dict form renders the same report.
    assert decontamination_report_markdown(stats.as_dict()) == report


def test_worker_processes_give_the_same_answer(shared_benchmarks):
    rows = _rows(shared_benchmarks)
    table = pa.Table.from_pylist(rows)
    inproc = decontaminate(table, _cfg(shared_benchmarks, workers=1))
    pooled = decontaminate(table, _cfg(shared_benchmarks, workers=2, parallel_min_rows=10, chunk_rows=7))
    assert inproc[0].equals(pooled[0]) and inproc[1].equals(pooled[1])
    assert inproc[2].dropped == pooled[2].dropped


def test_empty_and_null_inputs(shared_benchmarks):
    empty = pa.table({"id": pa.array([], pa.string()), "problem": pa.array([], pa.string()),
                      "solution": pa.array([], pa.string())})
    kept, audit, stats = decontaminate(empty, _cfg(shared_benchmarks, benchmarks=["humaneval"]))
    assert kept.num_rows == 0 and audit.num_rows == 0 and stats.rows_in == 0
    nulls = pa.table({"id": ["a"], "problem": pa.array([None], pa.string()), "solution": ["x"]})
    kept, _, _ = decontaminate(nulls, _cfg(shared_benchmarks, benchmarks=["humaneval"]))
    assert kept.num_rows == 1


def test_missing_text_column_is_a_user_error(shared_benchmarks):
    with pytest.raises(UserError, match="no 'solution' column"):
        decontaminate(pa.table({"id": ["a"], "problem": ["p"]}), _cfg(shared_benchmarks, benchmarks=["humaneval"]))


def _cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "ossforge.cli", "decontaminate", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


def test_command_writes_dataset_audit_and_manifest(shared_benchmarks, tmp_path):
    src = tmp_path / "in" / "data"
    src.mkdir(parents=True)
    rows = _rows(shared_benchmarks)
    pq.write_table(pa.Table.from_pylist(rows[:20]), src / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[20:]), src / "train-00001-of-00002.parquet")
    out = tmp_path / "out"
    proc = _cli("--input", str(tmp_path / "in"), "--output", str(out), "--benchmark-dir", str(shared_benchmarks),
                "--benchmarks", "humaneval,gsm8k,apps", "--shard-size", "25")
    assert proc.returncode == 0, proc.stderr
    assert "kept 40 of 42 rows" in proc.stdout
    assert "NOT checked" in proc.stderr and "apps" in proc.stderr
    data = pq.read_table(out / "data")
    assert sorted(data.column_names) == sorted(["id", "lang", "seed", "problem", "solution"])
    assert data.num_rows == 40 and len(list((out / "data").glob("*.parquet"))) == 2
    audit = pq.read_table(out / "audit" / "decontaminate.parquet")
    assert sorted(audit.column("id").to_pylist()) == ["gsm-question", "he-verbatim"]
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["stages"]["decontaminate"]
    assert stage["extra"]["removed"] == {"gsm8k": {"substring": 1}, "humaneval": {"substring": 1}}
    assert manifest["missing"] == ["apps"] and manifest["accounting"]["balanced"]
    assert manifest["benchmarks"]["humaneval"]["items"] == 164


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "/no/such/input.parquet"], "no Parquet or JSONL files"),
        (["--benchmarks", "humaneval,nope"], "unknown benchmark(s) nope"),
        (["--matchers", "substring,regex"], "invalid --matchers"),
        (["--benchmark-dir", "/no/such/dir"], "does not exist"),
        (["--benchmarks", "apps", "--require-all"], "benchmarks not available: apps"),
    ],
)
def test_command_user_errors_are_one_line(tmp_path, args, message):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"problem": "p", "solution": "s"}) + "\n")
    full = ["--input", str(src), "--output", str(tmp_path / "out"), *args]
    # later flags win in click, so the parametrised --input replaces the default one
    proc = _cli(*full)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_input_without_text_columns_is_a_user_error(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"instruction": "p", "output": "s"}) + "\n")
    proc = _cli("--input", str(src), "--output", str(tmp_path / "out"), "--benchmarks", "humaneval")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "problem" in proc.stderr


def test_output_over_the_input_is_refused(tmp_path):
    from tasks.decontamination.dataset import decontaminate_dataset

    data = tmp_path / "ds" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"], "problem": ["p"], "solution": ["s"]}), data / "train-00000.parquet")
    with pytest.raises(UserError, match="holds the input"):
        decontaminate_dataset(tmp_path / "ds", tmp_path / "ds", DecontaminationConfig())
    with pytest.raises(UserError, match="inside the input directory"):  # a rerun would read this output
        decontaminate_dataset(tmp_path / "ds", tmp_path / "ds" / "clean", DecontaminationConfig())


def test_flow_under_prefect_publishes_the_report(prefect_server, shared_benchmarks, tmp_path):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.decontaminate import SUMMARY_KEY, DecontaminateFlowConfig, decontaminate_flow

    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(_rows(shared_benchmarks)), src)
    manifest = decontaminate_flow(DecontaminateFlowConfig(
        input=str(src), output=str(tmp_path / "out"), decontamination=_cfg(shared_benchmarks)))
    assert manifest["rows"] == 40 and manifest["missing"] == ["apps", "ds1000", "multipl_e"]

    async def latest_artifact() -> str:
        async with get_client() as client:
            arts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SUMMARY_KEY])))
            return arts[-1].data if arts else ""

    text = asyncio.run(latest_artifact())
    assert "2 of 42 rows removed" in text and "`multipl_e`" in text and "| gsm8k | 1319 |" in text


def test_report_names_the_kept_row_nearest_to_removal_per_benchmark_and_matcher(shared_benchmarks):
    """Issue 15: for audit, the stats say per benchmark and matcher which kept row came
    closest to removal, with the item and the matcher's score; removed rows are not candidates."""
    with gzip.open(shared_benchmarks / "HumanEval.jsonl.gz", "rt") as fh:
        he = [json.loads(line) for line in fh]
    whole = he[3]["prompt"] + he[3]["canonical_solution"]
    lines = whole.splitlines()
    rows = _rows(shared_benchmarks)[:10] + [
        {"id": "he-whole", "lang": "python", "seed": "s", "problem": "Implement it.", "solution": whole},
        # Most of the item, but not all: shares fewer than all of its 13-grams.
        {"id": "he-most", "lang": "python", "seed": "s", "problem": "Implement it.",
         "solution": "\n".join(lines[: len(lines) * 2 // 3])},
    ]
    # Only the n-gram matcher, flagging an item only when ALL its n-grams are shared.
    cfg = _cfg(shared_benchmarks, matchers=["ngram"], ngram_min_count=100_000, ngram_min_ratio=1.0)
    kept, audit, stats = decontaminate(pa.Table.from_pylist(rows), cfg)
    assert "he-whole" in audit.column("id").to_pylist() and "he-most" in kept.column("id").to_pylist()
    near = stats.extra["nearest_kept"]["humaneval"]["ngram"]
    assert near["id"] == "he-most" and near["benchmark_item"] == "HumanEval/3"
    assert 0.3 < near["score"] < 1.0 and "13-grams" in near["detail"]
    report = decontamination_report_markdown(stats)
    assert "came closest to removal" in report and "`he-most`" in report
