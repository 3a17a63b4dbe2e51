"""Near-duplicate clusters from LSH buckets, in memory linear in the documents.

The clusters are the connected components of "duplicate edges": pairs of documents that
share a bucket in some band and that a judge (MinHash estimate, exact Jaccard near the
threshold) accepts. Listing every pair of every bucket first (`band_candidate_pairs`) is
quadratic in a bucket's size: templated teacher replies put tens of thousands of documents
in one bucket, and a 200,000-seed run ran out of memory (22.5 GB) on those pairs.

Here pairs are judged as they are met and merged into a union-find, and a pair whose two
documents are already in one component is never judged: it cannot change the components.
So the components are exactly those of judging every pair (tests/dedup/test_lsh_clusters.py
compares them with that brute force); what is saved is only work that could not matter.

- Small buckets (up to SMALL_BUCKET members) give their pairs per band, vectorised; pairs
  the estimate cannot settle wait in a buffer until the judge has the rows' shingle sets.
- A big bucket is settled member by member against the members before it. Members that
  joined the bucket's biggest component (the anchor) are represented by any one of them:
  a member linked to one anchor member is in the anchor, and the others are skipped. Only
  a member that belongs to none of the earlier components is compared with all of them,
  which is the work any exact method must do (a pair of distinct clusters is a pair to check).
  Memory per bucket is a few arrays of its size; no pair list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasks.dedup.lsh_index import SMALL_BUCKET, _collapse_identical, band_keys

# Pairs judged per call in a big bucket: small enough that a member that joins the anchor
# early is not compared with the whole anchor, large enough to amortise numpy's overhead.
_CHUNK = 256
# Unsure pairs buffered before they are filtered by component again.
_BUFFER_PAIRS = 1 << 22


class UnionFind:
    """Components over node numbers; `find` and `union_edges` work on arrays."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, nodes: np.ndarray) -> np.ndarray:
        roots = self.parent[nodes]
        while True:
            up = self.parent[roots]
            if np.array_equal(up, roots):
                break
            roots = up
        self.parent[nodes] = roots  # shortens the paths of the nodes asked about
        return roots

    def union_edges(self, edges: np.ndarray) -> int:
        """Merge the components of each edge's two ends; returns how many merges happened."""
        if not len(edges):
            return 0
        a, b = self.find(edges[:, 0]), self.find(edges[:, 1])
        differ = a != b
        if not differ.any():
            return 0
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        a, b = a[differ], b[differ]
        roots, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
        graph = coo_matrix((np.ones(len(a), np.int8), (inverse[: len(a)], inverse[len(a) :])), shape=(len(roots),) * 2)
        n_comp, comp = connected_components(graph, directed=False)
        rep = np.full(n_comp, np.iinfo(np.int64).max)
        np.minimum.at(rep, comp, roots)
        self.parent[roots] = rep[comp]
        return len(roots) - n_comp

    def labels(self) -> np.ndarray:
        """The root of every node (and every path made one step long)."""
        while True:
            up = self.parent[self.parent]
            if np.array_equal(up, self.parent):
                return up
            self.parent = up


