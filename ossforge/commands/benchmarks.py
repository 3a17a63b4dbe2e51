"""`ossforge benchmarks fetch`: download the decontamination benchmarks once, for offline runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tasks.core.errors import UserError

benchmarks_app = typer.Typer(help="Benchmark texts for decontamination.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(benchmarks_app, name="benchmarks", short_help="Fetch decontamination benchmarks for offline use.")


@benchmarks_app.command("fetch", short_help="Download benchmark files once, for offline decontamination.")
def fetch(
    names: Optional[str] = typer.Option(None, "--benchmarks", help="comma-separated benchmark names (default: all)"),
    target: Optional[Path] = typer.Option(
        None, "--dir", help="where to write them (default ~/.cache/ossforge/benchmarks); give it to --benchmark-dir"
    ),
    hub_timeout: float = typer.Option(10.0, min=0.1, help="seconds to wait for the hub"),
) -> None:
    """Download benchmark files from the Hugging Face hub into DIR (online, once), so later runs
    check them offline with `--benchmark-dir DIR` or `OSSFORGE_BENCHMARK_DIR=DIR`."""
    from tasks.decontamination.benchmarks import ALL_BENCHMARKS
    from tasks.decontamination.fetch import DEFAULT_DIR, fetch_benchmarks

    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else list(ALL_BENCHMARKS)
    unknown = [n for n in wanted if n not in ALL_BENCHMARKS]
    if unknown:
        raise UserError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(ALL_BENCHMARKS)}")
    target = target or DEFAULT_DIR
    fetched, failed = fetch_benchmarks(wanted, target, hub_timeout)
    for name, how in fetched.items():
        typer.echo(f"{name}: {how}")
    if failed:
        reasons = sorted(set(failed.values()))
        raise UserError(
            f"could not fetch {', '.join(failed)} into {target}: {'; '.join(reasons)} "
            "(run this once on a machine that reaches huggingface.co, then copy the directory)"
        )
    typer.echo(f"all {len(fetched)} in {target}: pass --benchmark-dir {target} (or set OSSFORGE_BENCHMARK_DIR)")
