"""prefect.yaml end to end: a real server, the pools, `prefect deploy --all`, process workers,
deployment runs against the loopback fake teacher, artifacts through the API and in the UI.

Module order matters (each test builds on the one before): the versioned refresh, then
the same scheduled run with no new seeds, then a refresh spread over two shard workers.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support.fake_teacher import FakeTeacher

REPO = Path(__file__).resolve().parents[2]
SHARED_BENCHMARKS = Path(os.environ.get("OSSFORGE_SHARED_BENCHMARKS", REPO.parent / "shared" / "benchmarks"))
CHROMIUM = Path(os.environ.get("OSSFORGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
VERSIONED = "oss-instruct-versioned-refresh/scheduled"
ONCE = "oss-instruct-refresh/once"
SHARDS = "generate-shard/cpu"

pytestmark = pytest.mark.slow


def run(coro):
    return asyncio.run(coro)


def prefect_env(**extra: str) -> dict:
    # The worker's flow runs inherit this: the test server, its PREFECT_HOME, quick polling.
    return {
        **os.environ,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        # The scheduled deployment requires the benchmarks it lists: the workers read them offline here.
        "OSSFORGE_BENCHMARK_DIR": str(SHARED_BENCHMARKS),
        **extra,
    }


class Worker:
    """`deployments/start-worker.sh` as a subprocess in its own process group."""

    def __init__(self, log_dir: Path, kind: str, name: str, *args: str, limit: int | None = None):
        self.log_path = log_dir / f"worker-{name}.log"
        env = prefect_env(**({"WORKER_LIMIT": str(limit)} if limit else {}))
        self.proc = subprocess.Popen(
            ["bash", str(REPO / "deployments" / "start-worker.sh"), kind, name, *args],
            cwd=REPO, env=env, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]


@pytest.fixture(scope="module")
def teacher():
    server = FakeTeacher(latency=0.05)
    url = server.start_in_thread()
    yield server, url
    server.stop_thread()


@pytest.fixture(scope="module")
def deployed(prefect_server):
    """The README walk-through's first steps: create the pools, apply prefect.yaml."""
    env = prefect_env()
    pools = subprocess.run(["bash", "deployments/create-pools.sh"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
    assert pools.returncode == 0, pools.stdout[-2000:] + pools.stderr[-2000:]
    deploy = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

    from prefect.client.orchestration import get_client

    async def check():
        async with get_client() as client:
            names = {}
            for full in (VERSIONED, SHARDS, ONCE, "train/gpu", "near-dedup/standalone", "decontaminate/standalone"):
                names[full] = await client.read_deployment_by_name(full)
            return names

    deployments = run(check())
    train = deployments["train/gpu"]
    assert train.work_pool_name == "ossforge-gpu" and train.global_concurrency_limit.limit == 1
    assert deployments[VERSIONED].schedules and deployments[VERSIONED].schedules[0].schedule.cron == "0 3 * * *"
    assert deployments[VERSIONED].global_concurrency_limit.limit == 1
    assert deployments[SHARDS].work_queue_name == "shards"
    return prefect_server


@pytest.fixture(scope="module")
def main_worker(deployed, tmp_path_factory):
    # Serves the default queue only, so shard runs go to the shard workers of the last test.
    worker = Worker(tmp_path_factory.mktemp("workers"), "cpu", "main-worker", "--work-queue", "default")
    yield worker
    worker.stop()


def trigger(name: str, parameters: dict, timeout: float = 240):
    from prefect.deployments import run_deployment

    return run_deployment(name, parameters=parameters, timeout=timeout, poll_interval=1, as_subflow=False)


def teacher_config(url: str, concurrency: int = 4) -> dict:
    return {"base_url": url, "model": "fake-teacher", "api_key_env": "", "concurrency": concurrency}


def versioned_params(root: Path, url: str) -> dict:
    return {"config": {"root": str(root), "refresh": {
        "seeds": {"num_seeds": 12}, "teacher": teacher_config(url), "generation_shard_size": 6,
        "decontamination": None,
    }}}


async def read_artifacts(keys: list[str], since) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        arts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    return [a for a in arts if a.created >= since]


@pytest.fixture(scope="module")
def versioned_root(tmp_path_factory):
    return tmp_path_factory.mktemp("versioned") / "root"


def test_scheduled_refresh_deployment_publishes_a_version_with_artifacts_shown_in_the_ui(
    main_worker, teacher, versioned_root, prefect_server
):
    server, url = teacher
    started = datetime.datetime.now(datetime.timezone.utc)
    flow_run = trigger(VERSIONED, versioned_params(versioned_root, url))
    assert flow_run.state.is_completed(), (flow_run.state, main_worker.log())

    latest = versioned_root / "latest"
    assert latest.is_symlink() and os.readlink(latest) == "versions/0001"
    record = json.loads((latest / "version.json").read_text())
    manifest = json.loads((latest / "manifest.json").read_text())
    assert record["rows"] == manifest["rows"] > 0 and manifest["accounting"]["balanced"]
    assert server.counters.requests == record["new_seeds"] == manifest["stages"]["seeds"]["out"]

    progress_keys = ["refresh-progress", "refresh-cleaning-progress", "refresh-dedup-progress"]  # one per streaming stage
    keys = [*progress_keys, "refresh-shards", "refresh-summary", "refresh-report", "refresh-versions"]
    arts = run(read_artifacts(keys, started))
    by_key = {a.key: a for a in arts}
    assert set(by_key) == set(keys)
    report = by_key["refresh-report"]
    assert report.data.count("data:image/png;base64,") == 3 and "## Samples" in report.data
    assert by_key["refresh-shards"].type == "table"
    assert all(by_key[key].type == "progress" and by_key[key].data == 100.0 for key in progress_keys)

    check_ui(prefect_server.removesuffix("/api"), report)


def check_ui(ui: str, report) -> None:
    """The refresh run's page lists its artifacts; the report page shows its three charts."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run must apt-get install chromium")
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.sync_api import sync_playwright

    from prefect.client.orchestration import get_client

    async def run_name():
        async with get_client() as client:
            return (await client.read_flow_run(report.flow_run_id)).name

    name = run(run_name())
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{ui}/runs/flow-run/{report.flow_run_id}")
            page.get_by_text(name).first.wait_for(timeout=30_000)
            page.get_by_text("Completed").first.wait_for(timeout=30_000)
            page.get_by_text("Artifacts", exact=True).first.click()  # the run page's Artifacts tab
            for key in ("refresh-report", "refresh-summary", "refresh-shards"):
                page.get_by_text(key).first.wait_for(timeout=30_000)

            page.goto(f"{ui}/artifacts/artifact/{report.id}")
            page.get_by_text("Dataset report:").first.wait_for(timeout=30_000)
            page.wait_for_function(
                "() => [...document.images].filter(i => i.src.startsWith('data:image/png') && i.naturalWidth > 0)"
                ".length === 3",
                timeout=30_000,
            )
        finally:
            browser.close()


def test_scheduled_run_with_no_new_seeds_sends_nothing_and_publishes_no_version(main_worker, teacher, versioned_root):
    server, url = teacher
    before = server.counters.requests
    flow_run = trigger(VERSIONED, versioned_params(versioned_root, url))
    assert flow_run.state.is_completed(), (flow_run.state, main_worker.log())
    assert server.counters.requests == before
    assert sorted(p.name for p in (versioned_root / "versions").iterdir()) == ["0001"]
    assert os.readlink(versioned_root / "latest") == "versions/0001"


def test_a_run_with_new_seeds_pays_only_for_them_and_chains_training(main_worker, teacher, versioned_root):
    server, url = teacher
    before = server.counters.requests
    params = versioned_params(versioned_root, url)
    params["config"]["refresh"]["seeds"]["num_seeds"] = 16
    params["config"]["train_deployment"] = "train/gpu"
    params["config"]["train_parameters"] = {"output_dir": str(versioned_root.parent / "train"), "cpu": True}
    flow_run = trigger(VERSIONED, params)
    assert flow_run.state.is_completed(), (flow_run.state, main_worker.log())

    record = json.loads((versioned_root / "latest" / "version.json").read_text())
    assert record["version"] == "0002" and record["parent"] == "0001"
    assert 0 < record["new_seeds"] < 16
    assert server.counters.requests - before == record["new_seeds"]  # earlier versions' seeds are not re-sent
    assert server.counters.repeats == 0
    first = pq.read_table(versioned_root / "versions" / "0001" / "data")["seed"].to_pylist()
    second = pq.read_table(versioned_root / "versions" / "0002" / "data")["seed"].to_pylist()
    assert not set(first) & set(second)

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    async def training_runs():
        async with get_client() as client:
            dep = await client.read_deployment_by_name("train/gpu")
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[dep.id]))
            )

    (train_run,) = run(training_runs())  # waits in the GPU pool's queue: no GPU worker here
    assert train_run.parameters["cfg"]["datasets"] == record["lineage"]
    assert train_run.state.is_scheduled()


def test_refresh_spread_over_two_shard_workers_runs_each_shard_once(main_worker, teacher, tmp_path):
    server, url = teacher
    before = server.counters.requests
    out = tmp_path / "multi"
    # One run at a time each: with two shards, each worker must take one.
    workers = [Worker(tmp_path, "shards", f"shard-{w}", limit=1) for w in "ab"]
    try:
        params = {"config": {
            "output_dir": str(out),
            "seeds": {"num_seeds": 8, "random_seed": 7},
            "teacher": teacher_config(url, concurrency=2),
            "generation_shard_size": 4,
            "near_dedup": None,
            "decontamination": None,
            "shard_deployment": SHARDS,
            "teacher_rate_limit": {"name": "test-teacher-rpm", "requests_per_minute": 6000, "batch": 10},
        }}
        flow_run = trigger(ONCE, params, timeout=300)
        assert flow_run.state.is_completed(), (flow_run.state, main_worker.log(), workers[0].log(), workers[1].log())
    finally:
        for w in workers:
            w.stop()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["accounting"]["balanced"]
    summaries = [json.loads(p.read_text()) for p in sorted((out / ".work" / "summaries").glob("*.json"))]
    assert len(summaries) == 2
    assert {s["worker"] for s in summaries} == {"shard-a", "shard-b"}
    # Every seed crossed the wire once: no shard ran twice.
    assert server.counters.requests - before == manifest["stages"]["seeds"]["out"] == 8

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    async def shard_runs():
        async with get_client() as client:
            dep = await client.read_deployment_by_name(SHARDS)
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[dep.id]))
            )
            limit = await client.read_global_concurrency_limit_by_name("test-teacher-rpm")
            return runs, limit

    runs, limit = run(shard_runs())
    assert Counter(r.name for r in runs) == Counter({f"shard-{i:05d}": 1 for i in range(2)})
    assert all(r.state.is_completed() for r in runs)
    assert limit.limit == 6000 and limit.slot_decay_per_second == pytest.approx(100.0)


def test_two_shard_workers_share_one_budget(main_worker, teacher, tmp_path):
    """Issue 14: each shard flow run used to open its own Budget, so two workers spent twice
    the run's budget. With the run's ledger the refresh stops near the budget."""
    import asyncio as _asyncio

    import pyarrow as pa

    from tasks.teacher.config import TeacherConfig
    from tasks.teacher.session import TeacherSession

    server, url = teacher

    async def one_request() -> int:
        async with TeacherSession(TeacherConfig(**teacher_config(url))) as session:
            replies, _ = await session.complete_shard(pa.table({"seed_index": [10_000], "seed": ["x = 1\n"]}))
        return replies[0].prompt_tokens + replies[0].completion_tokens

    per_request = _asyncio.run(one_request())
    budget = per_request * 8  # half of the 16 seeds
    out = tmp_path / "budgeted"
    workers = [Worker(tmp_path, "shards", f"budget-{w}", limit=1) for w in "ab"]
    try:
        params = {"config": {
            "output_dir": str(out),
            "seeds": {"num_seeds": 16, "random_seed": 11},
            "teacher": {**teacher_config(url, concurrency=4), "max_total_tokens": budget},
            "generation_shard_size": 8,
            "near_dedup": None,
            "decontamination": None,
            "validation": None,
            "shard_deployment": SHARDS,
        }}
        flow_run = trigger(ONCE, params, timeout=300)
        assert flow_run.state.is_completed(), (flow_run.state, main_worker.log(), workers[0].log(), workers[1].log())
    finally:
        for w in workers:
            w.stop()
    manifest = json.loads((out / "manifest.json").read_text())
    spent = manifest["usage"]["prompt_tokens"] + manifest["usage"]["completion_tokens"]
    summaries = [json.loads(p.read_text()) for p in sorted((out / ".work" / "summaries").glob("*.json"))]
    assert {s["worker"] for s in summaries} == {"budget-a", "budget-b"}
    assert manifest["status"] == "stopped_by_budget" and manifest["accounting"]["balanced"]
    import pyarrow.parquet as _pq

    rows = _pq.read_table(out / "data", columns=["prompt_tokens", "completion_tokens"]).to_pylist()
    largest = max(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    assert budget <= spent <= budget + largest, (spent, budget, largest)  # before: each worker spent the budget
    assert len(list((out / ".cache" / "budget").glob("*.sqlite"))) == 1  # one ledger for the run


@pytest.fixture
def webhook():
    """A loopback HTTP endpoint that records the JSON bodies POSTed to it."""
    import http.server
    import threading

    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_a_failed_run_notifies_through_the_automation(main_worker, teacher, webhook, tmp_path):
    _, url = teacher
    hook_url, received = webhook
    setup = subprocess.run([sys.executable, "deployments/notify_on_failure.py", "--webhook-url", hook_url],
                           cwd=REPO, env=prefect_env(), capture_output=True, text=True, timeout=120)
    assert setup.returncode == 0, setup.stderr[-2000:]
    params = {"config": {"output_dir": str(tmp_path / "x"), "seeds": {"source": str(tmp_path / "no-such-corpus")},
                         "teacher": teacher_config(url)}}
    flow_run = trigger(ONCE, params)
    assert flow_run.state.is_failed(), flow_run.state
    deadline = time.monotonic() + 90
    while not received and time.monotonic() < deadline:
        time.sleep(0.5)
    assert received, "the automation sent no notification"
    text = received[0]["text"]
    assert flow_run.name in text and "Failed" in text and "oss-instruct-refresh" in text
    assert hook_url not in text

    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock.load("ossforge-alerts")
    assert block.url == "{{webhook_url}}" and block.secrets.get_secret_value() == {"webhook_url": hook_url}

