"""The `decontaminate` flow: benchmark decontamination of an existing dataset under Prefect.

Orchestration only: the work is tasks/decontamination/dataset.py. One task run does the whole
dataset (the matchers use worker processes inside it); the flow publishes the markdown
report (benchmarks checked, missing ones, hits per benchmark and matcher) as an artifact.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from tasks.decontamination.decontaminate import DecontaminationConfig
from tasks.decontamination.dataset import decontaminate_dataset, summary_markdown

SUMMARY_KEY = "decontamination-summary"


class DecontaminateFlowConfig(BaseModel):
    """The flow's one parameter: what to decontaminate, where to write it, and against what."""

    input: str = Field(description="Parquet file, directory of shards, glob, or JSONL file")
    output: str = Field(description="dataset directory to write")
    shard_size: int = Field(10_000, ge=1, description="max rows per output shard")
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)


@task(name="decontaminate-dataset")
def decontaminate_dataset_task(config: DecontaminateFlowConfig) -> dict:
    return decontaminate_dataset(config.input, config.output, config.decontamination, shard_size=config.shard_size)


@flow(name="decontaminate")
def decontaminate_flow(config: DecontaminateFlowConfig) -> dict:
    """Decontaminate config.input into config.output; returns the manifest."""
    logger = get_run_logger()
    manifest = decontaminate_dataset_task(config)
    stage = manifest["stages"]["decontaminate"]
    logger.info("kept %d of %d rows; dropped %s", stage["out"], stage["in"], stage["dropped"])
    if manifest["missing"]:
        logger.warning("benchmarks NOT checked (could not be loaded): %s", ", ".join(manifest["missing"]))
    create_markdown_artifact(summary_markdown(manifest), key=SUMMARY_KEY, description="Decontamination report")
    return manifest
