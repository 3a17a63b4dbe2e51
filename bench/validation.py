"""Validation throughput: programs/s through the hardened sandbox vs a bare loop, same run.

The programs are MBPP's reference solutions with their asserts (974 problems, from
../shared/benchmarks/mbpp.jsonl). The baselines run each as `python file.py` (this
interpreter, no isolation at all) and as `python -S file.py` (no site start-up either: the
fastest bare start), `--workers` at a time; ossforge runs the same pairs
through the validation step (bubblewrap + warm zygote + a forked, locked-down worker per
program), the same number at a time, sandbox start-up included. Prints one JSON line.

    .venv/bin/python bench/validation.py [--workers N] [--limit N] [--mbpp FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.validation.validate import ValidationConfig, Validator, validation_summary  # noqa: E402


def load_mbpp(path: Path, limit: int | None) -> list[tuple[str, str]]:
    """(solution, tests) per problem: the reference code; setup code plus the assert lines."""
    pairs = []
    for line in path.read_text().splitlines()[:limit]:
        row = json.loads(line)
        tests = "\n".join([row.get("test_setup_code") or "", *row["test_list"]])
        pairs.append((row["code"], tests))
    return pairs


def bare_loop(pairs: list[tuple[str, str]], workers: int, tmp: Path, flags: tuple[str, ...] = ()) -> tuple[float, int]:
    files = []
    for i, (code, tests) in enumerate(pairs):
        f = tmp / f"prog_{i}.py"
        f.write_text(f"{code}\n\n{tests}\n")
        files.append(f)

    def run(f: Path) -> bool:
        try:
            return subprocess.run([sys.executable, *flags, str(f)], cwd=tmp, capture_output=True, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        passed = sum(pool.map(run, files))
    return time.perf_counter() - start, passed


def sandboxed(pairs: list[tuple[str, str]], workers: int) -> tuple[float, int, dict]:
    table = pa.table({"solution": [p[0] for p in pairs], "tests": [p[1] for p in pairs]})
    start = time.perf_counter()
    with Validator(ValidationConfig(workers=workers, seconds=10.0)) as validator:
        out = validator.apply(table)
        summary = validation_summary(validator)
    return time.perf_counter() - start, out.kept.num_rows, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--mbpp", type=Path, default=REPO.parent / "shared" / "benchmarks" / "mbpp.jsonl")
    args = parser.parse_args()
    pairs = load_mbpp(args.mbpp, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        bare_s, bare_passed = bare_loop(pairs, args.workers, Path(tmp))
        nosite_s, nosite_passed = bare_loop(pairs, args.workers, Path(tmp), ("-S",))
    ours_s, ours_passed, summary = sandboxed(pairs, args.workers)
    print(json.dumps({
        "bench": "validation",
        "programs": len(pairs),
        "workers": args.workers,
        "isolation": summary["isolation"],
        "bare_python_file_s": round(bare_s, 2),
        "bare_programs_per_s": round(len(pairs) / bare_s, 1),
        "bare_passed": bare_passed,
        "bare_no_site_s": round(nosite_s, 2),
        "bare_no_site_programs_per_s": round(len(pairs) / nosite_s, 1),
        "bare_no_site_passed": nosite_passed,
        "sandbox_s": round(ours_s, 2),
        "sandbox_programs_per_s": round(len(pairs) / ours_s, 1),
        "sandbox_passed": ours_passed,
        "sandbox_drops": summary["by_language"].get("python", {}),
        "speedup_vs_bare": round(bare_s / ours_s, 2),
        "speedup_vs_bare_no_site": round(nosite_s / ours_s, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
