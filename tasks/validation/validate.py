"""The validation step: each pair's solution runs against its own tests in the sandbox.

A row is kept when its tests ran to their end without a failure (a pass is positive
evidence, see tasks/sandbox/child.py), or, in a language with no runner on this worker,
when the policy keeps unverified rows (they are counted as such, never silently passed).
Every other row goes to the audit with one reason and a short detail (the failure's
message, where it happened, and the tail of its stderr).

Rows need `solution` and `tests` columns (Markdown fences are stripped here), and may
have `lang` (default python) and `id`. A row runs in the language its solution's first
tagged code block names (the teacher may answer a C++ seed in Python), else in `lang`,
through that language's runner (tasks/sandbox/runners.py: Python always, others where the
toolchain is on this worker and passed its self-test in the sandbox). Kept rows gain
`validation_status` (passed or unverified) and `validation_seconds` (sandbox wall time;
null when nothing ran).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Literal

import pyarrow as pa
from pydantic import Field

from tasks.core.config import FingerprintedConfig, operational
from tasks.core.stats import StageStats
from tasks.core.step import StepOutput, audit_rows
from tasks.sandbox.runner import Sandbox, SandboxLimits, default_workers
from tasks.sandbox.runners import PYTHON, Runner, available_runners, canonical, toolchain_binds
from tasks.validation.code import extract_code, fenced_language

STAGE = "validate"
PASSED, UNVERIFIED = "passed", "unverified"
STATUS = "validation_status"
SECONDS = "validation_seconds"

# Drop reasons, as they appear in the manifest and the audit.
NO_TESTS = "no_tests"  # the row has no test code (or no solution code) to run
NO_RUNNER = "no_runner"  # a language this worker cannot run, and the policy drops those
SANDBOX_ERROR = "sandbox_error"
# The sandbox's error kinds (tasks/sandbox) -> the reason a row is dropped for.
REASON_OF_KIND = {
    "syntax_error": "syntax_error",
    "assertion": "tests_failed",
    "wrong_answer": "tests_failed",
    "exception": "runtime_error",
    "failed": "tests_failed",  # a program runner's test step exited non-zero (tasks/sandbox/runners.py)
    "no_tests": NO_TESTS,  # e.g. a Rust crate with no #[test] of its own
    "timeout": "timeout",
    "memory": "memory",
    "system_exit": "crash",  # exited before its tests could finish: never a pass
    "killed": "crash",
    "no_result": "crash",
    "unencodable": "crash",
    "forged_result": "forged_result",  # wrote on the harness' report channel
    "sandbox_error": SANDBOX_ERROR,
}

def runnable() -> set[str]:
    """Languages with a runner on this worker (probed once per process); see docs/sandbox.md."""
    return set(available_runners())


class ValidationConfig(FingerprintedConfig):
    """How a pair is executed. Limits change which rows pass, so they are part of the fingerprint."""

    seconds: float = Field(10.0, gt=0, le=600, description="wall-clock budget per pair: solution, tests and each test function")
    memory_mb: int = Field(1024, ge=64, description="address-space limit of each sandboxed run")
    # Kept by default: half of the paper's seeds are not Python, and such a row is marked
    # (validation_status = unverified) and counted, never passed off as verified.
    unverified: Literal["keep", "drop"] = Field(
        "keep", description="rows in a language with no runner here: keep them (status unverified) or drop them (no_runner)"
    )
    workers: int = operational(default_factory=default_workers, ge=1, description="sandboxes at once (one per core)")
    repair: bool = Field(
        False, description="send each pair that failed its tests back to the teacher once, with the error, and "
        "validate the corrected pair (refresh only; the repair requests are cached, budgeted and counted)"
    )
    accept_weak_sandbox: bool = operational(
        False, description="run without bubblewrap, behind Python-level guards only (results are marked weak)"
    )

    def limits(self) -> SandboxLimits:
        return SandboxLimits(memory_bytes=self.memory_mb << 20)


def run_language(solution: str | None, lang: str | None) -> str:
    """The language a row runs in: its solution's fence tag, else its `lang` column."""
    return fenced_language(solution) or canonical(lang)


