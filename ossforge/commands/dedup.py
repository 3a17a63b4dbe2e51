"""`ossforge dedup`: near-duplicate removal (MinHash LSH) for an existing dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ossforge.config_files import config_from_options


def register(app: typer.Typer) -> None:
    app.command(
        "dedup",
        short_help="Remove near-duplicate rows from Parquet or JSONL.",
        help="Remove near-duplicates from a Parquet file, a directory of shards, or JSONL; "
        "write OUT/data/*.parquet, OUT/manifest.json and OUT/audit/near_dedup.parquet.",
    )(dedup)


def dedup(
    input: str = typer.Option(..., "--input", "-i", help="Parquet file, directory of shards, glob, or JSONL file"),
    output: Path = typer.Option(..., "--output", "-o", help="dataset directory to write"),
    threshold: Optional[float] = typer.Option(None, help="Jaccard similarity that makes a duplicate (default 0.7)"),
    num_perm: Optional[int] = typer.Option(None, help="MinHash permutations (default 128)"),
    ngram: Optional[int] = typer.Option(None, help="words per shingle (default 5)"),
    fields: Optional[str] = typer.Option(None, help="comma-separated columns compared (default problem,solution)"),
    canonicalize_identifiers: Optional[bool] = typer.Option(
        None, "--canonicalize-identifiers/--keep-identifiers", help="treat renamed identifiers in code as equal (default on)"
    ),
    verify_jaccard: Optional[bool] = typer.Option(
        None, "--verify-jaccard/--estimate-jaccard", help="check candidates by exact Jaccard (default) or the MinHash estimate"
    ),
    lsh_storage: Optional[str] = typer.Option(None, help="redis://host:port/db: shared datasketch MinHashLSH index"),
    index_dir: Optional[Path] = typer.Option(None, help="persisted signatures of published versions (read, then appended)"),
    version: Optional[str] = typer.Option(None, help="name of this run's signature file in --index-dir"),
    workers: Optional[int] = typer.Option(None, min=1, help="signature processes (default: CPU count)"),
    seed: Optional[int] = typer.Option(None, help="MinHash permutation seed (default 1)"),
    shard_size: int = typer.Option(10_000, min=1, help="max rows per output shard"),
    prefect: bool = typer.Option(False, "--prefect", help="run as the Prefect flow `near-dedup` (needs PREFECT_API_URL)"),
) -> None:
    from tasks.dedup.near import NearDedupConfig

    settings = {
        "threshold": threshold,
        "num_perm": num_perm,
        "ngram": ngram,
        "fields": tuple(f.strip() for f in fields.split(",") if f.strip()) if fields is not None else None,
        "canonicalize_identifiers": canonicalize_identifiers,
        "verify_jaccard": verify_jaccard,
        "lsh_storage": lsh_storage,
        "index_dir": str(index_dir) if index_dir else None,
        "version": version,
        "workers": workers,
        "seed": seed,
    }
    cfg = config_from_options(NearDedupConfig, settings)

    if prefect:
        from flows.dedup import DedupFlowConfig, dedup_flow

        manifest = dedup_flow(DedupFlowConfig(input=input, output=str(output), shard_size=shard_size, near_dedup=cfg))
    else:
        from tasks.dedup.dataset import dedup_dataset

        manifest = dedup_dataset(input, output, cfg, shard_size=shard_size)
    stage = manifest["stages"]["near_dedup"]
    dropped = ", ".join(f"{k} {v}" for k, v in stage["dropped"].items()) or "none"
    typer.echo(f"kept {stage['out']} of {stage['in']} rows (dropped: {dropped}) -> {output}")
    if manifest.get("ids_added"):
        typer.echo("note: the input had no 'id' column; added stable ids (sha256 of row number and text)")
