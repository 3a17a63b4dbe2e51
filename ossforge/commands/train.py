"""`ossforge train`: fine-tune a code model on dataset versions (the Prefect training flow)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ossforge.config_files import build_config
from tasks.core.errors import UserError


def register(app: typer.Typer) -> None:
    app.command(
        "train",
        short_help="Fine-tune a code model on dataset versions (ZeRO-3).",
        help="Fine-tune a causal code model on dataset versions with DeepSpeed ZeRO-3 (the paper's recipe by default).",
    )(train)


def precheck(cfg) -> None:
    """Cheap checks of user input before a flow run starts (the flow verifies checksums)."""
    from training.dataset_check import resolve_datasets

    for _, dataset in resolve_datasets(cfg.datasets):  # a versioned root or `latest`: every version of it
        if not (Path(dataset) / "manifest.json").is_file():
            raise UserError(f"dataset {dataset}: no manifest.json (expected a directory written by `ossforge refresh`)")
    if cfg.hostfile and not Path(cfg.hostfile).is_file():
        raise UserError(f"hostfile {cfg.hostfile} not found")
    if cfg.continue_from and not (Path(cfg.continue_from) / "config.json").is_file():
        raise UserError(f"--continue-from {cfg.continue_from}: not a saved model directory")
    from flows.train import resolve_model

    if cfg.model != "tiny":
        resolve_model(cfg)  # raises UserError for a missing local path


def train(
    dataset: list[str] = typer.Option(..., "--dataset", help="dataset directory, versioned root or ROOT/latest (its whole lineage); repeat to mix datasets"),
    model: Optional[str] = typer.Option(None, help="hub id or local path of the base model, or 'tiny' (default)"),
    output_dir: Optional[Path] = typer.Option(None, help="run directory: checkpoints/, final/, metrics.jsonl"),
    nproc: Optional[int] = typer.Option(None, min=1, help="processes (GPUs) per node (default 1)"),
    max_steps: Optional[int] = typer.Option(None, min=1, help="stop after this many optimizer steps"),
    packing: Optional[bool] = typer.Option(None, "--packing/--no-packing", help="padding-free packing"),
    continue_from: Optional[str] = typer.Option(None, help="start from this trained model (two-stage 'S' recipe)"),
    epochs: Optional[float] = typer.Option(None, help="epochs (default 2)"),
    learning_rate: Optional[float] = typer.Option(None, help="peak learning rate (default 5e-5)"),
    global_batch_size: Optional[int] = typer.Option(None, min=1, help="examples per optimizer step (default 512)"),
    micro_batch_size: Optional[int] = typer.Option(None, min=1, help="examples per GPU per forward pass (default 8)"),
    max_length: Optional[int] = typer.Option(None, min=16, help="tokens per example, longer ones truncated (1216)"),
    save_steps: Optional[int] = typer.Option(None, min=0, help="checkpoint every N steps (default 500; 0: none)"),
    offload: Optional[str] = typer.Option(None, help="ZeRO-3 offload to CPU: none | optimizer | param | both"),
    hostfile: Optional[str] = typer.Option(None, help="DeepSpeed hostfile: train on several nodes"),
    cpu: Optional[bool] = typer.Option(None, "--cpu/--gpu", help="CPU ranks over gloo (default: CPU when no GPU)"),
    retries: Optional[int] = typer.Option(None, min=0, help="relaunches after a failure, each resuming (default 1)"),
    evaluate: bool = typer.Option(False, "--evaluate", help="evaluate the final model (HumanEval(+), MBPP+)"),
    eval_limit: Optional[int] = typer.Option(None, min=1, help="first N problems per benchmark when evaluating"),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file with TrainConfig fields"),
) -> None:
    if cpu is None and hostfile is None:
        import torch

        cpu = None if torch.cuda.is_available() else True
    from flows.train import TrainConfig

    cfg = build_config(
        TrainConfig,
        config,
        {
            "datasets": dataset,
            "model": model,
            "output_dir": str(output_dir) if output_dir else None,
            "nproc": nproc,
            "max_steps": max_steps,
            "packing": packing,
            "continue_from": continue_from,
            "epochs": epochs,
            "learning_rate": learning_rate,
            "global_batch_size": global_batch_size,
            "micro_batch_size": micro_batch_size,
            "max_length": max_length,
            "save_steps": save_steps,
            "offload": offload,
            "hostfile": hostfile,
            "cpu": cpu,
            "retries": retries,
            "run_evaluation": evaluate or None,
            "eval_limit": eval_limit,
        }
        | ({} if output_dir or config else {"output_dir": "out/train"}),
    )
    precheck(cfg)

    from flows.train import LaunchFailed, train_flow

    try:
        result = train_flow(cfg)
    except LaunchFailed as exc:
        raise UserError(f"training failed: {exc} (the launcher's output is in the log above)") from None
    metrics = result["metrics"]
    losses = ""
    if metrics.get("first_loss") is not None and metrics.get("final_loss") is not None:
        losses = f", loss {metrics['first_loss']:.4f} -> {metrics['final_loss']:.4f}"
    typer.echo(f"trained {metrics['global_step']} steps{losses}; model: {result['final_model']}")
    typer.echo("data: " + ", ".join(f"{d['version']} {d['rows']} rows" for d in result["datasets"]))
