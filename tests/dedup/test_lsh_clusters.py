"""tasks/dedup/lsh_clusters.py: clusters from LSH buckets without listing every pair.

The reference is the brute force it replaced: every pair of every bucket
(`band_candidate_pairs`), each judged, then connected components. The clusters must be the
same partition; only the number of pairs judged may differ.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tasks.dedup.lsh_clusters import PairJudge, UnionFind, lsh_duplicate_forest
from tasks.dedup.lsh_index import SMALL_BUCKET, band_candidate_pairs


def _partition(n: int, edges: np.ndarray) -> list[int]:
    """Smallest node of each node's component (a canonical name for the partition)."""
    uf = UnionFind(n)
    uf.union_edges(np.asarray(edges, np.int64).reshape(-1, 2))
    roots = uf.labels()
    smallest = np.full(n, n, np.int64)
    np.minimum.at(smallest, roots, np.arange(n))
    return smallest[roots].tolist()


def _brute_force_edges(sigs, bands, rows, threshold, active=None, n_pub=0):
    pairs = band_candidate_pairs(sigs, bands, rows, active)
    pairs = pairs[pairs[:, 1] >= n_pub]
    est = np.mean(sigs[pairs[:, 0]] == sigs[pairs[:, 1]], axis=1)
    return pairs[est >= threshold]


def _bucket_families(seed: int, n_families: int, family: int, outliers: int, shared_bands: int = 2):
    """Signatures whose first `shared_bands` bands are one value for every row (one giant
    bucket per band), made of families of near copies (a cluster each, estimates spread
    around 0.7 so some members link only through others) and outliers."""
    rng = np.random.default_rng(seed)
    bands, rows = 16, 8
    n = n_families * family + outliers
    sigs = rng.integers(0, 2**32, size=(n, bands * rows), dtype=np.uint32)
    for f in range(n_families):
        base = rng.integers(0, 2**32, size=bands * rows, dtype=np.uint32)
        for m in range(family):
            row = f * family + m
            sigs[row] = base
            changed = rng.choice(bands * rows, size=rng.integers(5, 45), replace=False)
            sigs[row, changed] = rng.integers(0, 2**32, size=len(changed), dtype=np.uint32)
    sigs[:, : shared_bands * rows] = sigs[0, : shared_bands * rows]
    order = rng.permutation(n)  # families interleaved in the buckets, outliers anywhere
    return sigs[order], bands, rows


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_forest_equals_brute_force_with_several_clusters_in_giant_buckets(seed):
    sigs, bands, rows = _bucket_families(seed, n_families=6, family=40, outliers=30)
    active = np.ones(len(sigs), bool)
    active[7] = False
    sigs[11] = sigs[12]  # identical signatures: collapsed first, as in the brute force
    judge = PairJudge(sigs, 0.7)
    forest = lsh_duplicate_forest(sigs, bands, rows, judge, active)
    expected = _brute_force_edges(sigs, bands, rows, 0.7, active)
    assert forest.largest_bucket > SMALL_BUCKET
    assert len(expected) > len(forest.edges)  # the brute force found more edges than the forest needs...
    assert _partition(len(sigs), forest.edges) == _partition(len(sigs), expected)  # ...and the same clusters


def test_forest_equals_brute_force_with_published_nodes():
    """Published nodes (first_exact): a pair of two is never an edge, one new row may join them."""
    sigs, bands, rows = _bucket_families(9, n_families=4, family=30, outliers=20)
    n_pub = 50
    judge = PairJudge(sigs, 0.7, first_exact=n_pub)
    forest = lsh_duplicate_forest(sigs, bands, rows, judge)
    expected = _brute_force_edges(sigs, bands, rows, 0.7, n_pub=n_pub)
    assert _partition(len(sigs), forest.edges) == _partition(len(sigs), expected)


