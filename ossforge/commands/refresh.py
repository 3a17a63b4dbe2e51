"""`ossforge refresh`: run the OSS-Instruct refresh flow from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ossforge.config_files import build_config
from tasks.core.errors import UserError
from tasks.teacher.local_defaults import LOCAL_TEACHER_MODEL, LOCAL_TEACHER_URL


def register(app: typer.Typer) -> None:
    app.command(
        "refresh",
        short_help="Sample seeds, ask the teacher, clean, write Parquet shards.",
        help="Sample seeds, query the teacher, clean, and write Parquet shards.",
    )(refresh)


def _parse_quotas(quota: list[str]) -> dict[str, int] | None:
    if not quota:
        return None
    quotas = {}
    for item in quota:
        lang, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise UserError(f"--quota expects LANG=COUNT, got {item!r}")
        quotas[lang.strip().lower()] = int(count)
    return quotas


def _local_teacher_defaults(data: dict) -> None:
    """With no teacher given anywhere, the embedded local one (`ossforge teacher serve`)."""
    teacher = data.setdefault("teacher", {})
    teacher.setdefault("base_url", LOCAL_TEACHER_URL)
    teacher.setdefault("model", LOCAL_TEACHER_MODEL)
    if teacher["base_url"] == LOCAL_TEACHER_URL:  # llama.cpp takes its JSON schema as json_object
        teacher.setdefault("json_response_format", "json_object")
    data.setdefault("seeds", {}).setdefault("num_seeds", 100)


def refresh(
    seed_source: str = typer.Option("stdlib", help="stdlib | DIR | GLOB | FILE.jsonl/.parquet | hf:DATASET_ID"),
    num_seeds: Optional[int] = typer.Option(None, min=1, help="seeds to sample (default 100)"),
    teacher_base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1"),
    teacher_model: Optional[str] = typer.Option(None, help="model name the teacher serves"),
    concurrency: Optional[int] = typer.Option(None, min=1, help="teacher requests in flight at once"),
    output_dir: Optional[Path] = typer.Option(None, help="dataset directory (default out/oss-instruct)"),
    seed: Optional[int] = typer.Option(None, help="random seed for snippet sampling (default 976)"),
    shard_size: Optional[int] = typer.Option(None, min=1, help="max rows per Parquet shard"),
    generation_shard_size: Optional[int] = typer.Option(
        None, min=1, help="seeds per generation shard, the unit cleaned as it lands (default 500; smaller: a shorter "
        "tail after the last reply when validation is the slow stage)"
    ),
    output_format: Optional[str] = typer.Option(
        None, help="sections (the paper's) | json | sections_tests | json_tests (also ask for tests, to validate)"
    ),
    json_response_format: Optional[str] = typer.Option(
        None, help="json mode's response_format: json_schema (OpenAI, vLLM) | json_object (llama.cpp) | none"
    ),
    api_key_env: Optional[str] = typer.Option(None, help="name of the env var holding the API key"),
    api_key_secret_block: Optional[str] = typer.Option(None, help="Prefect Secret block holding the API key"),
    temperature: Optional[float] = typer.Option(None, help="teacher temperature (paper: 0)"),
    top_p: Optional[float] = typer.Option(None),
    rpm: Optional[int] = typer.Option(None, help="requests-per-minute budget"),
    tpm: Optional[int] = typer.Option(None, help="tokens-per-minute budget (prompt + max_tokens)"),
    max_cost: Optional[float] = typer.Option(None, help="stop sending when the run has cost this many USD"),
    max_tokens: Optional[int] = typer.Option(None, help="stop sending when the run has used this many tokens"),
    price_in: Optional[float] = typer.Option(None, min=0, help="teacher's USD per 1M prompt tokens (default: built-in table)"),
    price_out: Optional[float] = typer.Option(None, min=0, help="teacher's USD per 1M completion tokens"),
    cache_scope: Optional[str] = typer.Option(
        None, help="share cached replies between endpoints serving the same model (replicas) under this name"
    ),
    context_size: Optional[int] = typer.Option(None, help="teacher context window, for max_tokens"),
    max_reply_tokens: Optional[int] = typer.Option(None, help="cap on max_tokens per request (paper: 2500)"),
    language: list[str] = typer.Option([], help="keep only these languages (repeatable)"),
    content_column: Optional[str] = typer.Option(None, help="JSONL/Parquet/hub column holding the code"),
    hf_data_dir: Optional[str] = typer.Option(None, help="hub dataset sub-directory, e.g. python"),
    hf_split: Optional[str] = typer.Option(None, help="hub dataset split (default train)"),
    seed_license: Optional[str] = typer.Option(None, help="licence recorded for sources without a licence column"),
    quota: list[str] = typer.Option([], help="per-language seed quota LANG=COUNT (repeatable)"),
    validate: bool = typer.Option(True, help="run each solution against its tests in the sandbox (*_tests formats)"),
    accept_weak_sandbox: bool = typer.Option(
        False, help="validate without bubblewrap, behind Python-level guards only (outputs marked weak)"
    ),
    repair: bool = typer.Option(
        False, help="send pairs that failed their tests back to the teacher once, with the error (validated again)"
    ),
    near_dedup: bool = typer.Option(True, help="MinHash near-duplicate removal"),
    decontaminate: bool = typer.Option(True, help="benchmark decontamination"),
    benchmark_dir: Optional[Path] = typer.Option(None, help="directory with benchmark files for decontamination"),
    require_benchmarks: Optional[str] = typer.Option(
        None, help="comma-separated benchmarks (or 'all') decontamination must check: a missing one is an error"
    ),
    shard_deployment: Optional[str] = typer.Option(
        None, help="spread generation shards over a pool's workers via this deployment (e.g. generate-shard/cpu)"
    ),
    teacher_mode: Optional[str] = typer.Option(
        None, help="live (chat completions now) | batch (the provider's Batch API: half price, within 24 h)"
    ),
    batch_fallback: Optional[str] = typer.Option(
        None, help="batch requests that expired or failed twice: live (send them live) | none (drop, counted)"
    ),
    batch_discount: Optional[float] = typer.Option(
        None, min=0, max=1, help="fraction off the live price for batch requests (default 0.5)"
    ),
    dry_run: bool = typer.Option(
        False, help="forecast requests, tokens, cost and wall time (forecast.json); send nothing"
    ),
    config: Optional[Path] = typer.Option(None, help="JSON file with a RefreshConfig; options override it"),
    progress: bool = typer.Option(True, help="terminal progress bar"),
) -> None:
    quotas = _parse_quotas(quota)
    overrides = {
        "output_dir": str(output_dir) if output_dir else None,
        "shard_size": shard_size,
        "generation_shard_size": generation_shard_size,
        "shard_deployment": shard_deployment,
        "seeds.source": seed_source,
        "seeds.num_seeds": num_seeds if num_seeds is not None else (sum(quotas.values()) if quotas else None),
        "seeds.random_seed": seed,
        "seeds.languages": [lang.lower() for lang in language] or None,
        "seeds.quotas": quotas,
        "seeds.content_column": content_column,
        "seeds.hf_data_dir": hf_data_dir,
        "seeds.hf_split": hf_split,
        "seeds.license": seed_license,
        "teacher.base_url": teacher_base_url,
        "teacher.model": teacher_model,
        "teacher.concurrency": concurrency,
        "teacher.output_format": output_format,
        "teacher.json_response_format": json_response_format,
        "teacher.api_key_env": api_key_env,
        "teacher.api_key_secret_block": api_key_secret_block,
        "teacher.temperature": temperature,
        "teacher.top_p": top_p,
        "teacher.rpm": rpm,
        "teacher.tpm": tpm,
        "teacher.max_cost_usd": max_cost,
        "teacher.max_total_tokens": max_tokens,
        "teacher.price_per_mtok_in": price_in,
        "teacher.price_per_mtok_out": price_out,
        "teacher.cache_scope": cache_scope,
        "decontamination.require_benchmarks": [n.strip() for n in (require_benchmarks or "").split(",") if n.strip()],
        "teacher.context_size": context_size,
        "teacher.max_tokens_cap": max_reply_tokens,
        "teacher.teacher_mode": teacher_mode,
        "teacher.batch_fallback": batch_fallback,
        "teacher.batch_discount": batch_discount,
        "dry_run": dry_run or None,
    }
    from flows.refresh import RefreshConfig

    cfg = build_config(RefreshConfig, config, overrides, defaults=_local_teacher_defaults)
    cfg.teacher.check_priced()  # --max-cost with no known price: refuse before anything starts
    if not validate:
        cfg.validation = None
    else:
        if accept_weak_sandbox:
            cfg.validation.accept_weak_sandbox = True
        if repair:
            cfg.validation.repair = True
    if not near_dedup:
        cfg.near_dedup = None
    if not decontaminate:
        cfg.decontamination = None
    elif benchmark_dir is not None:
        cfg.decontamination.benchmark_dir = str(benchmark_dir)
    if require_benchmarks and cfg.decontamination is None:
        raise UserError("--require-benchmarks needs decontamination (drop --no-decontaminate)")

    from ossforge.runtime import ensure_prefect_api, run_refresh

    ui = ensure_prefect_api()
    from tasks.teacher.preflight import preflight

    # Fail on the user's mistakes before a flow run exists: one line, no Prefect traceback.
    check_seed_source(cfg.seeds)
    check_sandbox(cfg)  # no bubblewrap and no --accept-weak-sandbox: refuse now, not after the teacher ran
    if cfg.decontamination is not None:
        from tasks.decontamination.decontaminate import require_benchmarks as load_required

        load_required(cfg.decontamination)  # a required benchmark that cannot load: refuse before the teacher runs
    if cfg.dry_run:  # the forecast sends nothing, not even the preflight's probe
        _print_forecast(run_refresh(cfg, progress=progress), cfg.output_dir)
        return
    preflight(cfg.teacher)  # unreachable teacher, missing key, bad model
    manifest = run_refresh(cfg, progress=progress)
    _print_summary(manifest, ui)


def _print_forecast(forecast: dict, output_dir: str) -> None:
    from rich.console import Console

    from tasks.teacher.step import render_forecast

    console = Console(stderr=False)
    console.print(f"[bold]forecast[/bold]  (dry run: nothing sent)  {Path(output_dir).resolve() / 'forecast.json'}")
    console.print(render_forecast(forecast), markup=False, highlight=False)


def check_sandbox(cfg) -> None:
    """UserError when validation will run but the sandbox would refuse (tasks/sandbox/isolation.py)."""
    from tasks.teacher.prompts import WITH_TESTS

    if cfg.validation is not None and cfg.teacher.output_format in WITH_TESTS:
        from tasks.sandbox.isolation import require_isolation

        require_isolation(cfg.validation.accept_weak_sandbox)


def check_seed_source(seed_cfg) -> None:
    """Draw one seed: raises UserError for an unknown source, a missing column or an empty corpus."""
    from tasks.seeds.sampling import sample_seeds

    probe = seed_cfg.model_copy(update={"num_seeds": 1, "quotas": None})
    batches, _ = sample_seeds(probe, batch_size=1)
    next(batches, None)


def _print_summary(manifest: dict, ui: str | None) -> None:
    from rich.console import Console

    console = Console(stderr=False)
    out = manifest["config"]["output_dir"]
    acct = manifest["accounting"]
    console.print(f"[bold]dataset[/bold]  {Path(out).resolve()}  ({manifest['status']})")
    console.print(f"rows     {manifest['rows']} in {len(manifest['files'])} shard(s)")
    console.print(f"seeds    {acct['seeds']} = {acct['rows']} rows + {acct['dropped']} dropped")
    for name, stage in manifest["stages"].items():
        if stage["dropped"]:
            what = "corpus rejects" if name == "seeds" else f"{name} dropped"  # rejects happen before a seed exists
            console.print(f"  {what:<20} {stage['dropped']}")
    not_checked = manifest.get("benchmarks_not_checked") or []
    if not_checked:
        console.print(
            f"[bold yellow]decontamination partial[/bold yellow]: NOT checked against {', '.join(not_checked)} "
            "(could not be loaded; --benchmark-dir, or --require-benchmarks to make this an error)"
        )
    if ui:
        run_id = manifest.get("prefect_flow_run_id")
        console.print(f"prefect  {ui}/flow-run/{run_id}" if run_id else f"prefect  {ui}")
