"""`ossforge decontaminate`: remove benchmark-contaminated rows from an existing dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ossforge.config_files import config_from_options


def register(app: typer.Typer) -> None:
    app.command(
        "decontaminate",
        short_help="Remove rows that contain benchmark problems.",
        help="Remove rows that contain benchmark problems (HumanEval, MBPP, GSM8K, ...) from a Parquet file, "
        "a directory of shards, or JSONL; write OUT/data/*.parquet, OUT/manifest.json and "
        "OUT/audit/decontaminate.parquet.",
    )(decontaminate)


def _names(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value is not None else None


def decontaminate(
    input: str = typer.Option(..., "--input", "-i", help="Parquet file, directory of shards, glob, or JSONL file"),
    output: Path = typer.Option(..., "--output", "-o", help="dataset directory to write"),
    benchmarks: Optional[str] = typer.Option(None, help="comma-separated benchmark names (default: all registered)"),
    benchmark_dir: Optional[Path] = typer.Option(
        None, envvar="OSSFORGE_BENCHMARK_DIR", help="directory with benchmark files, tried before the hub"
    ),
    matchers: Optional[str] = typer.Option(None, help="comma-separated: substring,ngram,minhash (default: all)"),
    hub: bool = typer.Option(True, "--hub/--no-hub", help="try the Hugging Face hub for benchmarks not found locally"),
    require_all: bool = typer.Option(False, "--require-all", help="fail if any requested benchmark cannot be loaded"),
    require_benchmarks: Optional[str] = typer.Option(
        None, help="comma-separated benchmarks (or 'all') that must be checked: a missing one is an error"
    ),
    ngram_n: Optional[int] = typer.Option(None, help="words per n-gram (default 13)"),
    minhash_threshold: Optional[float] = typer.Option(None, help="Jaccard that flags a near match (default 0.5)"),
    whitelist: Optional[list[str]] = typer.Option(None, help="benchmark string never to match (repeatable)"),
    workers: Optional[int] = typer.Option(None, min=0, help="matcher processes (default: one per core)"),
    shard_size: int = typer.Option(10_000, min=1, help="max rows per output shard"),
    prefect: bool = typer.Option(False, "--prefect", help="run as the Prefect flow `decontaminate`"),
) -> None:
    from tasks.decontamination.decontaminate import DecontaminationConfig

    settings = {
        "benchmarks": _names(benchmarks),
        "benchmark_dir": str(benchmark_dir) if benchmark_dir else None,
        "matchers": _names(matchers),
        "allow_hub": hub,
        "require_all": require_all,
        "require_benchmarks": _names(require_benchmarks),
        "ngram_n": ngram_n,
        "minhash_threshold": minhash_threshold,
        "whitelist": whitelist or None,
        "workers": workers,
    }
    cfg = config_from_options(DecontaminationConfig, settings)

    if prefect:
        from flows.decontaminate import DecontaminateFlowConfig, decontaminate_flow

        manifest = decontaminate_flow(
            DecontaminateFlowConfig(input=input, output=str(output), shard_size=shard_size, decontamination=cfg)
        )
    else:
        from tasks.decontamination.dataset import decontaminate_dataset

        manifest = decontaminate_dataset(input, output, cfg, shard_size=shard_size)
    stage = manifest["stages"]["decontaminate"]
    dropped = ", ".join(f"{k} {v}" for k, v in stage["dropped"].items()) or "none"
    typer.echo(f"kept {stage['out']} of {stage['in']} rows (dropped: {dropped}) -> {output}")
    loaded = stage.get("extra", {}).get("loaded", {})
    typer.echo("checked: " + (", ".join(f"{k} ({v['items']})" for k, v in loaded.items()) or "nothing"))
    missing = stage.get("extra", {}).get("missing_reasons", {})
    if missing:
        # A check that could not load every benchmark is partial, and says so (manifest status too).
        typer.echo(f"decontamination partial: NOT checked (could not load): {', '.join(missing)}; "
                   "see manifest.json for why (`ossforge benchmarks fetch` or --benchmark-dir)", err=True)
    if manifest.get("ids_added"):
        typer.echo("note: the input had no 'id' column; added stable ids (sha256 of row number and text)")
