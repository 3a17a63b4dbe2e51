"""The training flow: check a dataset version, launch ZeRO-3 fine-tuning, publish the curve.

Orchestration only. The training itself is `training/sft.py`, started as a subprocess
under `torchrun` (one node) or the `deepspeed` launcher (a hostfile of several nodes), so
the GPU processes never share an interpreter with Prefect (training/launcher.py). The flow

1. verifies each dataset version (manifest, shard checksums, row counts, text columns);
2. resolves the model (`tiny` is built locally, before any rank starts);
3. runs the launcher in its own process group, streaming its output into the Prefect
   logs; a cancelled or killed flow run takes the whole group down with it; a failed
   attempt is retried (task retries) and resumes from the latest checkpoint;
4. publishes the loss curve (PNG, also embedded in a markdown artifact), a table of the
   logged metrics, and the final figures; optionally evaluates the final model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from tasks.core.config import operational
from tasks.core.errors import UserError
from training import launcher
from training.dataset_check import resolve_datasets, verify_dataset
from training.launcher import LaunchFailed, run_launcher  # noqa: F401 (the CLI and tests use them from here)
from training.metrics import loss_curve, plot_loss_curve, read_metrics
from training.recipe import TrainRecipe
from training.report import curve_markdown, final_figures, metrics_rows, summary_markdown

SUMMARY_KEY = "training-summary"
CURVE_KEY = "training-loss-curve"
METRICS_KEY = "training-metrics"


class TrainConfig(TrainRecipe):
    """The training recipe (training/recipe.py: data, model, hyperparameters, defaults, help)
    plus where and how the flow launches it. The CLI, prefect.yaml and the UI form fill it."""

    # where it runs
    nproc: int = operational(1, ge=1, description="processes (GPUs) per node")
    hostfile: Optional[str] = operational(None, description="DeepSpeed hostfile for several nodes ('host slots=N')")
    retries: int = operational(1, ge=0, description="relaunches after a failed attempt (each resumes)")
    timeout_s: Optional[float] = operational(None, gt=0, description="kill the launch after this many seconds")
    verify_checksums: bool = operational(True, description="check every shard's sha256 before launching")
    extra_args: list[str] = Field(default_factory=list, description="appended to training/sft.py's command line")
    # evaluation of the final model (flows/evaluate.py)
    run_evaluation: bool = Field(False, description="evaluate the final model (flows/evaluate.py) after training")
    eval_benchmarks: list[str] = Field(
        default_factory=lambda: ["humaneval", "humaneval+", "mbpp+"], description="benchmarks of that evaluation"
    )
    eval_limit: Optional[int] = Field(None, ge=1, description="first N problems per benchmark (smoke runs)")
    eval_options: dict = Field(default_factory=dict, description="further EvaluateConfig fields")


def resolve_model(cfg: TrainConfig) -> str:
    if cfg.continue_from:
        if not Path(cfg.continue_from).is_dir():
            raise UserError(f"--continue-from {cfg.continue_from}: no such model directory")
        return cfg.model
    if cfg.model == "tiny":
        from training.tiny import build_tiny_model

        return str(build_tiny_model(Path(cfg.output_dir) / "tiny-model"))
    looks_local = cfg.model.startswith((".", "/", "~")) or cfg.model.count("/") != 1
    if looks_local and not Path(cfg.model).expanduser().is_dir():
        raise UserError(f"model {cfg.model} not found (a local directory, a hub id 'org/name', or 'tiny')")
    return str(Path(cfg.model).expanduser()) if looks_local else cfg.model


def launch_command(cfg: TrainConfig, model_path: str) -> list[str]:
    """The launcher's command line: the recipe with the model resolved to a path."""
    recipe = cfg.recipe().model_copy(update={"model": model_path})
    return launcher.launch_command(recipe, cfg.nproc, cfg.hostfile, cfg.extra_args)


# --- tasks and flow ------------------------------------------------------------------------


@task(name="verify-dataset", cache_policy=NO_CACHE)
def verify_dataset_task(path: str, cfg: TrainConfig) -> dict:
    info = verify_dataset(path, cfg.instruction_column, cfg.response_column, checksums=cfg.verify_checksums)
    get_run_logger().info(f"dataset {path}: {info['rows']} rows in {info['files']} shards, checksums verified")
    return info


@task(name="fine-tune", cache_policy=NO_CACHE)
def fine_tune(cfg: TrainConfig, model_path: str) -> dict:
    """One launch of the launcher; a retry of this task resumes from the latest checkpoint."""
    log = get_run_logger()
    cmd = launch_command(cfg, model_path)
    log.info("launching: " + " ".join(cmd))
    env = launcher.launch_environment(cfg.cpu)
    records = run_launcher(cmd, env, log, Path(cfg.output_dir) / "launcher.pid", timeout_s=cfg.timeout_s)
    summary_path = Path(cfg.output_dir) / "summary.json"
    if not summary_path.exists():
        raise LaunchFailed("training exited without writing summary.json")
    summary = json.loads(summary_path.read_text())
    summary["streamed_records"] = len(records)
    return summary


@task(name="publish-training-artifacts", cache_policy=NO_CACHE)
def publish_artifacts(cfg: TrainConfig, summary: dict, datasets: list[dict]) -> dict:
    out = Path(cfg.output_dir)
    records = read_metrics(out / "metrics.jsonl")
    points = loss_curve(records)
    png = plot_loss_curve(records, out / "loss_curve.png", title=f"{Path(cfg.model).name} on {len(datasets)} dataset(s)")
    create_markdown_artifact(key=CURVE_KEY, markdown=curve_markdown(png, points, summary),
                             description="loss against optimizer step")  # fmt: skip
    if points:
        create_table_artifact(key=METRICS_KEY, table=metrics_rows(points), description="metrics per logging step")
    final = final_figures(points, summary, png)
    create_markdown_artifact(key=SUMMARY_KEY, markdown=summary_markdown(final, datasets),
                             description="final training figures")  # fmt: skip
    return final


@flow(name="train", log_prints=True)
def train_flow(cfg: TrainConfig) -> dict:
    """Fine-tune a code model on dataset versions with DeepSpeed ZeRO-3."""
    log = get_run_logger()
    # A versioned root, `latest` or a version stands for its whole lineage (a version holds only its new rows).
    resolved = resolve_datasets(cfg.datasets)
    cfg = cfg.model_copy(update={"datasets": [d for _, d in resolved]})
    datasets = [{**verify_dataset_task(path, cfg), "version": label} for label, path in resolved]
    log.info("training data: " + ", ".join(f"{d['version']} {d['rows']} rows" for d in datasets)
             + f" = {sum(d['rows'] for d in datasets)} rows")
    model_path = resolve_model(cfg)
    log.info(f"model: {model_path}" + (f" (continuing from {cfg.continue_from})" if cfg.continue_from else ""))
    summary = fine_tune.with_options(retries=cfg.retries, retry_delay_seconds=5)(cfg, model_path)
    final = publish_artifacts(cfg, summary, datasets)
    result = {"final_model": summary.get("final_model"), "metrics": final, "datasets": datasets}
    if cfg.run_evaluation:
        from flows.evaluate import EvaluateConfig, evaluate_flow  # lazy: evaluation is optional

        eval_cfg = EvaluateConfig(
            model=summary["final_model"],
            output_dir=str(Path(cfg.output_dir) / "eval"),
            benchmarks=cfg.eval_benchmarks,
            limit=cfg.eval_limit,
            **cfg.eval_options,
        )
        result["evaluation"] = evaluate_flow(eval_cfg)
    return result
