"""The `evaluate` flow end to end on CPU: the tiny model, a real Prefect server, the sandbox."""

from __future__ import annotations

import asyncio
import json

import pyarrow.parquet as pq
import pytest

from flows.evaluate import SUMMARY_KEY, TABLE_KEY, EvaluateConfig, evaluate_flow
from ossforge.cli import main as cli_main
from tasks.core.schema import EVAL_RESULT_SCHEMA
from training.tiny import build_tiny_model

LIMIT = 4  # problems per benchmark


@pytest.fixture
def real_server(prefect_server):
    """Point this process's Prefect settings at the fixture's server.

    Prefect reads PREFECT_API_URL once, when it is imported (at collection time here); the
    fixture sets the variable later, so without this the flow would quietly run against an
    ephemeral server of its own.
    """
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        assert get_current_settings().api.url == prefect_server
        yield prefect_server
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # send this test's logs while the server is still up


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


async def _artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return found


@pytest.mark.slow
def test_evaluate_flow_scores_every_problem(real_server, tiny_model, shared_benchmarks, tmp_path):
    cfg = EvaluateConfig(
        model=str(tiny_model),
        benchmarks="humaneval,humaneval+,mbpp+",
        output_dir=str(tmp_path / "eval"),
        limit=LIMIT,
        benchmark_dir=str(shared_benchmarks),
        cache_dir=str(tmp_path / "cache"),
        max_new_tokens=48,
        batch_size=6,
    )
    summary = evaluate_flow(cfg)

    table = pq.read_table(tmp_path / "eval" / "results.parquet")
    assert table.schema.equals(EVAL_RESULT_SCHEMA)
    rows = table.to_pylist()
    assert len(rows) == 3 * LIMIT
    expected_ids = {("humaneval", f"HumanEval/{i}") for i in range(LIMIT)}
    expected_ids |= {("humaneval+", f"HumanEval/{i}") for i in range(LIMIT)}
    assert expected_ids <= {(r["benchmark"], r["task_id"]) for r in rows}
    for row in rows:
        assert row["passed_base"] is not None and row["program"] is not None
        assert row["passed_base"] or row["error"]  # every failure has a kind
        assert (row["passed_plus"] is None) == (row["benchmark"] == "humaneval")

    on_disk = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert on_disk["problems_scored"] == 3 * LIMIT == summary["problems_scored"]
    assert set(on_disk["benchmarks"]) == {"humaneval", "humaneval+", "mbpp+"}
    for name, entry in on_disk["benchmarks"].items():
        assert entry["problems"] == LIMIT
        assert 0.0 <= entry["pass@1"] <= 1.0
        assert ("plus_pass@1" in entry) == (name != "humaneval")
    assert on_disk["generation"]["backend"] == "transformers" and on_disk["generation"]["prompts"] == 3 * LIMIT
    assert "rlimits" in on_disk["sandbox_guards"]

    for key in (SUMMARY_KEY, TABLE_KEY):
        artifacts = asyncio.run(_artifact(key))
        assert artifacts, f"no artifact {key}"
    # This run's summary: the session's Prefect server also holds other tests' evaluations.
    mine = [a.data for a in asyncio.run(_artifact(SUMMARY_KEY)) if str(tmp_path / "eval") in a.data]
    assert len(mine) == 1 and "| humaneval+ | 4 |" in mine[0]


def test_cli_rejects_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OSSFORGE_OFFLINE", "1")
    out = str(tmp_path / "out")
    assert cli_main(["evaluate", "--model", "tiny", "--benchmarks", "humaneval,apps", "--output-dir", out]) == 2
    assert "unknown benchmark 'apps'" in capsys.readouterr().err
    code = cli_main(["evaluate", "--model", "tiny", "--benchmarks", "mbpp+", "--output-dir", out,
                     "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--benchmark-dir" in err and len(err.strip().splitlines()) == 1
    code = cli_main(["evaluate", "--model", str(tmp_path / "no-model"), "--benchmarks", "humaneval", "--output-dir", out])
    err = capsys.readouterr().err
    assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
