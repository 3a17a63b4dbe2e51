"""Training on a versioned dataset reads the whole lineage (issue 14).

A version of a versioned refresh holds only its new rows; prefect.yaml and docs/training.md
point training at ROOT/latest. Before, that trained on the newest increment alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from support.training_data import write_toy_dataset
from tasks.publish.versions import VersionStore
from training.dataset_check import DatasetError, resolve_datasets


def versioned_root(root: Path, sizes: list[int]) -> VersionStore:
    """A root as the versioned refresh leaves it: versions/0001.. each with its own new rows, latest."""
    store = VersionStore(root)
    offset = 0
    for rows in sizes:
        name = store.next_name()
        manifest = write_toy_dataset(store.path(name), n=rows, offset=offset, shard_size=8)
        store.record_seeds(name, [pa.table({"lang": ["python"], "seed": [f"s{offset}"]})])
        store.publish(name, manifest, new_seeds=rows)
        offset += rows
    return store


def test_a_root_latest_or_a_version_resolves_to_its_lineage(tmp_path):
    store = versioned_root(tmp_path / "root", [16, 8, 4])
    whole = [("0001", str(store.path("0001"))), ("0002", str(store.path("0002"))), ("0003", str(store.path("0003")))]
    as_paths = lambda resolved: [(label, str(Path(p).resolve())) for label, p in resolved]  # noqa: E731
    want = [(label, str(Path(p).resolve())) for label, p in whole]
    assert as_paths(resolve_datasets([str(store.root)])) == want
    assert as_paths(resolve_datasets([str(store.root / "latest")])) == want
    assert as_paths(resolve_datasets([str(store.path("0002"))])) == want[:2]  # the dataset as of version 2
    # The chained run passes the lineage itself: each version once.
    assert as_paths(resolve_datasets([p for _, p in whole])) == want
    # A plain dataset directory is itself.
    write_toy_dataset(tmp_path / "plain", n=4)
    assert resolve_datasets([str(tmp_path / "plain")]) == [("plain", str(tmp_path / "plain"))]
    # The root moved after publishing: the versions are found beside each other.
    moved = tmp_path / "moved"
    shutil.move(str(store.root), moved)
    assert [label for label, _ in resolve_datasets([str(moved / "latest")])] == ["0001", "0002", "0003"]


def test_a_root_with_no_complete_version_is_one_line(tmp_path):
    (tmp_path / "root" / "versions" / "0001").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no complete version"):
        resolve_datasets([str(tmp_path / "root")])


@pytest.mark.slow
def test_train_on_latest_reads_every_version_and_logs_rows_per_version(prefect_server, tmp_path, capsys):
    pytest.importorskip("deepspeed")
    from ossforge.cli import main as cli_main
    from training.metrics import read_metrics

    store = versioned_root(tmp_path / "root", [16, 8])
    code = cli_main([
        "train", "--dataset", str(store.root / "latest"), "--output-dir", str(tmp_path / "run"),
        "--nproc", "1", "--cpu", "--max-steps", "2", "--save-steps", "0",
        "--global-batch-size", "8", "--micro-batch-size", "8", "--max-length", "128",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert "data: 0001 16 rows, 0002 8 rows" in captured.out
    start = next(r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["event"] == "start")
    assert start["data"]["rows_in"] == 24  # before: 8, the newest increment alone
    assert json.loads((store.path("0002") / "version.json").read_text())["rows_total"] == 24
