"""A plain rerun retries the seeds that failed at the teacher, and only them (issue 14).

Before: a shard whose files were staged reused its cached task result, so rows that ended
`*_retries_exhausted` stayed failed on every rerun, whatever the teacher did meanwhile."""

from __future__ import annotations

import json

import pytest

from support.fake_teacher import FakeTeacher

def _refresh_flow_helpers():
    # The CLI helpers of tests/flows/test_refresh_flow.py (tests/flows is not a package: `flows` is the product's).
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("test_refresh_flow.py")
    spec = importlib.util.spec_from_file_location("refresh_flow_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _refresh_flow_helpers()
PLANTED_KEY, check_dataset, run_cli = _helpers.PLANTED_KEY, _helpers.check_dataset, _helpers.run_cli


@pytest.fixture
def flaky_teacher():
    server = FakeTeacher(latency=0.005, rate_500=0.3, api_key=PLANTED_KEY)
    url = server.start_in_thread()
    yield server, url
    server.stop_thread()


def test_a_plain_rerun_retries_teacher_failures_only(prefect_server, flaky_teacher, tmp_path):
    server, url = flaky_teacher
    out = tmp_path / "ds"
    config = tmp_path / "refresh.json"
    config.write_text(json.dumps({
        "output_dir": str(out), "generation_shard_size": 20, "seeds": {"num_seeds": 60},
        "teacher": {"base_url": url, "model": "fake-teacher", "api_key_env": "TEACHER_KEY", "concurrency": 8,
                    "max_retries": 0, "retry_base_s": 0.01, "retry_max_s": 0.02},
    }))
    args = ["refresh", "--config", str(config), "--no-progress", "--no-decontaminate"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = check_dataset(out, shard_size=1000)
    failed = manifest["stages"]["teacher"]["dropped"].get("http_500_retries_exhausted", 0)
    assert failed > 0  # a 30% fault rate with no retries
    assert manifest["teacher_failures_rerun"] == {"retried": 0, "recovered": 0}

    server.configure(rate_500=0.0)  # the provider is healthy again
    before = server.counters.requests
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = check_dataset(out, shard_size=1000)
    # Only the failed seeds were sent (the others came from the reply cache), and each got a reply.
    assert server.counters.requests - before == failed
    assert "http_500_retries_exhausted" not in rerun["stages"]["teacher"]["dropped"]
    assert rerun["teacher_failures_rerun"] == {"retried": failed, "recovered": failed}
    assert rerun["stages"]["teacher"]["out"] == 60 and rerun["rows"] >= manifest["rows"]

    # A third run has nothing left to retry: nothing is sent.
    sent = server.counters.requests
    third = run_cli(*args)
    assert third.returncode == 0, third.stderr[-3000:]
    assert server.counters.requests == sent
