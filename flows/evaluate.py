"""The `evaluate` flow: pass@1 of a model on HumanEval, HumanEval+ and MBPP+.

Orchestration only: benchmarks are loaded by tasks/evaluation/benchmarks.py, completions come
from tasks/evaluation/completions.py (one model load for every benchmark) — or, with
`samples`, from a file of completions made anywhere (tasks/evaluation/samples.py, EvalPlus'
format) — and programs are scored in the sandbox by tasks/evaluation/scoring.py. The flow writes

- OUTPUT_DIR/results.parquet — one row per problem (tasks.core.schema.EVAL_RESULT_SCHEMA),
- OUTPUT_DIR/summary.json    — pass@1 per benchmark, base and plus, and run figures,

and publishes the same numbers as Prefect artifacts (a table and a markdown summary).
The training flow calls `evaluate_flow(EvaluateConfig(...))` when `run_evaluation=True`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, Optional

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, field_validator, model_validator

from tasks.core.errors import UserError
from tasks.core.schema import EVAL_RESULT_SCHEMA
from tasks.evaluation.benchmarks import BENCHMARKS, Problem, default_cache_dir, load_benchmark, parse_benchmarks
from tasks.core.parquet_io import write_json_atomic, write_parquet_atomic

SUMMARY_KEY = "evaluation-summary"
TABLE_KEY = "evaluation-pass-at-1"


class EvaluateConfig(BaseModel):
    """The flow's one parameter; the CLI and the training flow fill the same model."""

    model: Optional[str] = Field(None, description="model directory (save_pretrained), a hub id when online, or 'tiny'")
    samples: Optional[str] = Field(
        None, description="JSONL of completions made elsewhere (EvalPlus format: task_id + solution or completion), instead of a model"
    )
    benchmarks: list[str] = Field(default_factory=lambda: list(BENCHMARKS), description="humaneval, humaneval+, mbpp+")
    output_dir: str = Field(description="where results.parquet and summary.json are written")
    limit: Optional[int] = Field(None, ge=1, description="first N problems of each benchmark (smoke runs)")
    benchmark_dir: Optional[str] = Field(None, description="directory with HumanEvalPlus.jsonl.gz / MbppPlus.jsonl.gz")
    cache_dir: Optional[str] = Field(None, description="expected-output and download cache (default ~/.cache/ossforge/eval)")
    max_new_tokens: int = Field(512, ge=1)
    batch_size: int = Field(8, ge=1, description="prompts per generate() call (transformers backend)")
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    workers: Optional[int] = Field(None, ge=1, description="sandbox processes at once (default: CPU count)")
    memory_mb: int = Field(4096, ge=64, description="address-space limit of each sandbox process")
    max_seconds_per_problem: float = Field(60.0, gt=0, description="wall clock for all inputs of one problem")
    accept_weak_sandbox: bool = Field(
        False, description="score without bubblewrap, behind Python-level guards only (summary says isolation=weak)"
    )

    @model_validator(mode="after")
    def _one_source(self):
        if (self.model is None) == (self.samples is None):
            raise ValueError("give exactly one of model (generate completions) and samples (score a samples file)")
        return self

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _split(cls, value):
        try:
            return parse_benchmarks(value)
        except UserError as exc:
            raise ValueError(str(exc)) from None