class Validator:
    """The step (tasks/core/step.py). Holds warm sandboxes across the tables it is given;
    close it (or use it as a context manager) when done."""

    stage = STAGE

    def __init__(self, cfg: ValidationConfig | None = None):
        self.cfg = cfg or ValidationConfig()
        self._sandbox: Sandbox | None = None
        self.by_language: dict[str, Counter] = defaultdict(Counter)  # lang -> passed / reason / unverified
        self.isolation: str | None = None
        self.runners: dict[str, Runner] = available_runners()
        self._broken: dict[str, str | None] = {PYTHON: None}  # language -> why its runner failed its self-test

    def __enter__(self) -> Validator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:  # refuses here, loudly, when there is no OS sandbox (UserError)
            binds = toolchain_binds(self.runners)
            self._sandbox = Sandbox(self.cfg.workers, self.cfg.limits(), self.cfg.accept_weak_sandbox, binds=binds)
            self.isolation = self._sandbox.isolation
        return self._sandbox

    def runner_problem(self, lang: str) -> str | None:
        """Why `lang` cannot be verified here (no toolchain, or it failed its self-test), or None."""
        if lang not in self.runners:
            return f"no runner for {lang!r} on this worker"
        if lang not in self._broken:  # first row in this language: does its toolchain work in the sandbox?
            runner = self.runners[lang]
            job, timeout = runner.job(*runner.self_test, self.cfg.seconds, self.cfg.memory_mb)
            result = runner.refine(self.sandbox.run(job, timeout))
            ok = result.get("passed") and not result.get("error")
            why = f"{result.get('error')}: {result.get('detail')} {result.get('stderr') or ''}".strip()[:300]
            self._broken[lang] = None if ok else f"the {lang} runner failed its self-test in the sandbox ({why})"
        return self._broken[lang]

    def apply(self, table: pa.Table) -> StepOutput:
        solutions, tests = _column(table, "solution"), _column(table, "tests")
        langs = [run_language(s, v) for s, v in zip(solutions, _column(table, "lang"))]
        verdicts: list[tuple[str, str | None, float | None]] = [None] * table.num_rows  # (status|reason, detail, s)
        jobs, where = [], []
        for i, (lang, solution, test) in enumerate(zip(langs, solutions, tests)):
            problem = self.runner_problem(lang) if lang != PYTHON else None
            if problem is not None:
                status = UNVERIFIED if self.cfg.unverified == "keep" else NO_RUNNER
                verdicts[i] = (status, problem, None)
                continue
            code, test_code = extract_code(solution, lang), extract_code(test, lang)
            if not code.strip() or not test_code.strip():
                verdicts[i] = (NO_TESTS, "no solution code" if not code.strip() else "no test code", None)
                continue
            if lang == PYTHON:  # the fast path: the zygote's own interpreter
                job = ({"mode": "tests", "code": code, "tests": test_code, "seconds": self.cfg.seconds}, self.cfg.seconds)
            else:
                job = self.runners[lang].job(code, test_code, self.cfg.seconds, self.cfg.memory_mb)
                if job is None:
                    verdicts[i] = (NO_TESTS, f"no {lang} tests this runner can run", None)
                    continue
            jobs.append(job)
            where.append(i)
        for i, result in zip(where, self.sandbox.run_many(jobs) if jobs else []):
            lang = langs[i]
            verdicts[i] = _verdict(result if lang == PYTHON else self.runners[lang].refine(result))
        for lang, (status, _, _) in zip(langs, verdicts):
            self.by_language[lang][status] += 1
        return _split(table, verdicts)


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def _verdict(result: dict) -> tuple[str, str | None, float]:
    seconds = round(float(result.get("seconds") or 0.0), 4)
    if result.get("passed") and not result.get("error"):
        return PASSED, None, seconds
    reason = REASON_OF_KIND.get(result.get("error") or "", "crash")
    detail = result.get("detail") or result.get("error") or ""
    if result.get("stderr"):
        detail += f"\nstderr: {result['stderr'][-300:]}"
    return reason, detail[:600], seconds


