"""`ossforge evaluate`: pass@1 of a model — or of a samples file made anywhere — on HumanEval,
HumanEval+ and MBPP+ (the `evaluate` flow)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ossforge.config_files import config_from_options


def register(app: typer.Typer) -> None:
    app.command(
        "evaluate",
        short_help="Score a model or samples on code benchmarks in a sandbox.",
        help="Generate one greedy completion per benchmark problem with a model (--model), or take them from a "
        "samples file made anywhere (--samples, EvalPlus format: task_id plus solution or completion), run them in "
        "the sandbox, and write DIR/results.parquet and DIR/summary.json (pass@1, base and plus).",
    )(evaluate)


def evaluate(
    model: Optional[str] = typer.Option(None, "--model", help="model directory (save_pretrained), hub id when online, or 'tiny'"),
    samples: Optional[Path] = typer.Option(
        None, "--samples", help="JSONL of completions made elsewhere: task_id plus solution or completion (EvalPlus); no --model"
    ),
    benchmarks: str = typer.Option("humaneval,humaneval+,mbpp+", "--benchmarks", help="comma-separated"),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="where results.parquet and summary.json go"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="first N problems of each benchmark"),
    benchmark_dir: Optional[Path] = typer.Option(
        None, "--benchmark-dir", help="directory holding HumanEvalPlus.jsonl.gz / MbppPlus.jsonl.gz (EvalPlus releases)"
    ),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="expected-output cache (default ~/.cache/ossforge/eval)"),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="default 512"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="prompts per generate() call (default 8)"),
    backend: Optional[str] = typer.Option(None, "--backend", help="auto (vLLM on a GPU when installed), transformers, vllm"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="sandbox processes at once (default: CPU count)"),
    memory_mb: Optional[int] = typer.Option(None, "--memory-mb", help="address-space limit per sample (default 4096)"),
    accept_weak_sandbox: bool = typer.Option(
        False, "--accept-weak-sandbox", help="without bubblewrap, score behind Python-level guards only (isolation=weak)"
    ),
) -> None:
    from flows.evaluate import EvaluateConfig, evaluate_flow
    from tasks.core.errors import UserError

    if (model is None) == (samples is None):
        raise UserError("give --model (generate completions) or --samples FILE (score completions made elsewhere), one of them")
    settings = {
        "model": model,
        "samples": str(samples) if samples else None,
        "accept_weak_sandbox": accept_weak_sandbox,
        "benchmarks": benchmarks,
        "output_dir": str(output_dir),
        "limit": limit,
        "benchmark_dir": str(benchmark_dir) if benchmark_dir else None,
        "cache_dir": str(cache_dir) if cache_dir else None,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "backend": backend,
        "workers": workers,
        "memory_mb": memory_mb,
    }
    cfg = config_from_options(EvaluateConfig, settings)

    # Fail fast, before any flow run or model load, on what the user can fix.
    from flows.evaluate import cache_dir_for, checked_samples, resolve_model
    from tasks.evaluation.benchmarks import find_data_file
    from tasks.sandbox.isolation import require_isolation

    for name in cfg.benchmarks:
        find_data_file(name, cfg.benchmark_dir, cache_dir_for(cfg))
    if cfg.samples:
        checked_samples(cfg)
    elif cfg.model != "tiny":
        resolve_model(cfg)
    require_isolation(cfg.accept_weak_sandbox)  # no bubblewrap and no --accept-weak-sandbox: one line, exit 2

    summary = evaluate_flow(cfg)
    for name, entry in summary["benchmarks"].items():
        plus = f"  plus {entry['plus_pass@1'] * 100:5.1f}" if "plus_pass@1" in entry else ""
        typer.echo(f"{name:12s} pass@1 {entry['pass@1'] * 100:5.1f}{plus}  ({entry['problems']} problems)")
    if summary["isolation"] == "weak":
        typer.echo("isolation: WEAK (no bubblewrap; Python-level guards only)")
    typer.echo(f"-> {output_dir / 'summary.json'}, {output_dir / 'results.parquet'}")
