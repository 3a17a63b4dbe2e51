"""`ossforge validate`: run each row's solution against its tests in the sandbox, keep what passes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ossforge.config_files import config_from_options


def register(app: typer.Typer) -> None:
    app.command(
        "validate",
        short_help="Execution-check solution/tests pairs from Parquet or JSONL.",
        help="Run each row's solution against its own tests in the bubblewrap sandbox; write the rows "
        "that pass to OUT/data/*.parquet (every input column kept, plus validation_status and "
        "validation_seconds), the failures with their reasons to OUT/audit/validate.parquet, and "
        "OUT/manifest.json. Rows need `solution` and `tests`; `lang` and `id` are optional.",
    )(validate)


def validate(
    input: str = typer.Option(..., "--input", "-i", help="Parquet file, directory of shards, glob, or JSONL file"),
    output: Path = typer.Option(..., "--output", "-o", help="dataset directory to write"),
    seconds: Optional[float] = typer.Option(None, help="wall-clock budget per pair (default 10)"),
    memory_mb: Optional[int] = typer.Option(None, "--memory-mb", help="address-space limit per run (default 1024)"),
    workers: Optional[int] = typer.Option(None, min=1, help="sandboxes at once (default: one per core)"),
    unverified: Optional[str] = typer.Option(
        None, help="rows in a language with no runner here: keep (marked unverified, the default) or drop"
    ),
    accept_weak_sandbox: bool = typer.Option(
        False, "--accept-weak-sandbox", help="run without bubblewrap, behind Python-level guards only (marked weak)"
    ),
    shard_size: int = typer.Option(10_000, min=1, help="max rows per output shard"),
    prefect: bool = typer.Option(False, "--prefect", help="run as the Prefect flow `validate` (needs PREFECT_API_URL)"),
) -> None:
    from tasks.validation.dataset import summary_line
    from tasks.validation.validate import ValidationConfig

    settings = {"seconds": seconds, "memory_mb": memory_mb, "workers": workers, "unverified": unverified,
                "accept_weak_sandbox": accept_weak_sandbox or None}
    cfg = config_from_options(ValidationConfig, settings)
    if prefect:
        from flows.validate import ValidateFlowConfig, validate_flow

        manifest = validate_flow(ValidateFlowConfig(input=input, output=str(output), shard_size=shard_size, validation=cfg))
    else:
        from tasks.validation.dataset import validate_dataset

        manifest = validate_dataset(input, output, cfg, shard_size=shard_size)
    typer.echo(f"{summary_line(manifest)} -> {output}")
    if manifest.get("ids_added"):
        typer.echo("note: the input had no 'id' column; added stable ids (sha256 of row number, solution and tests)")
