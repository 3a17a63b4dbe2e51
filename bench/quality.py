"""Quality of near-dedup and decontamination on sets they were not shaped by
(bench/quality_sets.py builds them from real code and the benchmark files).

Prints one JSON line: per split, per tier, the share of planted rewrites found (recall),
near-dedup pair precision and the false-merge rate of each hard-negative kind, the share of
clean rows removed by decontamination, and - as the baseline in the same run - the same
figures for a plain datasketch loop over raw word 5-grams (near-dedup) and for the paper's
substring rule alone (decontamination).

    .venv/bin/python bench/quality.py                      # dev split (used while tuning)
    .venv/bin/python bench/quality.py --split heldout      # scored only at the end
    .venv/bin/python bench/quality.py --split dev --split heldout --no-baseline
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyarrow as pa  # noqa: E402

import quality_sets  # noqa: E402


def _clusters(ids: list[str], kept: pa.Table, audit: pa.Table) -> dict[str, str]:
    label = {i: i for i in ids}
    for i, c in zip(kept["id"].to_pylist(), kept["cluster_id"].to_pylist()):
        label[i] = c
    for i, d in zip(audit["id"].to_pylist(), audit["duplicate_of"].to_pylist()):
        label[i] = d
    return label


def score_near(rows: list[dict], label: dict[str, str]) -> dict:
    family = {r["id"]: r["family"] for r in rows}
    members = defaultdict(list)
    for i, c in label.items():
        members[c].append(i)
    predicted = true_pairs = 0
    for ids in members.values():
        k = len(ids)
        predicted += k * (k - 1) // 2
        per_family = defaultdict(int)
        for i in ids:
            per_family[family[i]] += 1
        true_pairs += sum(v * (v - 1) // 2 for v in per_family.values())
    by_tier = defaultdict(lambda: [0, 0])
    for r in rows:
        if r["tier"] == "original":
            continue
        hit = label[r["id"]] == label[f"o{r['family']}"]
        by_tier[r["tier"]][0] += hit
        by_tier[r["tier"]][1] += 1
    negatives = {}
    for kind, pairs in quality_sets.hard_negative_pairs(rows).items():
        merged = sum(label[a] == label[b] for a, b in pairs)
        negatives[kind] = {"pairs": len(pairs), "merged": merged, "false_merge_rate": round(merged / max(len(pairs), 1), 4)}
    return {
        "rows": len(rows),
        "precision": round(true_pairs / predicted, 4) if predicted else 1.0,
        "predicted_pairs": predicted,
        "recall": {t: round(h / n, 4) for t, (h, n) in sorted(by_tier.items())},
        "planted": {t: n for t, (h, n) in sorted(by_tier.items())},
        "hard_negatives": negatives,
    }


def run_near(rows: list[dict], workers: int, settings: dict | None = None) -> dict:
    from tasks.dedup.near import NearDedupConfig, near_dedup

    table = pa.table({"id": [r["id"] for r in rows], "problem": [r["problem"] for r in rows],
                      "solution": [r["solution"] for r in rows]})
    t0 = time.perf_counter()
    kept, audit, _ = near_dedup(table, NearDedupConfig(workers=workers, **(settings or {})))
    seconds = time.perf_counter() - t0
    return {**score_near(rows, _clusters(table["id"].to_pylist(), kept, audit)), "seconds": round(seconds, 2)}


def run_near_naive(rows: list[dict], n: int = 5, threshold: float = 0.7, num_perm: int = 128) -> dict:
    """A plain datasketch loop: lower-cased word 5-grams of problem + solution, first match wins."""
    import re

    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    label = {}
    for r in rows:
        words = re.findall(r"\w+", f"{r['problem']}\n{r['solution']}".lower())
        m = MinHash(num_perm=num_perm)
        m.update_batch([" ".join(words[k:k + n]).encode() for k in range(max(len(words) - n + 1, 1))])
        found = lsh.query(m)
        label[r["id"]] = label[min(found)] if found else r["id"]
        lsh.insert(r["id"], m)
    return score_near(rows, label)


def score_decontamination(rows: list[dict], removed: dict[str, str]) -> dict:
    from tasks.decontamination.benchmarks import BenchmarkItem, problem_family

    def family(item_id: str) -> str:
        return problem_family(BenchmarkItem("", item_id, ()))
    by_tier = defaultdict(lambda: [0, 0, 0])
    by_bench = defaultdict(lambda: [0, 0])  # (tier, benchmark) -> found, rows
    for r in rows:
        if r["item"]:
            b = by_bench[(r["tier"], r["item"].split("/")[0].lower())]
            b[0] += r["id"] in removed
            b[1] += 1
        hit = r["id"] in removed
        right = hit and bool(r["item"]) and family(removed[r["id"]]) == family(r["item"])
        t = by_tier[r["tier"]]
        t[0] += hit
        t[1] += 1
        t[2] += right
    out = {}
    for tier, (hit, n, right) in sorted(by_tier.items()):
        key = "false_removal_rate" if tier.startswith("clean") else "recall"
        out[tier] = {key: round(hit / n, 4), "rows": n}
        if not tier.startswith("clean"):
            out[tier]["attributed_to_the_item"] = round(right / n, 4)
            out[tier]["recall_by_benchmark"] = {b: round(h / m, 4) for (t, b), (h, m) in sorted(by_bench.items())
                                                if t == tier}
    clean = [v for k, v in by_tier.items() if k.startswith("clean")]
    out["clean_all"] = {"false_removal_rate": round(sum(c[0] for c in clean) / max(sum(c[1] for c in clean), 1), 4),
                        "rows": sum(c[1] for c in clean)}
    return out


def run_decontamination(rows: list[dict], benchmark_dir: Path, matchers: list[str] | None = None) -> dict:
    from tasks.decontamination.decontaminate import DecontaminationConfig, decontaminate

    table = pa.table({"id": [r["id"] for r in rows], "problem": [r["problem"] for r in rows],
                      "solution": [r["solution"] for r in rows]})
    cfg = DecontaminationConfig(benchmark_dir=str(benchmark_dir), allow_hub=False, workers=1,
                                **({"matchers": matchers} if matchers else {}))
    t0 = time.perf_counter()
    _, audit, stats = decontaminate(table, cfg)
    seconds = time.perf_counter() - t0
    removed = dict(zip(audit["id"].to_pylist(), audit["benchmark_item"].to_pylist()))
    return {**score_decontamination(rows, removed), "seconds": round(seconds, 2),
            "flagged_per_matcher": stats.extra.get("flagged_per_matcher")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", action="append", choices=tuple(quality_sets.SPLIT_SEED))
    ap.add_argument("--benchmark-dir", type=Path, default=Path(os.environ.get("OSSFORGE_BENCHMARK_DIR") or
                                                                quality_sets.DEFAULT_BENCHMARK_DIR))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true", help="skip the datasketch / substring-only baselines")
    ap.add_argument("--only", choices=("near_dedup", "decontamination"))
    ap.add_argument("--near-threshold", type=float, help="NearDedupConfig.threshold (default: the config's)")
    ap.add_argument("--near-ngram", type=int, help="NearDedupConfig.ngram (default: the config's)")
    args = ap.parse_args(argv)
    result = {"bench": "quality"}
    for split in args.split or ["dev"]:
        t0 = time.perf_counter()
        out: dict = {}
        if args.only != "decontamination":
            near_rows = quality_sets.near_dedup_set(split)
            settings = {k: v for k, v in (("threshold", args.near_threshold), ("ngram", args.near_ngram)) if v}
            out["near_dedup"] = run_near(near_rows, args.workers, settings)
            if not args.no_baseline:
                out["near_dedup_baseline_datasketch_words5"] = run_near_naive(near_rows)
        if args.only != "near_dedup":
            dec_rows = quality_sets.decontamination_set(split, args.benchmark_dir)
            out["decontamination"] = run_decontamination(dec_rows, args.benchmark_dir)
            if not args.no_baseline:
                out["decontamination_baseline_substring"] = run_decontamination(dec_rows, args.benchmark_dir,
                                                                                ["substring"])
        out["seconds"] = round(time.perf_counter() - t0, 1)
        result[split] = out
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
