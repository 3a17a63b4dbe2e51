"""The scheduled deployment requires the benchmarks it lists (issue 14): offline without
the files it fails before the teacher is asked; with them it checks every one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.core.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def scheduled_decontamination(monkeypatch, benchmark_dir: str | None):
    from flows.versioned_refresh import VersionedRefreshConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if benchmark_dir is None:
        monkeypatch.delenv("OSSFORGE_BENCHMARK_DIR", raising=False)
    else:
        monkeypatch.setenv("OSSFORGE_BENCHMARK_DIR", benchmark_dir)
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    scheduled = next(d for d in deployments if d["entrypoint"].endswith("versioned_refresh_flow"))
    config = VersionedRefreshConfig.model_validate(scheduled["parameters"]["config"])
    return config.refresh.decontamination


def test_the_scheduled_deployment_requires_every_benchmark_it_lists(monkeypatch):
    cfg = scheduled_decontamination(monkeypatch, None)
    assert cfg.benchmarks and set(cfg.required_benchmarks()) == set(cfg.benchmarks)
    from tasks.decontamination.decontaminate import require_benchmarks

    with pytest.raises(UserError, match="could not be loaded"):
        require_benchmarks(cfg)  # offline, no files: HumanEval alone (its package) would have been a partial check


def test_with_the_files_given_the_scheduled_check_is_complete(monkeypatch, shared_benchmarks):
    cfg = scheduled_decontamination(monkeypatch, str(shared_benchmarks))
    from tasks.decontamination.benchmarks import load_benchmarks

    loaded = load_benchmarks(cfg.benchmarks, cfg.benchmark_dir, allow_hub=False)
    assert not loaded.missing and {b.name for b in loaded.loaded} == set(cfg.benchmarks)
