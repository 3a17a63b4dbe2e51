"""Seed sampling throughput: ossforge's sampler vs the paper's reference method, same corpus.

The baseline is the reference generator's way (ise-uiuc/magicoder generate_data.py):
every document held in memory, `random.choice` of a start line over `splitlines`, a
uniform length, no filtering and no dedup. ossforge re-reads files each pass, checks
every document and snippet and deduplicates, so it is expected to be slower; this shows
by how much. Both run on the same .py files of the standard library, in this process.
Prints ONE JSON line.

    python bench/seeds_sampling.py [--seeds 80000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.seeds.sampling import SeedConfig, sample_seeds  # noqa: E402


def reference(files: list[Path], n: int, seed: int = 976) -> int:
    docs = []
    for path in files:
        try:
            docs.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            pass
    docs = [d for d in docs if d]
    rng = random.Random(seed)
    out = 0
    while out < n:
        rng.shuffle(docs)
        for doc in docs:
            lines = doc.splitlines(keepends=True)
            start = rng.choice(range(len(lines)))
            snippet = "".join(lines[start : start + rng.randint(1, 15)])
            out += bool(snippet)
            if out >= n:
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=80000)
    args = parser.parse_args()

    t = time.perf_counter()
    tables, stats = sample_seeds(SeedConfig(num_seeds=args.seeds), batch_size=1000)
    rows = sum(table.num_rows for table in tables)
    ours = time.perf_counter() - t

    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    t = time.perf_counter()
    # the same usable-file universe, listed the simple way
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    ref_rows = reference(files, args.seeds)
    ref = time.perf_counter() - t

    print(json.dumps({
        "bench": "seeds_sampling",
        "corpus": stats.extra["seed_source"],
        "seeds": rows,
        "ossforge_s": round(ours, 2),
        "ossforge_seeds_per_s": round(rows / ours),
        "reference_s": round(ref, 2),
        "reference_seeds_per_s": round(ref_rows / ref),
        "ossforge_over_reference_time": round(ours / ref, 2),
        "passes": stats.extra["passes"],
        "dropped": dict(stats.dropped),
    }))


if __name__ == "__main__":
    main()