@dataclass
class PairJudge:
    """Decides pairs of nodes: duplicate when the MinHash estimate reaches the threshold,
    or, when `margin` is set and the estimate is within it, when `exact` (exact Jaccard of
    the two nodes' shingle sets) does. Nodes below `first_exact` (published rows: no text
    here) are decided by the estimate; a pair of two of them is never an edge (it was
    settled when they were published)."""

    sigs: np.ndarray
    threshold: float
    margin: float | None = None
    first_exact: int = 0
    exact: Callable[[np.ndarray], np.ndarray] | None = None
    judged: int = 0
    exact_checked: int = 0

    def estimate(self, pairs: np.ndarray) -> np.ndarray:
        """Fraction of equal signature positions (datasketch's MinHash.jaccard)."""
        left = self.sigs[pairs[:, 0]]
        # One node against many (a big bucket's member against earlier ones): compare with
        # its row broadcast instead of a copy per pair.
        right = self.sigs[pairs[0, 1]] if len(pairs) and (pairs[:, 1] == pairs[0, 1]).all() else self.sigs[pairs[:, 1]]
        return np.count_nonzero(left == right, axis=1) / self.sigs.shape[1]

    def split(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sure edges, unsure) masks by the estimate alone; counts the pairs as judged."""
        self.judged += len(pairs)
        est = self.estimate(pairs)
        low = np.minimum(pairs[:, 0], pairs[:, 1])
        published = np.maximum(pairs[:, 0], pairs[:, 1]) < self.first_exact
        unsure = np.zeros(len(pairs), bool)
        if self.margin is not None and self.exact is not None:
            unsure = (low >= self.first_exact) & (np.abs(est - self.threshold) <= self.margin)
        return (est >= self.threshold) & ~unsure & ~published, unsure & ~published

    def settle(self, pairs: np.ndarray) -> np.ndarray:
        """Edge mask of pairs already split as unsure (exact Jaccard)."""
        if not len(pairs):
            return np.zeros(0, bool)
        self.exact_checked += len(pairs)
        return self.exact(pairs) >= self.threshold

    def __call__(self, pairs: np.ndarray) -> np.ndarray:
        edge, unsure = self.split(pairs)
        if unsure.any():
            edge[unsure] = self.settle(pairs[unsure])
        return edge


@dataclass
class Forest:
    """Components of the duplicate edges, as edges (node, its root) that span them."""

    edges: np.ndarray
    judged: int
    exact_checked: int
    big_buckets: int
    largest_bucket: int


def lsh_duplicate_forest(
    sigs: np.ndarray,
    bands: int,
    rows: int,
    judge: PairJudge,
    active: np.ndarray | None = None,
    prepare_exact: Callable[[np.ndarray], None] | None = None,
) -> Forest:
    """The components of judge-accepted pairs among rows that share an LSH bucket.

    `prepare_exact(nodes)` is called once, before any exact check, with every node an exact
    check may need (so their shingle sets are read in one pass over the source).
    Identical signatures are collapsed first, as in `band_candidate_pairs`: a copy is paired
    with the first row of its signature, which stands for it in the buckets.
    """
    n = len(sigs)
    uf = UnionFind(n)
    empty = Forest(np.zeros((0, 2), np.int64), 0, 0, 0, 0)
    index = np.arange(n) if active is None else np.flatnonzero(active)
    if len(index) < 2:
        return empty
    index, copies = _collapse_identical(sigs, index)
    unsure = _Buffer()
    _judge_pairs(copies, judge, uf, unsure)
    big: list[np.ndarray] = []
    seen: set[bytes] = set()  # a big bucket with the same members in another band is settled once
    for band in range(bands):
        keys = band_keys(sigs, band, rows, index)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        del keys
        for d in range(1, SMALL_BUCKET):  # every pair of a small bucket; big buckets' near neighbours
            same = sorted_keys[d:] == sorted_keys[:-d]
            if not same.any():
                break
            pairs = np.stack([index[order[:-d][same]], index[order[d:][same]]], axis=1)
            _judge_pairs(pairs, judge, uf, unsure)
        for members in _big_buckets(sorted_keys, order):
            members = np.sort(index[members])
            digest = hashlib.blake2b(members.tobytes(), digest_size=16).digest()
            if digest not in seen:
                seen.add(digest)
                big.append(members)
    wanted = [unsure.pairs().ravel(), *big]
    if prepare_exact is not None and judge.margin is not None and any(len(w) for w in wanted):
        need = np.unique(np.concatenate(wanted))
        prepare_exact(need[need >= judge.first_exact])
    pairs = unsure.pairs()
    pairs = pairs[_apart(uf, pairs)]
    uf.union_edges(pairs[judge.settle(pairs)])
    for members in big:
        _settle_big_bucket(members, judge, uf)
    roots = uf.labels()
    moved = np.flatnonzero(roots != np.arange(n))
    return Forest(
        np.stack([moved, roots[moved]], axis=1),
        judge.judged,
        judge.exact_checked,
        len(big),
        max((len(m) for m in big), default=0),
    )


class _Buffer:
    """Unsure pairs waiting for exact checks (dropped once their ends are connected)."""

    def __init__(self):
        self.parts: list[np.ndarray] = []
        self.size = 0

    def add(self, pairs: np.ndarray, uf: UnionFind) -> None:
        self.parts.append(pairs)
        self.size += len(pairs)
        if self.size > _BUFFER_PAIRS:
            merged = self.pairs()
            merged = merged[_apart(uf, merged)]
            self.parts, self.size = [merged], len(merged)

    def pairs(self) -> np.ndarray:
        if not self.parts:
            return np.zeros((0, 2), np.int64)
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0]


def _apart(uf: UnionFind, pairs: np.ndarray) -> np.ndarray:
    return uf.find(pairs[:, 0]) != uf.find(pairs[:, 1]) if len(pairs) else np.zeros(0, bool)


def _judge_pairs(pairs: np.ndarray, judge: PairJudge, uf: UnionFind, unsure: _Buffer) -> None:
    pairs = pairs[_apart(uf, pairs)]
    if not len(pairs):
        return
    edge, doubt = judge.split(pairs)
    uf.union_edges(pairs[edge])
    if doubt.any():
        unsure.add(pairs[doubt], uf)


def _big_buckets(sorted_keys: np.ndarray, order: np.ndarray):
    """Positions (in `order`'s numbering) of each bucket with more than SMALL_BUCKET members."""
    new_group = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, len(order)))
    for start, size in zip(starts[sizes > SMALL_BUCKET], sizes[sizes > SMALL_BUCKET]):
        yield order[start : start + size]


