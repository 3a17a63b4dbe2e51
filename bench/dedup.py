"""Near-dedup benchmark: the project's step against a naive datasketch loop, same parameters.

Builds N code-like documents of ~2 KB (a prose problem + a Python solution with shared
boilerplate); a known fraction are planted near-duplicates of another document: identifiers
renamed, adjacent lines swapped, comments changed, whitespace/indentation changed, a few
prose words replaced. Then, each in a fresh process (so peak RSS is its own):

- step:  tasks.dedup.near.plan_near_dedup over the Parquet shards (signatures in worker
         processes, vectorised LSH banding, exact-Jaccard check, connected components);
- naive: per document, datasketch `MinHash.update` per shingle, then `MinHashLSH.query`
         and `insert` (same normalised tokens, shingles, num_perm and threshold). It is
         slow, so it runs on a sample of whole planted families (--naive-docs documents);
         its docs/s and precision/recall are measured on that sample.

Precision = dropped documents whose `duplicate_of` is in their own planted family / all
dropped; recall = those / planted near-duplicates. Peak RSS of the step is measured at N and
at --rss-docs (default 3N) and extrapolated linearly to 1M documents.

Prints ONE JSON line.   Usage: .venv/bin/python bench/dedup.py [--docs 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from process_stats import TreeRss  # bench/ is sys.path[0] when a benchmark runs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# --- synthetic corpus ------------------------------------------------------------------
_SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "vax", "zel", "qui", "dor", "fen", "gri", "hul", "jas", "nop",
              "sar", "bel", "cy", "da", "ex", "fo", "ga", "hi", "io", "ju", "ke", "lu", "ma", "ne", "ol", "pi"]
_R = random.Random(12345)
WORDS = sorted({"".join(_R.choice(_SYLLABLES) for _ in range(_R.randint(1, 3))) for _ in range(6000)})
NAMES = sorted({"_".join("".join(_R.choice(_SYLLABLES) for _ in range(_R.randint(1, 3))) for _ in range(_R.randint(1, 2)))
                for _ in range(60000)})
NAME_SET = frozenset(NAMES)
_WORD = re.compile(r"\b[a-z][a-z_]*\b")
STATEMENTS = [
    "{v} = {f}({a}, {n})",
    "{v} = {a}.get({s}, {n})",
    "{r}.append({v} * {n})",
    "{v} += {a}[{n}]",
    "if {v} > {n}:\n{i}    {r}.append({v})",
    "for {v} in range({n}):\n{i}    {a} = {f}({v}, {a})",
    "while {v} < {n}:\n{i}    {v} = {v} * 2 + {n}",
    "{v} = [{a} for {a} in {r} if {a} % {n}]",
    "{v} = {s}.join({r})",
    "{v}, {a} = {a}, {v} + {n}",
    "try:\n{i}    {v} = {f}({a})\n{i}except ValueError:\n{i}    {v} = {n}",
    "{r}[{s}] = {v} / max({a}, 1)",
    "assert {v} is not None, {s}",
    "{v} = sorted({r}, key=lambda item: item[{n}])",
]
BOILERPLATE_HEAD = "import json\nimport os\nimport sys\nfrom collections import defaultdict\n\n\n"
BOILERPLATE_TAIL = (
    "\n\ndef main(argv=None):\n    argv = sys.argv[1:] if argv is None else argv\n"
    "    with open(argv[0]) as handle:\n        data = json.load(handle)\n"
    "    print(json.dumps({name}(data)))\n    return 0\n\n\nif __name__ == '__main__':\n    sys.exit(main())\n"
)


def _sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 16))
    if rng.random() < 0.4:
        words.insert(rng.randrange(len(words)), f"`{rng.choice(NAMES)}`")
    return " ".join(words).capitalize() + "."


def _function(rng: random.Random, names: list[str], indent: str = "    ") -> list[str]:
    lines = []
    for _ in range(rng.randint(4, 7)):
        v, a, r, f = rng.choices(names, k=4)
        stmt = rng.choice(STATEMENTS).format(v=v, a=a, r=r, f=f, n=rng.randint(0, 999),
                                             s=repr(rng.choice(WORDS)), i=indent)
        if rng.random() < 0.25:
            lines.append(f"{indent}# {' '.join(rng.choices(WORDS, k=rng.randint(3, 8)))}")
        lines.extend(indent + part if k == 0 else part for k, part in enumerate(stmt.split("\n")))
    return lines


def base_document(family: int) -> tuple[str, str]:
    rng = random.Random(family)
    names = rng.sample(NAMES, 14)
    problem = " ".join(_sentence(rng) for _ in range(rng.randint(4, 6)))
    code = []
    for k in range(3):
        fname, params = names[k], ", ".join(names[3 + 2 * k : 5 + 2 * k])
        code.append(f"def {fname}({params}):")
        code.append(f'    """{_sentence(rng)}"""')
        code.extend(_function(rng, names[3:]))
        code.append(f"    return {rng.choice(names[3:])}")
        code.append("")
    body = "\n".join(code)
    solution = (
        f"{_sentence(rng)}\n\n```python\n{BOILERPLATE_HEAD}{body}{BOILERPLATE_TAIL.format(name=names[0])}```\n\n"
        f"{_sentence(rng)} {_sentence(rng)}"
    )
    return problem, solution


def near_duplicate(problem: str, solution: str, rng: random.Random) -> tuple[str, str]:
    """Edits that keep a document a near-duplicate: renames, swaps, comments, whitespace, prose."""
    start, end = solution.index("```python\n") + 10, solution.rindex("```")
    code = solution[start:end]
    if rng.random() < 0.7:  # rename identifiers consistently (functions, parameters, locals)
        local = sorted(set(_WORD.findall(code)) & NAME_SET)
        mapping = {old: rng.choice(NAMES) + "_x" for old in rng.sample(local, max(1, len(local) // 2))}
        code = _WORD.sub(lambda m: mapping.get(m.group(), m.group()), code)
    lines = code.split("\n")
    if rng.random() < 0.7:  # swap adjacent simple statements at the same indentation
        for _ in range(2):
            i = rng.randrange(1, len(lines) - 2)
            a, b = lines[i], lines[i + 1]
            if a.startswith("    ") and b.startswith("    ") and len(a) - len(a.lstrip()) == len(b) - len(b.lstrip()) \
                    and not a.rstrip().endswith(":") and not b.rstrip().endswith(":"):
                lines[i], lines[i + 1] = b, a
    if rng.random() < 0.7:  # change comments: drop the old ones, write new ones elsewhere
        lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
        for _ in range(3):
            i = rng.randrange(len(lines))
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            lines.insert(i, f"{indent}# {' '.join(rng.choices(WORDS, k=5))}")
    if rng.random() < 0.7:  # whitespace: 2-space indentation, trailing spaces, blank lines
        lines = [ln.replace("    ", "  ") + ("  " if rng.random() < 0.2 else "") for ln in lines]
        for _ in range(3):
            lines.insert(rng.randrange(len(lines)), "")
    solution = solution[:start] + "\n".join(lines) + solution[end:]
    words = problem.split(" ")
    for _ in range(rng.randint(0, 3)):  # a few prose words reworded
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words), solution


def plan_corpus(n_docs: int, dup_fraction: float, seed: int = 7, first_family: int = 0) -> list[tuple[int, int]]:
    """(family, variant) per document position; variant 0 is the family's original."""
    rng = random.Random(seed)
    n_variants = int(n_docs * dup_fraction)
    n_families = n_docs - n_variants
    slots = [(first_family + f, 0) for f in range(n_families)]
    counts = [0] * n_families
    for _ in range(n_variants):
        f = rng.randrange(n_families)
        counts[f] += 1
        slots.append((first_family + f, counts[f]))
    rng.shuffle(slots)
    return slots


