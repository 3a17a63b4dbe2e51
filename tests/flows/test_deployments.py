"""Deployment files and the pieces of the versioned refresh, without a server: versions,
seed exclusion, the report artifact, prefect.yaml, pool templates, worker scripts, image recipe."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tasks.core.schema import DATASET_SCHEMA, SEED_SCHEMA
from tasks.core.parquet_io import rebatch
from tasks.core.stats import StageStats
from tasks.core.step import run_step
from tasks.publish.versions import VersionStore
from tasks.seeds.exclusion import SeedExcluder, seed_digests

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = REPO / "deployments"


def seeds_table(snippets: list[str], start: int = 0, lang: str = "python") -> pa.Table:
    return pa.Table.from_pylist(
        [{"seed_index": start + i, "seed": s, "lang": lang, "seed_start_line": 1, "seed_end_line": 1}
         for i, s in enumerate(snippets)],
        schema=SEED_SCHEMA,
    )


# --- versions -------------------------------------------------------------------------------
def test_seed_exclusion_drops_known_seeds_and_rebatches_in_order(tmp_path):
    store = VersionStore(tmp_path)
    first = seeds_table(["a = 1", "b = 2", "c = 3"])
    store.path("0001").mkdir(parents=True)
    assert store.record_seeds("0001", [first]) == 3
    store.publish("0001", {"rows": 3}, new_seeds=3)

    excluder = SeedExcluder(store.digest_files())
    batches = [seeds_table(["a = 1", "d = 4", "e = 5"]), seeds_table(["b = 2", "f = 6"], start=3),
               seeds_table(["g = 7", "c = 3", "h = 8"], start=5)]
    stats = StageStats("seeds")
    out = list(rebatch((run_step(excluder, b, stats).kept for b in batches), 2))
    assert [t.num_rows for t in out] == [2, 2, 1]
    assert [s for t in out for s in t["seed"].to_pylist()] == ["d = 4", "e = 5", "f = 6", "g = 7", "h = 8"]
    assert [i for t in out for i in t["seed_index"].to_pylist()] == [1, 2, 4, 5, 7]  # request seeds unchanged
    assert stats.dropped == {SeedExcluder.REASON: 3} and (stats.rows_in, stats.rows_out) == (8, 5)
    # The same text in another language is another seed.
    assert SeedExcluder(store.digest_files()).apply(seeds_table(["a = 1"], lang="ruby")).kept.num_rows == 1
    assert len(set(seed_digests(first).to_pylist())) == 3


def test_versions_latest_moves_only_on_publish_and_unfinished_dirs_are_reused(tmp_path):
    store = VersionStore(tmp_path)
    assert store.next_name() == "0001" and store.latest() is None
    store.path("0001").mkdir(parents=True)
    assert store.next_name() == "0001"  # unfinished: resumed, not skipped
    first = store.publish("0001", {"rows": 5, "config_fingerprint": "x"}, new_seeds=6)
    assert store.latest() == "0001" and first["parent"] is None and first["rows_total"] == 5
    assert store.next_name() == "0002"
    store.path("0002").mkdir()
    assert store.latest() == "0001"  # an unfinished version is never pointed at
    second = store.publish("0002", {"rows": 2}, new_seeds=2)
    assert store.latest() == "0002" and (tmp_path / "latest").is_symlink()
    assert second["parent"] == "0001" and second["rows_total"] == 7
    assert [Path(p).name for p in second["lineage"]] == ["0001", "0002"]
    assert store.complete() == ["0001", "0002"]
    store.path("0003").mkdir()
    store.discard("0003")
    store.discard("0002")  # complete versions are never discarded
    assert sorted(p.name for p in store.versions.iterdir()) == ["0001", "0002"]
    assert not list(tmp_path.glob(".latest.tmp-*"))


def test_seeds_the_teacher_never_answered_are_not_consumed(tmp_path):
    from flows.versioned_refresh import consumed_seeds
    from tasks.core.schema import AUDIT_SCHEMA
    from tasks.generation.shard import row_id
    from tasks.teacher.config import TeacherConfig
    from tasks.teacher.session import TeacherSession

    teacher = TeacherConfig(base_url="http://127.0.0.1:1/v1", model="m")
    seeds = seeds_table(["a = 1", "b = 2", "c = 3"])
    (tmp_path / ".work" / "seeds").mkdir(parents=True)
    pq.write_table(seeds, tmp_path / ".work" / "seeds" / "shard-00000.parquet")
    session = TeacherSession(teacher)
    ids = [row_id(session.build_request(i, s).key) for i, s in enumerate(["a = 1", "b = 2", "c = 3"])]
    (tmp_path / "audit").mkdir()
    pq.write_table(pa.Table.from_pylist([
        {"id": ids[0], "stage": "teacher", "reason": "http_500_retries_exhausted"},
        {"id": ids[2], "stage": "parse", "reason": "missing_marker"},
    ], schema=AUDIT_SCHEMA), tmp_path / "audit" / "generation.parquet")
    kept = consumed_seeds(tmp_path, teacher)
    assert [s for t in kept for s in t["seed"].to_pylist()] == ["b = 2", "c = 3"]


def test_versioned_config_shares_cache_index_and_excludes_earlier_seeds(tmp_path):
    from flows.versioned_refresh import VersionedRefreshConfig, version_refresh_config

    store = VersionStore(tmp_path / "root")
    store.path("0001").mkdir(parents=True)
    pq.write_table(pa.table({"seed_digest": pa.array([b"0" * 16], pa.binary(16))}),
                   store.path("0001") / "seed_digests.parquet")
    store.publish("0001", {"rows": 1}, new_seeds=1)
    config = VersionedRefreshConfig.model_validate(
        {"root": str(store.root), "refresh": {"teacher": {"base_url": "http://127.0.0.1:1/v1", "model": "m"}}}
    )
    cfg = version_refresh_config(config, store, store.next_name())
    assert cfg.output_dir == str(store.path("0002"))
    assert cfg.cache_dir == str(store.cache_dir)
    assert cfg.exclude_seed_digests == [str(store.path("0001") / "seed_digests.parquet")]
    assert cfg.near_dedup.index_dir == str(store.near_dedup_index) and cfg.near_dedup.version == "0002"


def test_operational_settings_do_not_change_the_fingerprint():
    from flows.refresh import RefreshConfig, config_fingerprint

    base = RefreshConfig.model_validate({"teacher": {"base_url": "http://127.0.0.1:1/v1", "model": "m"}})
    spread = base.model_copy(update={
        "shard_deployment": "generate-shard/cpu", "cache_dir": "/elsewhere", "report": False,
        "teacher_rate_limit": {"name": "x", "requests_per_minute": 60},
    })
    assert config_fingerprint(base) == config_fingerprint(spread)


# --- the report -----------------------------------------------------------------------------
def test_report_embeds_three_charts_samples_and_the_card(tmp_path):
    from flows.refresh import RefreshConfig
    from tasks.publish.publish import publish_dataset
    from tasks.publish.report import _fence, render_report

    now = dt.datetime.now(dt.timezone.utc)
    rows = [
        {"id": f"r{i}", "seed_index": i, "seed": f"x = {i}", "lang": lang, "problem": "Write ``` a fence " * (i + 1),
         "solution": "print(1)\n" * (i + 1), "teacher_model": "m", "created_at": now, "cluster_id": f"r{i}",
         "cluster_size": 1}
        for i, lang in enumerate(["python", "python", "rust", "go"])
    ]
    config = RefreshConfig.model_validate({"output_dir": str(tmp_path), "teacher": {"base_url": "http://h/v1", "model": "m"}})
    manifest = publish_dataset(tmp_path, [pa.Table.from_pylist(rows, schema=DATASET_SCHEMA)], 10, {
        "status": "complete", "config": config.model_dump(mode="json"), "config_fingerprint": "f",
        "stages": {"seeds": {"in": 4, "out": 4, "dropped": {}, "seconds": 0.0}},
        "accounting": {"seeds": 4, "rows": 4, "dropped": 0, "balanced": True},
    }, schema=DATASET_SCHEMA)
    md = render_report(tmp_path, manifest)
    uris = re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert len(uris) == 3
    import base64

    assert all(base64.b64decode(u).startswith(b"\x89PNG") for u in uris)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "languages.png", "problem_length.png", "solution_length.png"]
    assert md.count("### Sample") == 3 and "## Dataset card" in md and "\n---\n" not in md[:200]
    assert _fence("a ``` b").startswith("````\n")  # text with a fence cannot close the block


# --- prefect.yaml and the pools -------------------------------------------------------------
@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_every_deployment_points_at_a_flow_on_a_known_pool(prefect_yaml):
    from prefect.flows import Flow

    pools = {"ossforge-cpu": "process-pool.json", "ossforge-gpu": "gpu-pool-kubernetes.json"}
    seen = set()
    for dep in prefect_yaml["deployments"]:
        path, func = dep["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        assert isinstance(flow, Flow), dep["entrypoint"]
        seen.add(f"{flow.name}/{dep['name']}")
        assert dep["work_pool"]["name"] in pools
        for name, value in (dep.get("parameters") or {}).items():
            # The flow's own pydantic model accepts the defaults prefect.yaml gives.
            model = flow.fn.__annotations__[name]
            model = getattr(importlib.import_module(flow.fn.__module__), model) if isinstance(model, str) else model
            if "datasets" not in value:  # the training defaults name cluster paths
                model.model_validate(value)
    assert {"oss-instruct-versioned-refresh/scheduled", "generate-shard/cpu", "train/gpu",
            "near-dedup/standalone", "decontaminate/standalone"} <= seen
    by_name = {f"{d['entrypoint']}": d for d in prefect_yaml["deployments"]}
    train = by_name["flows/train.py:train_flow"]
    assert train["concurrency_limit"] == 1 and train["work_pool"]["name"] == "ossforge-gpu"
    assert by_name["flows/versioned_refresh.py:versioned_refresh_flow"]["schedules"][0]["cron"]


@pytest.mark.parametrize("template", ["process-pool.json", "gpu-pool-kubernetes.json"])
def test_pool_templates_only_use_declared_variables(template):
    data = json.loads((DEPLOYMENTS / template).read_text())
    declared = set(data["variables"]["properties"])
    used = set(re.findall(r"{{\s*([\w]+)\s*}}", json.dumps(data["job_configuration"])))
    assert used and used <= declared, used - declared


def test_gpu_template_requests_gpus_and_shared_memory():
    data = json.loads((DEPLOYMENTS / "gpu-pool-kubernetes.json").read_text())
    container = data["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert data["variables"]["properties"]["gpu_count"]["default"] >= 1


def test_gpu_image_recipe_matches_the_training_deployment(prefect_yaml):
    text = (DEPLOYMENTS / "gpu-worker.Dockerfile").read_text()
    assert re.search(r"^FROM \S+", text, re.M)
    workdir = re.findall(r"^WORKDIR (\S+)", text, re.M)[-1]
    train = next(d for d in prefect_yaml["deployments"] if d["entrypoint"].startswith("flows/train.py"))
    pull_dir = train["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"]
    assert pull_dir == workdir
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} is missing"
    assert re.search(r'torch==\$\{TORCH_VERSION\}', text) and "ARG TORCH_VERSION=" in text  # never unpinned


@pytest.mark.parametrize("script", ["start-worker.sh", "create-pools.sh"])
def test_scripts_parse_and_are_executable(script):
    path = DEPLOYMENTS / script
    assert os.access(path, os.X_OK)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


def test_start_worker_rejects_an_unknown_kind():
    result = subprocess.run(["bash", str(DEPLOYMENTS / "start-worker.sh"), "tpu"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown worker kind" in result.stderr


def test_gpu_template_renders_a_job_with_the_deployment_variables(prefect_yaml):
    """Render the template as a worker does: defaults, then the deployment's job variables."""
    from prefect.utilities.templating import apply_values

    data = json.loads((DEPLOYMENTS / "gpu-pool-kubernetes.json").read_text())
    values = {k: v["default"] for k, v in data["variables"]["properties"].items() if "default" in v}
    train = next(d for d in prefect_yaml["deployments"] if d["entrypoint"].startswith("flows/train.py"))
    values.update(train["work_pool"]["job_variables"])
    job = apply_values(data["job_configuration"], values, remove_notset=True)["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == train["work_pool"]["job_variables"]["image"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == train["work_pool"]["job_variables"]["gpu_count"]
    assert "cpu" not in container["resources"]["limits"]  # unset limits are dropped, not sent empty
    assert pod["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