def _settle_big_bucket(members: np.ndarray, judge: PairJudge, uf: UnionFind) -> None:
    """Judge every pair of the bucket whose ends are not yet connected (see the module doc).

    Members are visited in order; member b is compared with the members before it: first
    with the anchor's, chunk by chunk, until one is an edge (then b is in the anchor and the
    rest of the anchor is skipped); then with every earlier member outside the anchor that
    is not in b's component. `label` holds each member's root, kept equal to the union-find's.
    """
    k = len(members)
    label = uf.find(members)
    values, counts = np.unique(label, return_counts=True)
    if len(values) == 1:
        return  # one component already (another band's bucket, or earlier pairs, joined them)
    count = dict(zip(values.tolist(), counts.tolist()))
    anchor = int(values[np.argmax(counts)])
    anchor_pos = np.empty(k, np.int64)  # earlier members in the anchor: anchor_pos[:n_anchor]
    n_anchor = 0
    outside = np.zeros(0, np.int64)  # earlier members not in the anchor
    for b in range(k):
        own = int(label[b])
        if own != anchor and n_anchor:
            own = _scan(b, anchor_pos[:n_anchor], members, label, judge, uf, count, anchor, stop_on_edge=True)
        if len(outside):
            others = outside[label[outside] != own]
            own = _scan(b, others, members, label, judge, uf, count, anchor, stop_on_edge=False)
            joined = label[outside] == anchor  # components the anchor took in this turn
            if joined.any():
                anchor_pos[n_anchor : n_anchor + joined.sum()] = outside[joined]
                n_anchor += int(joined.sum())
                outside = outside[~joined]
        if own == anchor:
            anchor_pos[n_anchor] = b
            n_anchor += 1
        else:
            outside = np.append(outside, b)
            if count[own] > 2 * count[anchor]:  # a faster-growing component takes over (at most log2(k) times)
                anchor = own
                earlier = np.arange(b + 1)
                now_in = label[: b + 1] == anchor
                n_anchor = int(now_in.sum())
                anchor_pos[:n_anchor] = earlier[now_in]
                outside = earlier[~now_in]


def _scan(b, candidates, members, label, judge, uf, count, anchor, stop_on_edge) -> int:
    """Compare member b with the candidate positions, chunk by chunk, merging components on
    each edge; candidates already in b's component are dropped as it grows. Returns b's root."""
    own = int(label[b])
    while len(candidates):
        part, candidates = candidates[:_CHUNK], candidates[_CHUNK:]
        pairs = np.stack([members[part], np.full(len(part), members[b])], axis=1)
        hits = part[judge(pairs)]
        if not len(hits):
            continue
        own = _merge(b, hits, label, uf, count, anchor)
        if stop_on_edge:
            break
        candidates = candidates[label[candidates] != own]
    return own


def _merge(b, hits, label, uf, count, anchor) -> int:
    """Merge b's component with those of the hit positions; returns the merged root (the
    anchor when it is one of them, else the one with the most members in the bucket)."""
    near = np.append(hits, b)
    roots = set(label[near].tolist())
    keep = anchor if anchor in roots else max(roots, key=lambda r: (count[r], -r))
    for root in roots - {keep}:
        uf.parent[root] = keep
        pos = near[label[near] == root]
        if len(pos) == count[root]:  # all its members are here (a new member joining): no scan
            label[pos] = keep
        else:
            label[label == root] = keep
        count[keep] += count.pop(root)
    return keep
