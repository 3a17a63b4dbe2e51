"""The `validate` flow: execution-check an existing dataset under Prefect.

Orchestration only: the work is tasks/validation/dataset.py. One task run does the whole
dataset (the sandboxes run one per core inside it); the flow publishes a summary artifact
(counts, pass rate per language, the isolation used).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from tasks.validation.dataset import summary_line, summary_markdown, validate_dataset
from tasks.validation.validate import ValidationConfig

SUMMARY_KEY = "validation-summary"


class ValidateFlowConfig(BaseModel):
    """The flow's one parameter: what to validate, where to write it, and the sandbox limits."""

    input: str = Field(description="Parquet file, directory of shards, glob, or JSONL file with solution and tests")
    output: str = Field(description="dataset directory to write")
    shard_size: int = Field(10_000, ge=1, description="max rows per output shard")
    validation: ValidationConfig = Field(default_factory=ValidationConfig)


@task(name="validate-dataset")
def validate_dataset_task(config: ValidateFlowConfig) -> dict:
    return validate_dataset(config.input, config.output, config.validation, shard_size=config.shard_size)


@flow(name="validate")
def validate_flow(config: ValidateFlowConfig) -> dict:
    """Validate config.input into config.output; returns the manifest."""
    logger = get_run_logger()
    manifest = validate_dataset_task(config)
    logger.info(summary_line(manifest))
    if manifest["stages"]["validate"].get("extra", {}).get("isolation") == "weak":
        logger.warning("validation ran WITHOUT bubblewrap (Python-level guards only)")
    create_markdown_artifact(summary_markdown(manifest), key=SUMMARY_KEY, description="Validation summary")
    return manifest
