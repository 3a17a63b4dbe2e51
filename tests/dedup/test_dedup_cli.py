"""`ossforge dedup` on JSONL and Parquet inputs, bad input, and the `near-dedup` Prefect flow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ossforge.cli import main
from test_near_dedup import planted_rows, table  # pytest puts this folder on sys.path

REPO_ROOT = Path(__file__).resolve().parents[2]


def read_output(out):
    manifest = json.loads((out / "manifest.json").read_text())
    data = pa.concat_tables([pq.read_table(out / f["path"]) for f in manifest["files"]])  # an empty dataset has one empty shard
    audit = pq.read_table(out / "audit" / "near_dedup.parquet")
    return manifest, data, audit


def test_cli_on_parquet_directory_keeps_columns_and_ids(tmp_path, capsys):
    src = tmp_path / "in" / "data"
    src.mkdir(parents=True)
    rows = table(planted_rows())
    pq.write_table(rows.slice(0, 3), src / "train-00000-of-00002.parquet")
    pq.write_table(rows.slice(3), src / "train-00001-of-00002.parquet")
    out = tmp_path / "out"
    assert main(["dedup", "--input", str(tmp_path / "in"), "--output", str(out), "--workers", "1"]) == 0
    manifest, data, audit = read_output(out)
    assert sorted(data["id"].to_pylist()) == ["count-a", "longest-a", "mean-a"]
    assert data.column_names == rows.column_names + ["cluster_id", "cluster_size"]
    assert dict(zip(audit["id"].to_pylist(), audit["duplicate_of"].to_pylist())) == {
        "mean-b": "mean-a",
        "longest-b": "longest-a",
    }
    assert manifest["stages"]["near_dedup"]["dropped"] == {"near_duplicate": 2}
    assert manifest["accounting"]["balanced"] and not manifest["ids_added"]
    assert manifest["audit_files"][0]["rows"] == 2
    assert "kept 3 of 5 rows" in capsys.readouterr().out


def test_cli_on_jsonl_without_ids_adds_stable_ids(tmp_path, capsys):
    src = tmp_path / "pairs.jsonl"
    with src.open("w") as fh:
        for _, _, problem, sol in planted_rows():
            fh.write(json.dumps({"problem": problem, "solution": sol, "lang": "python"}) + "\n")
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["dedup", "-i", str(src), "-o", str(out), "--workers", "1", "--threshold", "0.75"]) == 0
        outs.append(read_output(out))
    (m1, d1, a1), (_, d2, _) = outs
    assert d1.num_rows == 3 and a1.num_rows == 2 and m1["ids_added"]
    assert d1["id"].to_pylist() == d2["id"].to_pylist()  # stable across runs
    assert set(a1["duplicate_of"].to_pylist()) <= set(d1["id"].to_pylist())
    assert "added stable ids" in capsys.readouterr().out


def test_cli_incremental_index_dir(tmp_path):
    first, second = tmp_path / "v1.jsonl", tmp_path / "v2.jsonl"
    rows = planted_rows()
    for path, part in ((first, rows[:3]), (second, rows[3:])):
        with path.open("w") as fh:
            for i, s, p, q in part:
                fh.write(json.dumps({"id": i, "seed_index": s, "problem": p, "solution": q}) + "\n")
    index = tmp_path / "index"
    common = ["--workers", "1", "--index-dir", str(index)]
    assert main(["dedup", "-i", str(first), "-o", str(tmp_path / "o1"), "--version", "v1", *common]) == 0
    assert main(["dedup", "-i", str(second), "-o", str(tmp_path / "o2"), "--version", "v2", *common]) == 0
    _, data, audit = read_output(tmp_path / "o2")
    assert data.num_rows == 0 and set(audit["reason"].to_pylist()) == {"near_duplicate_of_published"}
    assert sorted(p.name for p in index.iterdir()) == ["signatures-v1.parquet", "signatures-v2.parquet"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-i", "{tmp}/missing"], "no Parquet or JSONL files"),
        (["-i", "{tmp}/bad.jsonl"], "cannot read"),
        (["-i", "{tmp}/ok.jsonl", "--fields", "question"], "not columns"),
        (["-i", "{tmp}/ok.jsonl", "--threshold", "1.5"], "invalid --threshold"),
        (["-i", "{tmp}/ok.jsonl", "--lsh-storage", "mysql://x"], "redis://host:port/db"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, args, message):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    (tmp_path / "ok.jsonl").write_text(json.dumps({"problem": "p", "solution": "s"}) + "\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "ossforge.cli", "dedup", *args, "-o", str(tmp_path / "out"), "--workers", "1"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_output_holding_the_input_is_refused(tmp_path):
    data = tmp_path / "ds" / "data"
    data.mkdir(parents=True)
    pq.write_table(table(planted_rows()), data / "train-00000-of-00001.parquet")
    with pytest.raises(Exception, match="holds the input"):
        from tasks.dedup.dataset import dedup_dataset
        from tasks.dedup.near import NearDedupConfig

        dedup_dataset(tmp_path / "ds", tmp_path / "ds", NearDedupConfig(workers=1))
    with pytest.raises(Exception, match="inside the input directory"):
        dedup_dataset(tmp_path / "ds", tmp_path / "ds" / "deduped", NearDedupConfig(workers=1))


def test_flow_under_prefect_publishes_summary(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.dedup import SUMMARY_KEY, DedupFlowConfig, dedup_flow
    from tasks.dedup.near import NearDedupConfig

    src = tmp_path / "in.parquet"
    pq.write_table(table(planted_rows()), src)
    manifest = dedup_flow(
        DedupFlowConfig(input=str(src), output=str(tmp_path / "out"), near_dedup=NearDedupConfig(workers=1))
    )
    assert manifest["rows"] == 3
    _, data, audit = read_output(tmp_path / "out")
    assert data.num_rows == 3 and audit.num_rows == 2

    import asyncio

    async def latest_artifact():
        async with get_client() as client:
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

            arts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SUMMARY_KEY])))
            return arts[-1].data if arts else ""

    assert "kept 3 of 5 rows" in asyncio.run(latest_artifact())
