"""Validation throughput: programs/s through the hardened sandbox vs a bare loop, same run.

The programs are MBPP's reference solutions with their asserts (974 problems, from
../shared/benchmarks/mbpp.jsonl). The baselines run each as `python file.py` (this
interpreter, no isolation at all) and as `python -S file.py` (no site start-up either: the
fastest bare start), `--workers` at a time; ossforge runs the same pairs
through the validation step (bubblewrap + warm zygote + a forked, locked-down worker per
program), the same number at a time, sandbox start-up included. Prints one JSON line.

    .venv/bin/python bench/validation.py [--workers N] [--limit N] [--mbpp FILE]

With `--refresh-seeds N` it measures instead what validation adds to a whole refresh: the
refresh CLI (output format sections_tests, near-dedup and decontamination off) against the
fake teacher (its own process, `--latency` s per request, `--in-flight` requests at once)
and a Prefect server, once with `--no-validate` and once validating, same run, same cache
cleared; prints wall seconds of each and the ratio.
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

from process_stats import stop_processes  # bench/ is sys.path[0] when a benchmark runs

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


def refresh_with_and_without_validation(seeds: int, latency: float, in_flight: int, shard: int | None = None) -> dict:
    """Wall seconds of the refresh CLI with --no-validate, then validating (servers from bench/end_to_end.py)."""
    import os
    import shutil

    from end_to_end import free_port, wait_for  # same folder

    work = Path(tempfile.mkdtemp(prefix="ossforge-validate-bench-"))
    server_port, teacher_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{server_port}/api"
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_API_URL": api_url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false", "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                          str(server_port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True),
        subprocess.Popen([sys.executable, "-m", "tests.support.fake_teacher", "--port", str(teacher_port),
                          "--latency", str(latency)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True),
    ]  # fmt: skip
    result = {}
    try:
        wait_for(f"http://127.0.0.1:{teacher_port}/stats", 60, procs[1])
        wait_for(f"{api_url}/health", 180, procs[0])
        for label, flag in (("no_validate", "--no-validate"), ("validate", "--validate")):
            out = work / label
            args = [sys.executable, "-m", "ossforge.cli", "refresh", "--num-seeds", str(seeds), "--teacher-base-url",
                    f"http://127.0.0.1:{teacher_port}/v1", "--teacher-model", "fake-teacher", "--api-key-env", "",
                    "--concurrency", str(in_flight), "--output-dir", str(out), "--no-progress", "--output-format",
                    "sections_tests", "--no-near-dedup", "--no-decontaminate", flag,
                    *(["--generation-shard-size", str(shard)] if shard else [])]  # fmt: skip
            started = time.perf_counter()
            proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                raise RuntimeError(f"refresh {flag} failed:\n{proc.stderr[-3000:]}")
            manifest = json.loads((out / "manifest.json").read_text())
            result[f"{label}_wall_s"] = round(wall, 1)
            result[f"{label}_rows"] = manifest["rows"]
            if "validate" in manifest["stages"]:
                result["validate_stage_s"] = manifest["stages"]["validate"]["seconds"]
                result["validate_dropped"] = manifest["stages"]["validate"]["dropped"]
    finally:
        stop_processes(procs)
        shutil.rmtree(work, ignore_errors=True)
    result["teacher_limit_s"] = round(seeds * latency / in_flight, 1)
    result["validation_adds"] = round(result["validate_wall_s"] / result["no_validate_wall_s"] - 1, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--refresh-seeds", type=int, default=None)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--generation-shard-size", type=int, default=None, help="refresh mode: seeds per shard")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--mbpp", type=Path, default=REPO.parent / "shared" / "benchmarks" / "mbpp.jsonl")
    args = parser.parse_args()
    if args.refresh_seeds:
        figures = refresh_with_and_without_validation(args.refresh_seeds, args.latency, args.in_flight,
                                                      args.generation_shard_size)
        print(json.dumps({"bench": "validation_refresh", "seeds": args.refresh_seeds, "latency_s": args.latency,
                          "in_flight": args.in_flight, "generation_shard_size": args.generation_shard_size or 500,
                          **figures}))  # fmt: skip
        return
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
