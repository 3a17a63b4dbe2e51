"""The `near-dedup` flow: near-duplicate removal of an existing dataset under Prefect.

Orchestration only: the work is tasks/dedup/dataset.py. One task run does the whole
dataset (signatures use worker processes inside it); the flow publishes a summary artifact.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from tasks.dedup.dataset import dedup_dataset, summary_markdown
from tasks.dedup.near import NearDedupConfig

SUMMARY_KEY = "near-dedup-summary"


class DedupFlowConfig(BaseModel):
    """The flow's one parameter: what to dedup, where to write it, and how near is near."""

    input: str = Field(description="Parquet file, directory of shards, glob, or JSONL file")
    output: str = Field(description="dataset directory to write")
    shard_size: int = Field(10_000, ge=1, description="max rows per output shard")
    near_dedup: NearDedupConfig = Field(default_factory=NearDedupConfig)


@task(name="near-dedup-dataset")
def dedup_dataset_task(config: DedupFlowConfig) -> dict:
    return dedup_dataset(config.input, config.output, config.near_dedup, shard_size=config.shard_size)


@flow(name="near-dedup")
def dedup_flow(config: DedupFlowConfig) -> dict:
    """Near-dedup config.input into config.output; returns the manifest."""
    logger = get_run_logger()
    manifest = dedup_dataset_task(config)
    stage = manifest["stages"]["near_dedup"]
    logger.info("kept %d of %d rows; dropped %s", stage["out"], stage["in"], stage["dropped"])
    create_markdown_artifact(summary_markdown(manifest), key=SUMMARY_KEY, description="Near-dedup summary")
    return manifest