def _split(table: pa.Table, verdicts: list) -> StepOutput:
    keep = [status in (PASSED, UNVERIFIED) for status, _, _ in verdicts]
    dropped = [v for v, k in zip(verdicts, keep) if not k]
    audit = audit_rows(table, [not k for k in keep], STAGE, [v[0] for v in dropped], detail=[v[1] for v in dropped])
    kept = table.filter(pa.array(keep, type=pa.bool_()))
    kept_verdicts = [v for v, k in zip(verdicts, keep) if k]
    for name in (STATUS, SECONDS):
        if name in kept.column_names:  # a re-validated table: this run's verdict replaces the old one
            kept = kept.drop_columns([name])
    kept = kept.append_column(STATUS, pa.array([v[0] for v in kept_verdicts], pa.string()))
    kept = kept.append_column(SECONDS, pa.array([v[2] for v in kept_verdicts], pa.float64()))
    return StepOutput(kept, audit)


def validation_summary(validator: Validator) -> dict:
    """For the manifest and the dataset card: isolation used, counts and pass rate per language."""
    return _summary(validator.isolation, validator.by_language)


def _summary(isolation: str | None, by_language: dict[str, Counter]) -> dict:
    rates = {}
    for lang, counts in by_language.items():
        ran = sum(n for status, n in counts.items() if status not in (UNVERIFIED, NO_RUNNER, NO_TESTS))
        if ran:
            rates[lang] = round(counts[PASSED] / ran, 4)
    return {
        "isolation": isolation,
        "by_language": {lang: dict(sorted(c.items())) for lang, c in sorted(by_language.items())},
        "pass_rate": dict(sorted(rates.items())),
    }


def combine_shard_stats(shards: list[dict]) -> StageStats:
    """The validation stage of a refresh from its per-shard counts (each StageStats.as_dict()
    with validation_summary in `extra`), as if one validator had seen every row."""
    total = StageStats(STAGE)
    by_language: dict[str, Counter] = defaultdict(Counter)
    isolations = set()
    for shard in shards:
        total.merge(StageStats.from_dict(STAGE, shard))
        extra = shard.get("extra", {})
        isolations.add(extra.get("isolation"))
        for lang, counts in extra.get("by_language", {}).items():
            by_language[lang].update(counts)
    # "weak" wins: one shard behind Python-level guards only makes the whole run weak.
    isolation = "weak" if "weak" in isolations else next((i for i in isolations if i), None)
    total.extra.update(_summary(isolation, by_language))
    repairs = [shard["extra"]["repair"] for shard in shards if "repair" in shard.get("extra", {})]
    if repairs:
        total.extra["repair"] = _add_repairs(repairs)
    return total


def _add_repairs(repairs: list[dict]) -> dict:
    """The repair round's figures (tasks/generation/repair.py) over every shard."""
    total: dict = {"attempted": 0, "recovered": 0, "still_failing": 0}
    not_repaired: Counter = Counter()
    after: dict[str, Counter] = defaultdict(Counter)
    for r in repairs:
        for key in total:
            total[key] += r.get(key, 0)
        not_repaired.update(r.get("not_repaired", {}))
        for lang, counts in r.get("by_language_after_repair", {}).items():
            after[lang].update(counts)
    total["not_repaired"] = dict(sorted(not_repaired.items()))
    total["by_language_after_repair"] = {lang: dict(sorted(c.items())) for lang, c in sorted(after.items())}
    return total
