"""Rewriting a dataset in place is crash-safe (issue 14): killed at any point of a publish,
the directory shows the old complete dataset or the new one, never a mix.

Before: old shards were deleted before the new ones were renamed in, while the old
manifest.json stayed until replaced, so a crash left a manifest naming files that were gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support.training_data import write_toy_dataset
from tasks.core.parquet_io import file_sha256

REPO = Path(__file__).resolve().parents[2]

# Publishes 9 new rows over OUT, and freezes right after the rename named by the hook.
PUBLISHER = r"""
import os, sys, time
from pathlib import Path
sys.path[:0] = [sys.argv[3], sys.argv[3] + "/tests"]
out, hook = Path(sys.argv[1]), sys.argv[2]
real_replace = os.replace

def frozen_after(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    name = Path(dst).name
    hit = {
        "a_new_shard_renamed_in": name.endswith(".parquet") and not name.startswith(".") and Path(dst).parent.name == "data",
        "new_manifest_written": name == "manifest.json",
        "pointer_swapped": name == "current",
    }[hook]
    if hit:
        print("HOOK", flush=True)
        time.sleep(600)

os.replace = frozen_after
from support.training_data import write_toy_dataset
write_toy_dataset(out, n=9, offset=100, shard_size=2)
print("DONE", flush=True)
"""


def read_as_a_reader(out: Path) -> set[str]:
    """What a reader sees: the manifest's files (checksums match) and data/*.parquet agree."""
    manifest = json.loads((out / "manifest.json").read_text())
    listed = []
    for f in manifest["files"]:
        path = out / f["path"]
        assert path.is_file(), f"manifest names a missing file: {f['path']}"
        assert file_sha256(path) == f["sha256"]
        listed += pq.read_table(path, columns=["id"])["id"].to_pylist()
    globbed = [i for p in sorted((out / "data").glob("*.parquet")) for i in pq.read_table(p, columns=["id"])["id"].to_pylist()]
    assert sorted(globbed) == sorted(listed), "data/*.parquet holds rows the manifest does not list"
    assert len(listed) == manifest["rows"]
    return set(listed)


@pytest.mark.parametrize("hook, expect", [
    ("a_new_shard_renamed_in", "old"),
    ("new_manifest_written", "old"),
    ("pointer_swapped", "new"),
])
def test_kill_9_mid_publish_leaves_the_old_or_the_new_dataset(tmp_path, hook, expect):
    out = tmp_path / "ds"
    write_toy_dataset(out, n=10, shard_size=3)
    old = read_as_a_reader(out)
    new = {f"row-{i}" for i in range(100, 109)}

    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(out), hook, str(REPO)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line != "HOOK":
        proc.kill()
        pytest.fail(f"the publish never reached {hook}: {line!r} {proc.stderr.read()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    seen = read_as_a_reader(out)
    assert seen == (old if expect == "old" else new)

    # The next publish goes through and leaves one generation behind.
    write_toy_dataset(out, n=5, offset=200, shard_size=2)
    assert read_as_a_reader(out) == {f"row-{i}" for i in range(200, 205)}
    assert len(list((out / ".published").iterdir())) == 1


def test_a_directory_published_by_an_older_ossforge_is_converted(tmp_path):
    """Real data/ and manifest.json from before generations: the first publish moves them aside."""
    out = tmp_path / "ds"
    write_toy_dataset(out, n=4, shard_size=2)
    for entry in ("data", "manifest.json", "audit", "README.md"):  # make it look like the old layout
        link = out / entry
        if link.is_symlink():
            target = link.resolve()
            link.unlink()
            if target.exists():
                os.replace(target, link)
    (out / "current").unlink()
    assert (out / "data").is_dir() and not (out / "data").is_symlink()
    write_toy_dataset(out, n=3, offset=50, shard_size=2)
    assert read_as_a_reader(out) == {f"row-{i}" for i in range(50, 53)}