def cache_dir_for(cfg: EvaluateConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def resolve_model(cfg: EvaluateConfig) -> str:
    if cfg.model is None:
        raise UserError("no model to evaluate (scoring a samples file instead)")
    if cfg.model == "tiny":
        from training.tiny import resolve_model as resolve_tiny

        return resolve_tiny("tiny", cache_dir_for(cfg))
    # Anything that isn't "org/name" must be a local directory.
    looks_local = cfg.model.startswith((".", "/", "~")) or cfg.model.count("/") != 1
    if looks_local and not Path(cfg.model).expanduser().exists():
        raise UserError(f"model {cfg.model} not found")
    return str(Path(cfg.model).expanduser()) if looks_local else cfg.model


@task(name="load-benchmarks", cache_policy=NO_CACHE)
def load_problems(cfg: EvaluateConfig) -> list[Problem]:
    problems: list[Problem] = []
    for name in cfg.benchmarks:
        problems += load_benchmark(name, cfg.benchmark_dir, cache_dir_for(cfg), cfg.limit)
    return problems


def checked_samples(cfg: EvaluateConfig) -> dict:
    """The samples file, read and checked against every task of the selected benchmarks (UserError)."""
    from tasks.evaluation.benchmarks import task_ids
    from tasks.evaluation.samples import check_task_ids, read_samples

    samples = read_samples(cfg.samples)
    known = {t for name in cfg.benchmarks for t in task_ids(name, cfg.benchmark_dir, cache_dir_for(cfg))}
    check_task_ids(samples, known, cfg.benchmarks)
    return samples


@task(name="read-samples", cache_policy=NO_CACHE)
def completions_from_samples(problems: list[Problem], cfg: EvaluateConfig) -> tuple[list[Problem], list[str], list[str], dict]:
    """(problems, completion texts, programs, figures) from the samples file instead of a model."""
    from tasks.evaluation.samples import programs_for

    start = time.perf_counter()
    samples = checked_samples(cfg)
    chosen, texts, programs = programs_for(problems, samples)
    stats = {"backend": "samples", "device": None, "seconds": round(time.perf_counter() - start, 3), "prompts": 0,
             "samples": len(samples), "missing": sum(1 for p in chosen if p.task_id not in samples),
             "outside_limit": len(set(samples) - {p.task_id for p in chosen})}  # fmt: skip
    return chosen, texts, programs, stats


@task(name="generate-completions", cache_policy=NO_CACHE)
def generate(model_path: str, problems: list[Problem], cfg: EvaluateConfig) -> tuple[list[str], dict]:
    from tasks.evaluation.completions import GenerationSettings, generate_completions
    from tasks.evaluation.scoring import build_prompt

    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, backend=cfg.backend)
    return generate_completions(model_path, [build_prompt(p) for p in problems], settings)


@task(name="score-in-sandbox", cache_policy=NO_CACHE)
def score(problems: list[Problem], programs: list[str], cfg: EvaluateConfig) -> list[dict]:
    """One benchmark's programs against its tests, `workers` sandboxes at a time."""
    from tasks.evaluation.scoring import ScoreConfig, score_programs
    from tasks.sandbox.runner import SandboxLimits, default_workers

    score_cfg = ScoreConfig(
        workers=cfg.workers or default_workers(),
        limits=SandboxLimits(memory_bytes=cfg.memory_mb << 20),
        max_seconds_per_problem=cfg.max_seconds_per_problem,
        cache_dir=cache_dir_for(cfg),
        accept_weak_sandbox=cfg.accept_weak_sandbox,
    )
    return score_programs(problems, programs, score_cfg)


def results_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=EVAL_RESULT_SCHEMA)


