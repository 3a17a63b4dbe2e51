"""Publishing as Prefect task runs: `publish` (shards, audits, manifest, card) and `report`
(the run's artifacts)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.core.schema import DATASET_SCHEMA
from tasks.core.sources import read_files
from tasks.dedup.near import with_singleton_clusters
from tasks.publish.artifacts import render_refresh_artifacts
from tasks.publish.dataset_card import render_dataset_card
from tasks.publish.publish import publish_dataset


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(
    out_dir: Path, files: list[str], shard_size: int, manifest: dict, audits: dict[str, pa.Table],
    near_deduped: bool = True,
) -> dict:
    """Shards under data/, audits under audit/, manifest.json last, then the dataset card.
    Without near-dedup every row is published as its own cluster of one."""
    tables = read_files(files)
    if not near_deduped:
        tables = (with_singleton_clusters(t) for t in tables)
    # The card is part of the generation swapped in: it always describes the rows beside it.
    manifest = publish_dataset(out_dir, tables, shard_size, manifest, audits, schema=DATASET_SCHEMA,
                               card=render_dataset_card)
    get_run_logger().info("published %d rows in %d files to %s", manifest["rows"], len(manifest["files"]), out_dir)
    return manifest


@task(name="report", cache_policy=NO_CACHE)
def report_task(manifest: dict, summaries: list[dict], out_dir: Path, report: bool) -> dict:
    """Render the per-shard table, per-stage summary, decontamination report and dataset report
    (the flow creates them as artifacts: see create_refresh_artifacts)."""
    rendered = render_refresh_artifacts(manifest, summaries, out_dir, report)
    for name, stage in manifest["stages"].items():
        get_run_logger().info("%s: %d in, %d out, dropped %s", name, stage["in"], stage["out"], stage["dropped"])
    return rendered