def _fake_teacher_table(n: int) -> pa.Table:
    from support.fake_teacher import make_pair

    import tasks.dedup.near as near_module

    source_lines = Path(near_module.__file__).read_text().splitlines()
    lines = [line for line in source_lines if line.strip()]
    problems, solutions = zip(*(make_pair(lines[s % len(lines)], s) for s in range(n)))
    return pa.table({
        "id": [f"r{i:05d}" for i in range(n)], "seed_index": list(range(n)),
        "problem": list(problems), "solution": list(solutions),
    })


def test_near_dedup_clusters_equal_the_all_pairs_clusters_on_templated_replies():
    """The fake teacher's templated replies: big buckets, and most candidates borderline
    (settled by exact Jaccard). The step's clusters equal those of judging every pair of
    every bucket, exactly as candidate generation did before it stopped listing them."""
    from tasks.dedup.near import NearDedupConfig, TableSource, _components, _exact_jaccard, candidate_edges, compute_signatures

    table = _fake_teacher_table(2500)
    cfg = NearDedupConfig(workers=1)
    source = TableSource(table)
    signatures = compute_signatures(source, cfg)
    found = candidate_edges(signatures, source, cfg)
    assert found.largest_bucket > 100 and found.exact_checked > 0

    bands, rows = signatures.lsh_params(cfg)
    pairs = band_candidate_pairs(signatures.sigs, bands, rows, ~signatures.empty)
    similarity = np.mean(signatures.sigs[pairs[:, 0]] == signatures.sigs[pairs[:, 1]], axis=1)
    unsure = np.abs(similarity - cfg.threshold) <= 4 * np.sqrt(0.25 / cfg.num_perm)
    similarity[unsure] = _exact_jaccard(pairs[unsure], source, cfg)
    expected = pairs[similarity >= cfg.threshold]
    assert found.candidates < len(pairs)
    n = table.num_rows
    assert _partition(n, found.edges) == _partition(n, expected)
    assert len(set(_components(n, expected).tolist())) < n // 2  # a real clustering, not all singletons


_MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from tasks.dedup.lsh_clusters import PairJudge, lsh_duplicate_forest

    n, bands, rows = 50_000, 14, 9
    rng = np.random.default_rng(4)
    base = rng.integers(0, 2**32, size=bands * rows, dtype=np.uint32)
    sigs = np.repeat(base[None, :], n, axis=0)
    # Each row: the template with 10 values of its own (a near copy, estimate ~0.85 to the
    # others), and one row in 200 a stranger that shares only the first band.
    changed = rng.integers(rows, bands * rows, size=(n, 10))
    sigs[np.arange(n)[:, None], changed] = rng.integers(0, 2**32, size=(n, 10), dtype=np.uint32)
    strangers = np.arange(0, n, 200)
    sigs[strangers, rows:] = rng.integers(0, 2**32, size=(len(strangers), (bands - 1) * rows), dtype=np.uint32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    forest = lsh_duplicate_forest(sigs, bands, rows, PairJudge(sigs, 0.7))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    roots = set(forest.edges[:, 1].tolist()) | set(range(n)) - set(forest.edges[:, 0].tolist())
    print(json.dumps({{"grew_kb": after - before, "largest_bucket": forest.largest_bucket,
                       "judged": forest.judged, "clusters": len(roots)}}))
    """
)


def test_a_50k_row_bucket_stays_within_a_memory_bound():
    """50,000 rows in one bucket: every pair listed would be 1.25e9 pairs (20 GB as int64);
    the peak RSS of the clustering must grow by less than 300 MB (signatures: 25 MB)."""
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE.format(root=root)], capture_output=True, text=True, check=True, timeout=600
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["largest_bucket"] == 50_000
    assert got["grew_kb"] < 300 * 1024, got
    assert got["clusters"] == 1 + 250  # the near copies are one cluster; each stranger is alone
    assert got["judged"] < 50_000 * 500  # nowhere near all 1.25e9 pairs