def summary_markdown(summary: dict) -> str:
    lines = [
        f"# Evaluation of `{summary['model'] or summary['samples']}`",
        "",
        "| benchmark | problems | pass@1 (base) | pass@1 (plus) | top errors |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, entry in summary["benchmarks"].items():
        plus = f"{entry['plus_pass@1'] * 100:.1f}" if "plus_pass@1" in entry else "—"
        errors = ", ".join(f"{k} {v}" for k, v in list(entry["errors"].items())[:3]) or "—"
        lines.append(f"| {name} | {entry['problems']} | {entry['pass@1'] * 100:.1f} | {plus} | {errors} |")
    gen = summary["generation"]
    source = (f"Completions from the samples file `{summary['samples']}` ({gen['samples']} samples)" if summary["samples"]
              else f"Greedy decoding, one completion per problem ({gen['backend']} on {gen['device']}, {gen['seconds']} s)")  # fmt: skip
    lines += [
        "",
        f"{source}; sandbox guards: {', '.join(summary['sandbox_guards']) or 'none'} (isolation {summary['isolation']}).",
        f"Per-problem results: `{summary['results']}`.",
    ]
    if summary["isolation"] == "weak":
        lines.append("**The sandbox was WEAK** (no bubblewrap; Python-level guards only).")
    return "\n".join(lines) + "\n"


def pass_at_1_rows(summary: dict) -> list[dict]:
    return [
        {
            "benchmark": name,
            "problems": entry["problems"],
            "pass@1": entry["pass@1"],
            "plus pass@1": entry.get("plus_pass@1"),
        }
        for name, entry in summary["benchmarks"].items()
    ]


@flow(name="evaluate")
def evaluate_flow(cfg: EvaluateConfig) -> dict:
    """Generate, score and summarise; returns the summary written to OUTPUT_DIR/summary.json."""
    from tasks.evaluation.scoring import program_for, summarize
    from tasks.sandbox.isolation import require_isolation
    from tasks.sandbox.runner import probe_guards

    logger = get_run_logger()
    start = time.perf_counter()
    isolation = require_isolation(cfg.accept_weak_sandbox)  # refuses before any model load without bubblewrap
    if isolation == "weak":
        logger.warning("scoring WITHOUT bubblewrap (Python-level guards only); the summary says isolation=weak")
    problems = load_problems(cfg)
    if cfg.samples:
        problems, completions, programs, gen_stats = completions_from_samples(problems, cfg)
        logger.info("scoring %d samples from %s on %d problems", gen_stats["samples"], cfg.samples, len(problems))
    else:
        model_path = resolve_model(cfg)
        logger.info("evaluating %s on %d problems (%s)", cfg.model, len(problems), ", ".join(cfg.benchmarks))
        completions, gen_stats = generate(model_path, problems, cfg)
        logger.info("generated %d completions in %.1f s (%s)", len(completions), gen_stats["seconds"], gen_stats["backend"])
        programs = [program_for(p, c) for p, c in zip(problems, completions)]

    rows: list[dict] = []
    score_start = time.perf_counter()
    for name in dict.fromkeys(p.benchmark for p in problems):
        idx = [i for i, p in enumerate(problems) if p.benchmark == name]
        scored = score([problems[i] for i in idx], [programs[i] for i in idx], cfg)
        for i, row in zip(idx, scored):
            if cfg.samples and not programs[i] and row["error"] == "no_code":
                row["error_detail"] = "no sample for this task"
            rows.append({**row, "completion": completions[i], "program": programs[i]})
    score_seconds = time.perf_counter() - score_start

    out_dir = Path(cfg.output_dir)
    results_path = write_parquet_atomic(results_table(rows), out_dir / "results.parquet")
    summary = {
        "model": cfg.model,
        "samples": cfg.samples,
        "benchmarks": summarize(rows),
        "problems_scored": len(rows),
        "generation": gen_stats,
        "scoring_seconds": round(score_seconds, 3),
        "seconds": round(time.perf_counter() - start, 3),
        "sandbox_guards": probe_guards(accept_weak=cfg.accept_weak_sandbox),
        "isolation": isolation,
        "results": str(results_path),
        "config": cfg.model_dump(),
    }
    write_json_atomic(summary, out_dir / "summary.json")
    for name, entry in summary["benchmarks"].items():
        plus = f", plus {entry['plus_pass@1']:.3f}" if "plus_pass@1" in entry else ""
        logger.info("%s: pass@1 %.3f%s over %d problems", name, entry["pass@1"], plus, entry["problems"])
    create_table_artifact(pass_at_1_rows(summary), key=TABLE_KEY, description=f"pass@1 of {cfg.model or cfg.samples}")
    create_markdown_artifact(summary_markdown(summary), key=SUMMARY_KEY, description="Evaluation summary")
    return summary