def plan_blocks(sizes: list[int], dup_fraction: float) -> list[tuple[int, int]]:
    """Consecutive independent blocks: every prefix made of whole blocks has whole families."""
    slots: list[tuple[int, int]] = []
    for k, size in enumerate(sizes):
        slots += plan_corpus(size, dup_fraction, seed=7 + k, first_family=len(slots))
    return slots


def document(family: int, variant: int) -> tuple[str, str]:
    problem, solution = base_document(family)
    if variant:
        problem, solution = near_duplicate(problem, solution, random.Random(family * 1000 + variant))
    return problem, solution


def _write_shard(job: tuple[Path, int, list[tuple[int, int]]]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, lo, part = job
    docs = [document(f, v) for f, v in part]
    pq.write_table(
        pa.table(
            {
                "id": [f"doc-{lo + i:07d}" for i in range(len(part))],
                "seed_index": pa.array(range(lo, lo + len(part)), pa.int64()),
                "problem": [d[0] for d in docs],
                "solution": [d[1] for d in docs],
                "family": pa.array([f for f, _ in part], pa.int64()),
            }
        ),
        path,
    )
    return sum(len(p.encode()) + len(q.encode()) + 1 for p, q in docs)


SHARD_ROWS = 10_000


def write_corpus(out_dir: Path, sizes: list[int], dup_fraction: float, shard_rows: int = SHARD_ROWS) -> float:
    """Write blocks of documents as Parquet shards (in parallel); returns the mean document size."""
    from multiprocessing import Pool

    slots = plan_blocks(sizes, dup_fraction)
    n_docs = len(slots)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(out_dir / f"train-{i:05d}.parquet", lo, slots[lo : lo + shard_rows])
            for i, lo in enumerate(range(0, n_docs, shard_rows))]
    with Pool(os.cpu_count() or 1) as pool:
        total_bytes = sum(pool.imap(_write_shard, jobs))
    return total_bytes / max(n_docs, 1)


