"""A decontamination that could not load every benchmark says so (issue 14).

Through the CLI, offline, with the shared benchmark files (6 of the 9 registered
benchmarks: ds1000, apps and multipl_e are not there): the manifest's status is
"partial" and names what was not checked, so do the CLI summary and the dataset card;
`--require-benchmarks` (names or `all`) makes a missing one an error before the teacher
is asked anything. Also the card's language line (it read a key the seeds stage never
wrote, so it was always empty).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MISSING = ["apps", "ds1000", "multipl_e"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "ossforge.cli", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=REPO)


def refresh(url: str, out: Path, benchmarks: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("refresh", "--num-seeds", "8", "--teacher-base-url", url, "--teacher-model", "fake-teacher",
               "--api-key-env", "", "--output-dir", str(out), "--no-progress", "--no-near-dedup",
               "--benchmark-dir", str(benchmarks), *extra)


@pytest.fixture(scope="module")
def partial_run(prefect_server, shared_benchmarks, tmp_path_factory):
    from support.fake_teacher import FakeTeacher

    server = FakeTeacher()
    url = server.start_in_thread()
    out = tmp_path_factory.mktemp("partial") / "ds"
    result = refresh(url, out, shared_benchmarks)
    yield result, out, url
    server.stop_thread()


def test_a_refresh_that_could_not_load_benchmarks_is_partial_and_says_which(partial_run):
    result, out, _ = partial_run
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "partial"  # before: "complete"
    assert manifest["benchmarks_not_checked"] == MISSING
    summary = " ".join(result.stdout.split())
    assert "decontamination partial" in summary and "NOT checked against apps, ds1000, multipl_e" in summary
    card = (out / "README.md").read_text()
    assert "Status: **partial**" in card and "not checked against apps, ds1000, multipl_e" in card


def test_the_dataset_card_names_the_seed_languages(partial_run):
    result, out, _ = partial_run
    assert result.returncode == 0, result.stderr[-3000:]
    seeds = json.loads((out / "manifest.json").read_text())["stages"]["seeds"]["extra"]["seeds_per_lang"]
    line = next(line for line in (out / "README.md").read_text().splitlines() if "languages:" in line)
    assert "see the lang column" not in line  # before: always this, the key it read was never written
    assert line.strip() == "languages: " + ", ".join(f"{lang} {n}" for lang, n in seeds.items()) + "."
    assert sum(seeds.values()) == 8


@pytest.mark.parametrize("required", ["all", "humaneval,ds1000"])
def test_require_benchmarks_refuses_a_missing_one_before_the_teacher(prefect_server, shared_benchmarks, fake_teacher,
                                                                     tmp_path, required):
    result = refresh(fake_teacher.base_url, tmp_path / "ds", shared_benchmarks, "--require-benchmarks", required)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ds1000" in lines[0] and "humaneval:" not in lines[0]
    assert fake_teacher.stats()["requests"] == 0
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_require_benchmarks_that_are_there_passes(partial_run, shared_benchmarks, tmp_path):
    _, _, url = partial_run
    result = refresh(url, tmp_path / "ds", shared_benchmarks, "--require-benchmarks", "humaneval,mbpp")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["status"] == "partial"  # still not all checked


def test_the_decontaminate_command_requires_benchmarks_too(partial_run, shared_benchmarks, tmp_path):
    _, out, _ = partial_run
    args = ["decontaminate", "-i", str(out / "data"), "-o", str(tmp_path / "clean"), "--benchmark-dir",
            str(shared_benchmarks), "--no-hub"]
    refused = cli(*args, "--require-benchmarks", "apps")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1 and "apps" in refused.stderr
    unknown = cli(*args, "--require-benchmarks", "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr
    done = cli(*args)
    assert done.returncode == 0 and "NOT checked" in done.stderr and "ds1000" in done.stderr
