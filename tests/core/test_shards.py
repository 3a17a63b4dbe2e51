import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.core.schema import DATASET_SCHEMA, SEED_SCHEMA
from tasks.core.stats import StageStats
from tasks.core.step import run_step
from tasks.dedup.exact import ExactDeduper
from tasks.publish.publish import publish_dataset
from tasks.core.parquet_io import InputError, file_sha256, input_files, read_table, rebatch, write_parquet_atomic, write_shards


def dataset_rows(n, start=0):
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    return [
        {
            "id": f"id{i}", "seed_index": i, "seed": f"x = {i}", "lang": "python", "seed_source": "t",
            "seed_path": "a.py", "seed_repo": None, "seed_license": "MIT", "seed_start_line": 1, "seed_end_line": 1,
            "problem": f"problem {i}", "solution": f"solution {i}", "teacher_model": "m", "temperature": 0.0,
            "top_p": 1.0, "request_seed": 976 + i, "max_tokens": 100, "output_format": "sections",
            "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": 20, "system_fingerprint": None,
            "created_at": now, "cluster_id": None, "cluster_size": None,
        }
        for i in range(start, start + n)
    ]


def test_schema_names_every_column_once():
    assert len(set(DATASET_SCHEMA.names)) == len(DATASET_SCHEMA.names)
    for required in ["id", "lang", "seed", "problem", "solution", "teacher_model", "temperature", "top_p",
                     "request_seed", "finish_reason", "prompt_tokens", "completion_tokens", "created_at"]:
        assert required in DATASET_SCHEMA.names
    assert set(SEED_SCHEMA.names) <= set(DATASET_SCHEMA.names)


def test_rebatch_regroups_exactly():
    tables = [pa.table({"a": list(range(n))}) for n in (3, 0, 7, 1)]
    sizes = [t.num_rows for t in rebatch(tables, 4)]
    assert sizes == [4, 4, 3]


def test_write_shards_caps_rows_and_loads_with_datasets(tmp_path):
    table = pa.Table.from_pylist(dataset_rows(25), schema=DATASET_SCHEMA)
    files = write_shards([table], tmp_path / "data", shard_size=10, schema=DATASET_SCHEMA)
    assert [f["rows"] for f in files] == [10, 10, 5]
    assert files[0]["path"] == "data/train-00000-of-00003.parquet"
    for f in files:
        assert file_sha256(tmp_path / f["path"]) == f["sha256"]
        assert pq.read_metadata(tmp_path / f["path"]).row_group(0).column(0).compression == "ZSTD"
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "data" / "*.parquet"), split="train")
    assert len(ds) == 25 and ds[0]["id"] == "id0"


def test_rewrite_removes_stale_shards(tmp_path):
    table = pa.Table.from_pylist(dataset_rows(25), schema=DATASET_SCHEMA)
    write_shards([table], tmp_path / "data", shard_size=5, schema=DATASET_SCHEMA)
    write_shards([table.slice(0, 3)], tmp_path / "data", shard_size=5, schema=DATASET_SCHEMA)
    assert [p.name for p in sorted((tmp_path / "data").iterdir())] == ["train-00000-of-00001.parquet"]


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "x.parquet"
    write_parquet_atomic(pa.table({"a": [1]}), path)

    class Boom:
        schema = pa.schema([("a", pa.int64())])

    with pytest.raises(Exception):
        write_parquet_atomic(Boom(), path)  # not a table: pyarrow raises mid-write
    assert pq.read_table(path).to_pylist() == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]  # no half-written leftovers


def test_empty_dataset_is_still_loadable(tmp_path):
    files = write_shards([], tmp_path / "data", shard_size=5, schema=DATASET_SCHEMA)
    assert files[0]["rows"] == 0
    assert pq.read_table(tmp_path / files[0]["path"]).schema.names == DATASET_SCHEMA.names


def test_publish_writes_manifest_last_with_checksums(tmp_path):
    table = pa.Table.from_pylist(dataset_rows(7), schema=DATASET_SCHEMA)
    manifest = publish_dataset(tmp_path, [table], 3, {"stages": {}}, schema=DATASET_SCHEMA)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["rows"] == manifest["rows"] == 7
    assert len(on_disk["files"]) == 3


def test_input_readers_accept_parquet_dirs_and_jsonl(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "problem": "p"}\n{"id": "b", "problem": "q"}\n')
    assert read_table(tmp_path / "in.jsonl").num_rows == 2
    publish_dataset(tmp_path / "ds", [pa.Table.from_pylist(dataset_rows(4), schema=DATASET_SCHEMA)], 2, {})
    assert read_table(tmp_path / "ds").num_rows == 4
    assert all(p.suffix == ".parquet" for p in input_files(tmp_path / "ds"))
    with pytest.raises(InputError):
        read_table(tmp_path / "missing")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(InputError):
        read_table(tmp_path / "bad.jsonl")


def test_parquet_input_is_streamed_in_batches_and_an_empty_file_keeps_its_schema(tmp_path, monkeypatch):
    from tasks.core import parquet_io as shards

    monkeypatch.setattr(shards, "PARQUET_BATCH_ROWS", 3)
    table = pa.table({"id": [f"r{i}" for i in range(10)], "problem": ["p"] * 10, "extra": list(range(10))})
    pq.write_table(table, tmp_path / "one-row-group.parquet", row_group_size=100)
    parts = list(shards.iter_tables(tmp_path / "one-row-group.parquet", columns=["id", "problem", "absent"]))
    assert [t.num_rows for t in parts] == [3, 3, 3, 1]  # one row group, read a few rows at a time
    assert pa.concat_tables(parts).equals(table.select(["id", "problem"]))
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    (empty,) = shards.iter_tables(tmp_path / "empty.parquet")
    assert empty.num_rows == 0 and empty.schema.names == ["id", "problem", "extra"]


def test_exact_dedup_keeps_first_and_normalises_whitespace():
    rows = dataset_rows(3)
    rows[2]["problem"], rows[2]["solution"] = rows[0]["problem"] + "  \n", "\n" + rows[0]["solution"]
    deduper, stats = ExactDeduper(), StageStats("exact_dedup")
    out = run_step(deduper, pa.Table.from_pylist(rows, schema=DATASET_SCHEMA), stats)
    kept, audit = out.kept, out.audit
    assert kept.column("id").to_pylist() == ["id0", "id1"]
    record = audit.to_pylist()[0]
    assert record["id"] == "id2" and record["duplicate_of"] == "id0" and record["stage"] == "exact_dedup"
    assert stats.as_dict()["dropped"] == {"exact_duplicate": 1}