# --- scoring -------------------------------------------------------------------------------
def score(ids: list[str], family: dict[str, int], dropped: dict[str, str]) -> dict:
    """Precision/recall of dropped->duplicate_of against the planted families among `ids`."""
    sizes: dict[int, int] = {}
    for i in ids:
        sizes[family[i]] = sizes.get(family[i], 0) + 1
    planted = sum(s - 1 for s in sizes.values())
    correct = sum(1 for d, of in dropped.items() if family[d] == family[of])
    return {
        "planted_duplicates": planted,
        "dropped": len(dropped),
        "precision": round(correct / len(dropped), 4) if dropped else 1.0,
        "recall": round(correct / planted, 4) if planted else 1.0,
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_columns(corpus: Path, columns: list[str] | None = None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.core.parquet_io import input_files

    return pa.concat_tables([pq.read_table(f, columns=columns) for f in input_files(corpus)])


# --- children ------------------------------------------------------------------------------
def run_step(corpus: Path, args) -> dict:
    import numpy as np

    from tasks.core.sources import FileSource
    from tasks.dedup.near import NearDedupConfig, plan_near_dedup

    cfg = NearDedupConfig(threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram, workers=args.workers)
    source = FileSource(corpus, cfg.fields)
    sampler = TreeRss(os.getpid(), interval_s=0.05, tree_key="main_plus_workers_mb")
    sampler.start()
    t0, cpu0, workers0 = time.perf_counter(), time.process_time(), children_cpu()
    plan = plan_near_dedup(source, cfg)
    seconds, main_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    workers_cpu = children_cpu() - workers0  # the pool's processes have exited: their CPU is counted
    rss = sampler.stop()
    if not args.score:
        return {"docs": len(plan.ids), "seconds": round(seconds, 2), "rss": rss}
    fam = read_columns(corpus, ["id", "family"])
    family = dict(zip(fam["id"].to_pylist(), fam["family"].to_pylist()))
    ids = plan.ids.to_pylist()
    dropped = {ids[i]: plan.node_id(int(plan.duplicate_of[i])) for i in np.flatnonzero(~plan.kept)}
    return {
        "docs": len(plan.ids),
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(plan.ids) / seconds, 1),
        "main_process_cpu_s": round(main_cpu, 2),
        "workers_cpu_s": round(workers_cpu, 2),
        "rss": rss,
        **score(ids, family, dropped),
        "extra": plan.figures,
    }


def run_naive(corpus: Path, args) -> dict:
    import pyarrow.parquet as pq
    from datasketch import MinHash, MinHashLSH

    from tasks.dedup.tokens import normalized_tokens

    table = read_columns(corpus)
    families = table["family"].to_pylist()
    # A sample of whole families (so planted pairs are inside it), in seed order.
    rng = random.Random(1)
    by_family: dict[int, list[int]] = {}
    for row, f in enumerate(families):
        by_family.setdefault(f, []).append(row)
    order = list(by_family)
    rng.shuffle(order)
    rows: list[int] = []
    for f in order:
        if len(rows) >= args.naive_docs:
            break
        rows.extend(by_family[f])
    rows.sort()
    ids = [table["id"][r].as_py() for r in rows]
    texts = [f"{table['problem'][r].as_py()}\n{table['solution'][r].as_py()}" for r in rows]
    family = {i: families[r] for i, r in zip(ids, rows)}
    del table

    n = args.ngram
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
    dropped: dict[str, str] = {}
    for key, text in zip(ids, texts):
        tokens = normalized_tokens(text, canonicalize_identifiers=True)
        m = MinHash(num_perm=args.num_perm)
        for k in range(max(len(tokens) - n + 1, 1)):
            m.update(" ".join(tokens[k : k + n]).encode())
        found = lsh.query(m)
        if found:
            dropped[key] = min(found)  # ids sort in seed order: the earliest one
        lsh.insert(key, m)
    seconds = time.perf_counter() - t0
    return {
        "docs": len(ids),
        "sampled": "whole planted families, chosen at random",
        "seconds": round(seconds, 2),
        "cpu_s": round(time.process_time() - cpu0, 2),
        "docs_per_s": round(len(ids) / seconds, 1),
        **score(ids, family, dropped),
    }


def child(argv: list[str]) -> dict:
    """Run one part in this process; the parent reads its JSON line."""
    ns = argparse.Namespace(**json.loads(argv[1]))
    corpus = Path(ns.corpus)
    if argv[0] == "corpus":
        t0 = time.perf_counter()
        avg = write_corpus(corpus, ns.sizes, ns.dup_fraction)
        return {"seconds": round(time.perf_counter() - t0, 1), "avg_doc_bytes": round(avg)}
    return run_step(corpus, ns) if argv[0] == "step" else run_naive(corpus, ns)


def in_child(kind: str, **params) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(params)], capture_output=True, text=True, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--rss-docs", type=int, default=None, help="second size for the RSS fit (default 3x --docs)")
    parser.add_argument("--dup-fraction", type=float, default=0.15, help="planted near-duplicates / documents")
    parser.add_argument("--naive-docs", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return

    rss_docs = args.rss_docs or 3 * args.docs
    common = {"threshold": args.threshold, "num_perm": args.num_perm, "ngram": args.ngram, "workers": args.workers}
    if args.docs % SHARD_ROWS or rss_docs % SHARD_ROWS or rss_docs <= args.docs:
        parser.error(f"--docs and --rss-docs must be multiples of {SHARD_ROWS}, --rss-docs the larger")
    with tempfile.TemporaryDirectory(prefix="ossforge-bench-dedup-") as tmp:
        # One corpus of --rss-docs documents whose first --docs form a complete corpus of
        # their own (whole planted families): the --docs run reads those shards.
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        sizes = [args.docs, rss_docs - args.docs]
        gen = in_child("corpus", corpus=str(large), sizes=sizes, dup_fraction=args.dup_fraction)
        small.mkdir()
        for shard in sorted(large.glob("train-*.parquet"))[: args.docs // SHARD_ROWS]:
            (small / shard.name).symlink_to(shard)
        naive = in_child("naive", corpus=str(small), naive_docs=args.naive_docs, **common)
        step = in_child("step", corpus=str(small), score=True, **common)
        step_large = in_child("step", corpus=str(large), score=False, **common)

    def total(rss):  # peak of (main process + workers), sampled together
        return rss["main_plus_workers_mb"]

    r1, r2 = total(step["rss"]), total(step_large["rss"])
    slope = (r2 - r1) / (rss_docs - args.docs)
    at_1m = r1 + slope * (1_000_000 - args.docs)
    main_1m = step["rss"]["main_mb"] + (step_large["rss"]["main_mb"] - step["rss"]["main_mb"]) / (rss_docs - args.docs) * (
        1_000_000 - args.docs)
    ratio = step["docs_per_s"] / naive["docs_per_s"]
    # CPU-time figures: this machine is shared, so wall-clock docs/s depend on what else
    # runs; CPU seconds per document do not. The idle-machine estimate assumes the step's
    # main process and workers each get a core (up to the CPU count).
    naive_cpu_per_doc = naive["cpu_s"] / naive["docs"]
    step_cpu = step["main_process_cpu_s"] + step["workers_cpu_s"]
    cpu_ratio = naive_cpu_per_doc / (step_cpu / step["docs"])
    cores = min(os.cpu_count() or 1, args.workers + 1)
    step_idle_wall = max(step["main_process_cpu_s"], step_cpu / cores)
    idle_ratio = (step["docs"] / step_idle_wall) / (1 / naive_cpu_per_doc)
    print(
        json.dumps(
            {
                "bench": "near_dedup",
                "docs": args.docs,
                "dup_fraction": args.dup_fraction,
                "avg_doc_bytes": gen["avg_doc_bytes"],
                "params": {k: v for k, v in common.items()},
                "bands_rows": [step["extra"]["bands"], step["extra"]["rows_per_band"]],
                "corpus_seconds": gen["seconds"],
                "naive": naive,
                "step": {k: v for k, v in step.items() if k != "extra"},
                "step_breakdown_s": {k: step["extra"][k] for k in ("signature_seconds", "lsh_seconds", "verify_seconds")},
                "step_pairs": {k: step["extra"][k] for k in ("candidate_pairs", "exact_jaccard_checks", "duplicate_edges")},
                "speed_ratio": round(ratio, 1),
                "speed_ratio_cpu_time": round(cpu_ratio, 1),
                "speed_ratio_idle_estimate": round(idle_ratio, 1),
                "speed_note": "speed_ratio = wall-clock docs/s step / naive in this run; cpu_time = naive CPU s/doc "
                "over step CPU s/doc (main + workers); idle_estimate = docs/s if each step process had its own core",
                "rss_mb": {
                    f"{args.docs}": round(r1, 1),
                    f"{rss_docs}": round(r2, 1),
                    "1000000_extrapolated": round(at_1m, 1),
                    "1000000_main_process_extrapolated": round(main_1m, 1),
                    "note": "peak of main + worker processes' RSS sampled every 50 ms; linear fit through the two measured sizes",
                },
                "targets": {
                    "ratio_ge_20": ratio >= 20,
                    "ratio_ge_20_idle_estimate": idle_ratio >= 20,
                    "recall_ge_0.9": step["recall"] >= 0.9,
                    "precision_ge_0.95": step["precision"] >= 0.95,
                    "rss_1m_lt_2gb": at_1m < 2048,
                },
                "machine": {"cpus": os.cpu_count(), "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
            }
        )
    )


if __name__ == "__main__":
    main()
