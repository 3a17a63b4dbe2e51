"""`ossforge decontaminate` on an existing dataset: a check that could not load every
benchmark is "partial" in its manifest and its CLI summary (issue 14). Before, the
standalone manifest said "complete" whatever was missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "ossforge.cli", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=REPO)


def rows(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "problem": f"Sort {i} numbers with a heap.",
                                        "solution": f"def f(xs):\n    return sorted(xs)[:{i}]\n"}) + "\n"
                            for i in range(6)))
    return path


def test_missing_benchmarks_make_the_standalone_check_partial(shared_benchmarks, tmp_path):
    data = rows(tmp_path / "in.jsonl")
    out = tmp_path / "clean"
    result = cli("decontaminate", "-i", str(data), "-o", str(out), "--benchmark-dir", str(shared_benchmarks), "--no-hub",
                 "--benchmarks", "humaneval,mbpp,apps", "--workers", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "partial" and manifest["not_checked"] == ["apps"]
    assert "decontamination partial" in result.stderr and "apps" in result.stderr

    everything_there = cli("decontaminate", "-i", str(data), "-o", str(tmp_path / "clean2"), "--benchmark-dir",
                           str(shared_benchmarks), "--no-hub", "--benchmarks", "humaneval,mbpp", "--workers", "1")
    assert everything_there.returncode == 0, everything_there.stderr[-2000:]
    manifest = json.loads((tmp_path / "clean2" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["not_checked"] == []
    assert "partial" not in everything_there.stderr


def test_require_benchmarks_on_the_standalone_command(shared_benchmarks, tmp_path):
    data = rows(tmp_path / "in.jsonl")
    refused = cli("decontaminate", "-i", str(data), "-o", str(tmp_path / "clean"), "--benchmark-dir",
                  str(shared_benchmarks), "--no-hub", "--require-benchmarks", "all", "--workers", "1")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "ds1000" in refused.stderr and not (tmp_path / "clean" / "manifest.json").exists()
