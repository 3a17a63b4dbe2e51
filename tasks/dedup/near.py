"""Near-duplicate removal: MinHash signatures -> LSH candidates -> Jaccard check -> clusters.

One row per cluster is kept, deterministically: the one with the smallest `seed_index`
(when the table has it), then the smallest `id`. Kept rows get `cluster_id` (the kept
row's id) and `cluster_size`; every other row goes to the audit with the id it duplicates.

Incremental refresh: with `index_dir`, the signatures of rows kept by earlier runs are read
from Parquet files there and join the index first, so a new row that duplicates an already
published one is dropped ("near_duplicate_of_published"); the rows kept now are added as
a new file. With `lsh_storage="redis://..."`, datasketch's MinHashLSH on Redis is the
shared index instead (several workers, or machines, dedup against each other).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, field_validator

from tasks.core.errors import UserError
from tasks.core.config import FingerprintedConfig, operational
from tasks.core.schema import AUDIT_SCHEMA, CLUSTER_ID, CLUSTER_SIZE
from tasks.dedup.lsh_clusters import PairJudge, lsh_duplicate_forest
from tasks.dedup.lsh_index import RedisLSH, lsh_params
from tasks.dedup.minhash import estimated_jaccard, signature_chunks
from tasks.dedup.shingles import SHINGLE_VERSION, shingle_set_chunks
from tasks.dedup.workers import worker_pool
from tasks.core.parquet_io import write_parquet_atomic
from tasks.core.sources import CHUNK_ROWS, joined_texts
from tasks.core.stats import StageStats
from tasks.core.step import StepOutput, run_step

STAGE = "near_dedup"
REASON_DUPLICATE = "near_duplicate"
REASON_PUBLISHED = "near_duplicate_of_published"
SIGNATURE_FILE_PREFIX = "signatures-"
_METADATA_KEY = b"ossforge.minhash"


class NearDedupConfig(FingerprintedConfig):
    """How near is a duplicate, and against what. Defaults follow common practice for code
    (5-gram shingles, 128 permutations, Jaccard 0.7)."""

    threshold: float = Field(0.7, gt=0.0, lt=1.0, description="Jaccard similarity at or above which rows are duplicates")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (more: finer estimates, more memory)")
    ngram: int = Field(5, ge=1, le=32, description="words per shingle")
    seed: int = Field(1, description="MinHash permutation seed (signatures with other seeds do not mix)")
    fields: tuple[str, ...] = Field(("problem", "solution"), description="columns whose text is compared, joined")
    canonicalize_identifiers: bool = Field(
        True, description="replace identifiers in code by one placeholder, so renamed copies match"
    )
    verify_jaccard: bool = Field(
        True,
        description="settle candidates whose MinHash estimate is near the threshold by the exact Jaccard of "
        "their shingle sets (else the estimate decides every candidate)",
    )
    lsh_storage: str | None = operational(None, description="redis://host:port/db: a shared datasketch MinHashLSH index")
    index_dir: str | None = operational(None, description="directory of persisted signatures of earlier versions")
    version: str | None = operational(None, description="name of this run's signature file in index_dir (default: hash of kept ids)")
    workers: int = operational(default_factory=lambda: os.cpu_count() or 1, ge=1, description="signature processes")

    @field_validator("fields")
    @classmethod
    def _some_fields(cls, value):
        if not value:
            raise ValueError("fields must name at least one column")
        return tuple(value)

    def fingerprint(self) -> dict:
        """What makes two signatures comparable (persisted with them, checked on load)."""
        return {
            "num_perm": self.num_perm,
            "seed": self.seed,
            "ngram": self.ngram,
            "fields": list(self.fields),
            "canonicalize_identifiers": self.canonicalize_identifiers,
            "scheme": "affine32",
            "shingles": SHINGLE_VERSION,
        }


def document_texts(table: pa.Table, fields: Sequence[str]) -> list[str]:
    """The compared text of each row: its fields joined by newlines (nulls count as empty)."""
    missing = [f for f in fields if f not in table.column_names]
    if missing:
        raise UserError(f"near-dedup fields {missing} are not columns of the input (columns: {table.column_names})")
    return joined_texts(table, fields)


def _text_columns(chunk: pa.Table, fields: Sequence[str]) -> pa.Table:
    """The compared columns as a table (workers join them, see tasks.dedup.workers.chunk_texts)."""
    missing = [f for f in fields if f not in chunk.column_names]
    if missing:
        raise UserError(f"near-dedup fields {missing} are not columns of the input (columns: {chunk.column_names})")
    return chunk.select(list(fields))


def representative_rank(ids: pa.Array, seed_index: np.ndarray | None) -> np.ndarray:
    """rank[i] = position of row i in keep-preference order: seed_index (if any), then id."""
    keys = [("id", "ascending")]
    columns = {"id": ids}
    if seed_index is not None:
        keys.insert(0, ("seed_index", "ascending"))
        columns["seed_index"] = pa.array(seed_index, pa.int64())
    order = pc.sort_indices(pa.table(columns), sort_keys=keys).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


_PARALLEL_EXACT_ROWS = 20_000


def _exact_jaccard(pairs: np.ndarray, source: RowSource, cfg: NearDedupConfig) -> np.ndarray:
    """Jaccard of the shingle sets of each pair (row numbers of the source)."""
    wanted = np.unique(pairs)
    return ShingleRows(wanted, _shingle_sets(wanted, source, cfg)).jaccard(pairs)


def _shingle_sets(wanted: np.ndarray, source: RowSource, cfg: NearDedupConfig) -> list[np.ndarray]:
    """The shingle set of each wanted row (sorted row numbers): only those rows are re-read,
    their sets taken from the SHINGLES column where rows were shingled ahead, else shingled
    now (in worker processes when there are many)."""
    order: list[np.ndarray] = []  # wanted rows of each chunk sent for shingling, in order
    sets: dict[int, np.ndarray] = {}

    def texts_of_wanted() -> Iterator[pa.Table]:
        offset = 0
        for chunk in source.chunks(columns=(*cfg.fields, SHINGLES)):
            lo, hi = np.searchsorted(wanted, [offset, offset + chunk.num_rows])
            if hi > lo:
                rows = pa.array(wanted[lo:hi] - offset, pa.int64())
                if SHINGLES in chunk.column_names:
                    sets.update(zip(wanted[lo:hi].tolist(), _list_arrays(chunk[SHINGLES].take(rows))))
                else:
                    order.append(wanted[lo:hi])
                    yield _text_columns(chunk.take(rows), cfg.fields)
            offset += chunk.num_rows

    # Starting worker processes costs about a second; fewer rows than this are shingled
    # sooner in this process (~60 us a row).
    workers = cfg.workers if len(wanted) > _PARALLEL_EXACT_ROWS else 1
    for k, chunk_sets in enumerate(
        shingle_set_chunks(texts_of_wanted(), cfg.ngram, cfg.canonicalize_identifiers, workers)
    ):
        sets.update(zip(order[k].tolist(), chunk_sets))
    return [sets.pop(i) for i in wanted.tolist()]  # the dict lets go of each set as it is listed


# Shingle sets computed ahead (in a worker process, as each generation shard lands) travel
# in this column, so the exact-Jaccard check at the end only reads them.
SHINGLES = "_shingles"


def shingle_set_column(table: pa.Table, cfg: NearDedupConfig) -> pa.ListArray:
    """Every row's shingle set (in this process), as a list<uint64> column."""
    sets: list[np.ndarray] = []
    if table.num_rows:
        (sets,) = shingle_set_chunks([_text_columns(table, cfg.fields)], cfg.ngram, cfg.canonicalize_identifiers, 1)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in sets], dtype=np.int64)])
    values = np.concatenate(sets).astype(np.uint64, copy=False) if sets else np.zeros(0, np.uint64)
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(values, pa.uint64()))


def _list_arrays(column) -> list[np.ndarray]:
    """The numpy array of each row of a list column."""
    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = flat.flatten().to_numpy(zero_copy_only=False)
    bounds = np.concatenate([[0], np.cumsum(pc.list_value_length(flat).to_numpy(zero_copy_only=False))])
    return [values[bounds[i] : bounds[i + 1]] for i in range(len(flat))]


class ShingleRows:
    """The shingle sets of some rows (`rows` sorted, each set of unique values) as the rows
    of one sparse 0/1 matrix, so each intersection is a row-wise product done in C: per
    pair in Python (np.intersect1d) it cost ~100 us, which templated data with dense
    duplicate clusters turns into seconds."""

    def __init__(self, rows: np.ndarray, sets: list[np.ndarray]):
        from scipy.sparse import csr_matrix

        self.rows = rows
        self.sizes = np.array([len(x) for x in sets], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(self.sizes)])
        values = np.concatenate(sets) if len(sets) else np.zeros(0, np.uint64)
        # Column numbers by hashing (Arrow's dictionary encoding, int32), not by sorting: no
        # sorted copy of every shingle and no int64 inverse next to them at the peak.
        encoded = pc.dictionary_encode(pa.array(values))
        del values
        columns = encoded.indices.to_numpy(zero_copy_only=False, writable=True)  # sorted in place below
        shape = (len(sets), len(encoded.dictionary))
        del encoded
        self.matrix = csr_matrix((np.ones(len(columns), np.int8), columns, indptr), shape=shape)
        self.matrix.sort_indices()  # each row's columns ascending: one row is searched by many

    def jaccard(self, pairs: np.ndarray, batch: int = 1 << 16) -> np.ndarray:
        left, right = np.searchsorted(self.rows, pairs[:, 0]), np.searchsorted(self.rows, pairs[:, 1])
        if len(pairs) and (right == right[0]).all():
            return self._one_against_many(right[0], left)
        out = np.empty(len(pairs))
        for lo in range(0, len(pairs), batch):
            a, b = left[lo : lo + batch], right[lo : lo + batch]
            inter = np.asarray(self.matrix[a].multiply(self.matrix[b]).sum(axis=1)).ravel()
            union = self.sizes[a] + self.sizes[b] - inter
            out[lo : lo + batch] = np.divide(inter, union, out=np.zeros(len(a)), where=union > 0)
        return out

    def _one_against_many(self, one: int, many: np.ndarray) -> np.ndarray:
        """Jaccard of row `one` with each of `many`: a binary search of the one row's
        sorted columns for all the others' (a near-duplicate check compares one new member
        of a big LSH bucket with a chunk of earlier ones; scipy's per-call overhead, ~1 ms,
        was most of that time)."""
        indptr, indices = self.matrix.indptr, self.matrix.indices
        own = indices[indptr[one] : indptr[one + 1]]
        sizes = self.sizes[many]
        total = int(sizes.sum())
        inter = np.zeros(len(many), np.int64)
        if total and len(own):
            starts = np.repeat(indptr[many] - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
            cols = indices[starts + np.arange(total)]
            found = own[np.minimum(np.searchsorted(own, cols), len(own) - 1)] == cols
            row_of = np.repeat(np.arange(len(many)), sizes)
            inter = np.bincount(row_of, weights=found, minlength=len(many)).astype(np.int64)
        union = self.sizes[one] + sizes - inter
        return np.divide(inter, union, out=np.zeros(len(many)), where=union > 0)


def _pair_estimates(left: np.ndarray, right: np.ndarray, pairs: np.ndarray, batch: int = 1 << 16) -> np.ndarray:
    """MinHash Jaccard estimate of left[i] vs right[j] for each (i, j), in batches so that
    a million pairs do not need two million signature copies at once."""
    out = np.empty(len(pairs))
    for lo in range(0, len(pairs), batch):
        part = pairs[lo : lo + batch]
        out[lo : lo + batch] = estimated_jaccard(left[part[:, 0]], right[part[:, 1]])
    return out


def _collect(chunks: Iterator[np.ndarray], n_rows: int | None, num_perm: int) -> np.ndarray:
    """Stack signature chunks; into one preallocated array when the row count is known
    (a list + concatenate would hold every signature twice at the peak)."""
    if n_rows is None:
        parts = list(chunks)
        return np.concatenate(parts) if parts else np.zeros((0, num_perm), np.uint32)
    sigs = np.empty((n_rows, num_perm), dtype=np.uint32)
    pos = 0
    for part in chunks:
        if pos + len(part) > n_rows:
            raise UserError("the input changed while it was being read")
        sigs[pos : pos + len(part)] = part
        pos += len(part)
    return sigs[:pos]


def _components(n_nodes: int, edges: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
    return connected_components(graph, directed=False)[1]


class RowSource(Protocol):
    """Rows to dedup, read in chunks: the same rows in the same order on every call; with
    `columns`, only those columns (the ones the source has). A source may also offer
    `num_rows() -> int | None` (lets signatures be preallocated)."""

    def chunks(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]: ...


@dataclass
class TableSource:
    table: pa.Table

    def chunks(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        table = self.table if columns is None else self.table.select([c for c in columns if c in self.table.column_names])
        for offset in range(0, table.num_rows, CHUNK_ROWS):
            yield table.slice(offset, CHUNK_ROWS)

    def num_rows(self) -> int:
        return self.table.num_rows


# Per-row decision codes (int8 arrays cost a byte per row, a list of str eight or more).
KEPT, DUPLICATE, OF_PUBLISHED = 0, 1, 2
_REASONS = {DUPLICATE: REASON_DUPLICATE, OF_PUBLISHED: REASON_PUBLISHED}


@dataclass
class DedupPlan:
    """The decision for every row, by position: kept, or a duplicate of which node and why.

    Nodes are numbered published rows first (`n_pub` of them), then the source's rows, then
    rows found in Redis; `outside_ids` names the published and Redis nodes. `figures` and
    `seconds` describe the planning; the counts come from applying it (`step()`).
    """

    ids: pa.Array
    decision: np.ndarray  # int8: KEPT / DUPLICATE / OF_PUBLISHED
    duplicate_of: np.ndarray  # int64 node of the kept (or published) row; -1 when kept
    cluster_size: np.ndarray
    n_pub: int
    outside_ids: list[str]
    figures: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def kept(self) -> np.ndarray:
        return self.decision == KEPT

    def node_id(self, node: int) -> str:
        if node < self.n_pub:
            return self.outside_ids[node]
        if node < self.n_pub + len(self.ids):
            return self.ids[node - self.n_pub].as_py()
        return self.outside_ids[node - len(self.ids)]

    def step(self) -> "NearDedupStep":
        """The plan as a step over the planned rows, fed in order, chunk by chunk."""
        return NearDedupStep(self)

    def new_stats(self) -> StageStats:
        """The stage's stats before any row is applied: planning time and figures, no counts."""
        return StageStats(STAGE, seconds=self.seconds, extra=dict(self.figures))

    def decide_chunk(self, chunk: pa.Table, offset: int) -> StepOutput:
        """Kept rows (with cluster columns) and audit of the chunk that starts at row `offset`."""
        mask = self.decision[offset : offset + chunk.num_rows] == KEPT
        kept = chunk.filter(pa.array(mask))
        for name in (CLUSTER_ID, CLUSTER_SIZE):
            if name in kept.column_names:
                kept = kept.drop_columns([name])
        kept_idx = offset + np.flatnonzero(mask)
        kept = kept.append_column(CLUSTER_ID, pc.cast(self.ids.take(pa.array(kept_idx, pa.int64())), pa.string()))
        kept = kept.append_column(CLUSTER_SIZE, pa.array(self.cluster_size[kept_idx], pa.int32()))
        return StepOutput(kept, self._audit(chunk, offset, ~mask))

    def _audit(self, chunk: pa.Table, offset: int, dropped: np.ndarray) -> pa.Table:
        local = np.flatnonzero(dropped)
        idx = offset + local
        columns = {f.name: pa.nulls(len(idx), f.type) for f in AUDIT_SCHEMA}
        columns["id"] = pc.cast(self.ids.take(pa.array(idx, pa.int64())), pa.string())
        columns["stage"] = pa.array([STAGE] * len(idx), pa.string())
        columns["reason"] = pa.array([_REASONS[int(self.decision[i])] for i in idx], pa.string())
        columns["duplicate_of"] = pa.array([self.node_id(int(self.duplicate_of[i])) for i in idx], pa.string())
        for text_col in ("problem", "solution"):
            if text_col in chunk.column_names:
                columns[text_col] = pc.cast(chunk[text_col].take(pa.array(local, pa.int64())), pa.string())
        return pa.table(columns, schema=AUDIT_SCHEMA)


class NearDedupStep:
    """Applies a plan to the rows it was made from, in the same order (the step contract)."""

    stage = STAGE

    def __init__(self, plan: DedupPlan):
        self.plan = plan
        self.offset = 0

    def apply(self, table: pa.Table) -> StepOutput:
        if self.offset + table.num_rows > len(self.plan.ids):
            raise UserError("the input changed while it was being read")
        out = self.plan.decide_chunk(table, self.offset)
        self.offset += table.num_rows
        return out


def with_singleton_clusters(table: pa.Table) -> pa.Table:
    """Without near-dedup every row is its own cluster of one."""
    return table.append_column(CLUSTER_ID, pc.cast(table["id"], pa.string())).append_column(
        CLUSTER_SIZE, pa.array(np.ones(table.num_rows, np.int32))
    )


def near_dedup(table: pa.Table, cfg: NearDedupConfig | None = None) -> tuple[pa.Table, pa.Table, StageStats]:
    """Keep one row per near-duplicate cluster. Returns (kept rows with cluster_id and
    cluster_size, audit rows of the dropped ones, stats)."""
    plan = plan_near_dedup(TableSource(table), cfg or NearDedupConfig())
    stats = plan.new_stats()
    out = run_step(plan.step(), table, stats)
    return out.kept, out.audit, stats


def plan_near_dedup(source: RowSource, cfg: NearDedupConfig) -> DedupPlan:
    """Decide every row of `source`, holding only signatures and ids (not text) for all rows.

    Reads the source once for signatures and, when some candidates are borderline, once
    more for the text of just those rows (the exact Jaccard check).
    """
    signatures = compute_signatures(source, cfg)
    return decide_clusters(signatures, candidate_edges(signatures, source, cfg), cfg)


# --- phase 1: signatures ------------------------------------------------------------------
@dataclass
class Signatures:
    """One MinHash signature per source row, with the row's id and keep preference."""

    ids: pa.Array
    sigs: np.ndarray  # (rows, num_perm) uint32
    seed_index: np.ndarray | None  # when every row has one: the first kept in a cluster is the earliest seed
    seconds: float
    # LSH (bands, rows per band) when already known: computing them imports datasketch
    # (seconds), which the shard workers did while signing ahead.
    lsh: tuple[int, int] | None = None

    def lsh_params(self, cfg: NearDedupConfig) -> tuple[int, int]:
        return tuple(self.lsh) if self.lsh else lsh_params(cfg.threshold, cfg.num_perm)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def empty(self) -> np.ndarray:
        """Rows with no tokens: never a near-duplicate."""
        return _empty_rows(self.sigs)


def compute_signatures(source: RowSource, cfg: NearDedupConfig) -> Signatures:
    """Read the source once and sign every row (in worker processes when there are many)."""
    started = time.perf_counter()
    id_chunks: list[pa.Array] = []
    seed_index: list[np.ndarray] = []
    has_seed_index: list[bool] = []

    def text_chunks() -> Iterator[pa.Table]:
        for chunk in source.chunks(columns=("id", "seed_index", *cfg.fields)):
            if "id" not in chunk.column_names:
                raise UserError("near-dedup needs an 'id' column to name the row a duplicate points at")
            id_chunks.append(pc.cast(chunk["id"], pa.string()).combine_chunks())
            usable = "seed_index" in chunk.column_names and pa.types.is_integer(chunk.schema.field("seed_index").type)
            has_seed_index.append(usable)
            if usable:
                seed_index.append(pc.fill_null(chunk["seed_index"], np.iinfo(np.int64).max).to_numpy().astype(np.int64))
            yield _text_columns(chunk, cfg.fields)

    n_rows = getattr(source, "num_rows", lambda: None)()
    # Worker processes for the signatures (none for a table that fits one chunk); they exit
    # before the index is built, so their memory and the index's never add up.
    with worker_pool(cfg.workers if n_rows is None or n_rows > CHUNK_ROWS else 1) as pool:
        sigs = _collect(
            signature_chunks(
                text_chunks(), cfg.num_perm, cfg.ngram, cfg.seed, cfg.canonicalize_identifiers, workers=cfg.workers, pool=pool
            ),
            n_rows,
            cfg.num_perm,
        )
    ids = pa.concat_arrays(id_chunks) if id_chunks else pa.array([], pa.string())
    by_seed = bool(has_seed_index) and all(has_seed_index)
    return Signatures(ids, sigs, np.concatenate(seed_index) if by_seed else None, time.perf_counter() - started)


# Signatures computed ahead (in a worker process, as each generation shard lands) travel
# in this column, so the refresh's signature phase only collects them.
MINHASH = "_minhash"


def signature_column(table: pa.Table, cfg: NearDedupConfig) -> pa.FixedSizeListArray:
    """Every row's signature (in this process), as a fixed-size list column."""
    sigs = np.zeros((0, cfg.num_perm), np.uint32)
    if table.num_rows:
        (sigs,) = signature_chunks(
            [_text_columns(table, cfg.fields)], cfg.num_perm, cfg.ngram, cfg.seed, cfg.canonicalize_identifiers,
            workers=1,
        )
    sigs = np.ascontiguousarray(sigs, dtype=np.uint32)
    return pa.FixedSizeListArray.from_arrays(pa.array(sigs.reshape(-1)), cfg.num_perm)


def collect_signatures(source: RowSource, cfg: NearDedupConfig, lsh: tuple[int, int] | None = None) -> Signatures:
    """Signatures from the MINHASH column of rows signed ahead, read chunk by chunk."""
    started = time.perf_counter()
    ids, sigs, seed_index = [], [], []
    for chunk in source.chunks(columns=("id", "seed_index", MINHASH)):
        if MINHASH not in chunk.column_names:
            raise ValueError(f"rows were not signed ahead: no {MINHASH} column")
        ids.append(pc.cast(chunk["id"], pa.string()).combine_chunks())
        flat = chunk[MINHASH].combine_chunks()
        sigs.append(flat.values.to_numpy(zero_copy_only=False).reshape(len(flat), cfg.num_perm))
        seed_index.append(pc.fill_null(chunk["seed_index"], np.iinfo(np.int64).max).to_numpy().astype(np.int64))
    return Signatures(
        pa.concat_arrays(ids) if ids else pa.array([], pa.string()),
        np.concatenate(sigs).astype(np.uint32, copy=False) if sigs else np.zeros((0, cfg.num_perm), np.uint32),
        np.concatenate(seed_index) if seed_index else None,
        time.perf_counter() - started,
        lsh,
    )


# --- phase 2: candidate pairs, checked into duplicate edges -------------------------------
@dataclass
class CandidateEdges:
    """Duplicate edges between nodes: published rows (0..n_pub-1), then the source's rows."""

    edges: np.ndarray  # (k, 2) int64 node pairs that span the clusters of duplicate pairs
    n_pub: int
    pub_ids: list[str]
    candidates: int  # pairs judged (pairs already in one cluster are not)
    exact_checked: int
    lsh_seconds: float  # candidates and their checks, together
    verify_seconds: float
    largest_bucket: int = 0


def candidate_edges(signatures: Signatures, source: RowSource, cfg: NearDedupConfig) -> CandidateEdges:
    """LSH candidates among the source's rows and earlier versions' published rows, kept
    when their (estimated, or for borderline pairs exact) Jaccard reaches the threshold."""
    ids, sigs = signatures.ids, signatures.sigs
    bands, rows = signatures.lsh_params(cfg)
    # Published signatures (earlier versions) come first in the node numbering: nodes
    # 0..P-1 are published rows, P..P+n-1 this source's rows, then rows found in Redis.
    pub_ids, pub_sigs = ([], None) if not cfg.index_dir else load_signatures(
        cfg.index_dir, cfg, exclude_ids=set(ids.to_pylist())
    )
    n_pub = len(pub_ids)
    all_sigs = sigs if n_pub == 0 else np.concatenate([pub_sigs, sigs])
    active = np.concatenate([np.ones(n_pub, bool), ~signatures.empty])

    # Candidates are judged by the MinHash estimate; with verify_jaccard, pairs whose estimate
    # is too close to the threshold to trust (within 4 standard deviations of a
    # 128-permutation estimate: +-0.18) get the exact Jaccard of their shingle sets when both
    # texts are here. Pairs are judged as LSH meets them and never listed in full: a pair
    # already in one cluster is skipped (tasks/dedup/lsh_clusters.py), so a templated bucket
    # of tens of thousands of rows costs memory in proportion to its rows, not its pairs.
    t0 = time.perf_counter()
    shingles: list[ShingleRows] = []

    def prepare_exact(nodes: np.ndarray) -> None:
        rows = nodes - n_pub
        shingles.append(ShingleRows(rows, _shingle_sets(rows, source, cfg)))

    judge = PairJudge(
        all_sigs,
        cfg.threshold,
        margin=4 * np.sqrt(0.25 / cfg.num_perm) if cfg.verify_jaccard else None,
        first_exact=n_pub,
        exact=lambda pairs: shingles[0].jaccard(pairs - n_pub),
    )
    forest = lsh_duplicate_forest(all_sigs, bands, rows, judge, active, prepare_exact)
    seconds = time.perf_counter() - t0
    return CandidateEdges(
        forest.edges, n_pub, pub_ids, forest.judged, forest.exact_checked, seconds, 0.0, forest.largest_bucket
    )


# --- phase 3: clusters and the decision per row --------------------------------------------
def decide_clusters(signatures: Signatures, found: CandidateEdges, cfg: NearDedupConfig) -> DedupPlan:
    """Cluster the duplicate edges (with a shared Redis index's, when there is one), keep one
    row per cluster, and persist the kept rows' signatures for later versions."""
    started = time.perf_counter()
    ids, sigs, n_pub = signatures.ids, signatures.sigs, found.n_pub
    n = len(ids)
    empty = signatures.empty
    rank = representative_rank(ids, signatures.seed_index)
    edges, lsh_seconds = found.edges, found.lsh_seconds

    # A shared Redis index is queried, decided against and added to under its lock: two
    # workers holding copies of each other must not both find the other's missing and keep
    # theirs. Only this short part is serialised; signatures and local checks are done.
    redis_index = None
    if cfg.lsh_storage:
        redis_index = RedisLSH(cfg.lsh_storage, cfg.threshold, cfg.num_perm, cfg.seed, cfg.fingerprint(), "affine32")
    redis_ids: list[str] = []
    redis_candidates = 0
    with redis_index.exclusive() if redis_index is not None else contextlib.nullcontext():
        if redis_index is not None:
            t0 = time.perf_counter()
            redis_pairs, redis_ids, redis_sigs = _redis_candidates(redis_index, ids, sigs, empty)
            redis_candidates = len(redis_pairs)
            keep = _pair_estimates(redis_sigs, sigs, redis_pairs) >= cfg.threshold
            redis_edges = np.stack([redis_pairs[keep, 0] + n_pub + n, redis_pairs[keep, 1] + n_pub], axis=1)
            edges = np.concatenate([edges, redis_edges])
            lsh_seconds += time.perf_counter() - t0

        n_nodes = n_pub + n + len(redis_ids)
        labels = _components(n_nodes, edges) if len(edges) else np.arange(n_nodes)
        decision, duplicate_of, cluster_size = _choose_representatives(labels, n_pub, n, rank)
        kept_idx = np.flatnonzero(decision == KEPT)
        kept_ids = ids.take(pa.array(kept_idx, pa.int64())).to_pylist() if redis_index is not None or cfg.index_dir else []
        if redis_index is not None:
            redis_index.insert_many(kept_ids, sigs[kept_idx])
    if cfg.index_dir:
        persist_signatures(kept_ids, sigs[kept_idx], cfg.index_dir, cfg.version, cfg)

    bands, rows = signatures.lsh_params(cfg)
    sizes = cluster_size[kept_idx]
    figures = {
        "threshold": cfg.threshold,
        "num_perm": cfg.num_perm,
        "bands": bands,
        "rows_per_band": rows,
        "ngram": cfg.ngram,
        "clusters_with_duplicates": int((sizes > 1).sum()),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "candidate_pairs": int(found.candidates + redis_candidates),
        "exact_jaccard_checks": found.exact_checked,
        "duplicate_edges": int(len(edges)),  # edges spanning the clusters, not every duplicate pair
        "largest_bucket": found.largest_bucket,
        "empty_documents": int(empty.sum()),
        "published_signatures": n_pub + len(redis_ids),
        "signature_seconds": round(signatures.seconds, 3),
        "lsh_seconds": round(lsh_seconds, 3),
        "verify_seconds": round(found.verify_seconds, 3),
    }
    seconds = signatures.seconds + found.lsh_seconds + found.verify_seconds + time.perf_counter() - started
    return DedupPlan(ids, decision, duplicate_of, cluster_size, n_pub, found.pub_ids + redis_ids, figures, seconds)


def _choose_representatives(labels: np.ndarray, n_pub: int, n: int, rank: np.ndarray):
    """Per cluster: a published (or Redis) member wins and every new member is its
    duplicate; else the new member with the smallest rank is kept.

    Returns (decision codes, duplicate-of node or -1, cluster size) per source row.
    """
    n_comp = int(labels.max()) + 1 if len(labels) else 0
    none = np.iinfo(np.int64).max
    new_labels = labels[n_pub : n_pub + n]
    outside_nodes = np.concatenate([np.arange(n_pub), np.arange(n_pub + n, len(labels))]).astype(np.int64)
    pub_rep = np.full(n_comp, none, dtype=np.int64)  # smallest published node per cluster
    np.minimum.at(pub_rep, labels[outside_nodes], outside_nodes)
    best_rank = np.full(n_comp, none, dtype=np.int64)
    np.minimum.at(best_rank, new_labels, rank)
    row_of_rank = np.empty(n, dtype=np.int64)
    row_of_rank[rank] = np.arange(n)
    size = np.bincount(new_labels, minlength=n_comp)

    decision = np.full(n, DUPLICATE, dtype=np.int8)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    of_published = pub_rep[new_labels] != none
    kept = ~of_published & (best_rank[new_labels] == rank)
    decision[kept] = KEPT
    decision[of_published] = OF_PUBLISHED
    duplicate_of[of_published] = pub_rep[new_labels[of_published]]
    dup = decision == DUPLICATE
    duplicate_of[dup] = n_pub + row_of_rank[best_rank[new_labels[dup]]]
    return decision, duplicate_of, size[new_labels]


def _empty_rows(sigs: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """Rows whose signature is all max values (texts with no words), a block at a time."""
    top = np.iinfo(sigs.dtype).max
    return np.concatenate([(sigs[lo : lo + block] == top).all(axis=1) for lo in range(0, len(sigs), block)] or
                          [np.zeros(0, bool)])


def _redis_candidates(index: RedisLSH, ids: pa.Array, sigs: np.ndarray, empty: np.ndarray):
    """Pairs (redis row, source row) from the shared index, ids of those redis rows, their signatures."""
    local = set(ids.to_pylist())
    found = index.query_many(sigs)
    redis_ids = sorted({key for i, keys in enumerate(found) if not empty[i] for key in keys} - local)
    pos = {key: k for k, key in enumerate(redis_ids)}
    pairs = [(pos[key], i) for i, keys in enumerate(found) if not empty[i] for key in keys if key in pos]
    stored = index.signatures(redis_ids)
    missing = [key for key in redis_ids if key not in stored]
    if missing:
        raise UserError(f"Redis index {index.basename.decode()} has keys without signatures, e.g. {missing[0]!r}")
    redis_sigs = np.stack([stored[k] for k in redis_ids]) if redis_ids else np.zeros((0, sigs.shape[1]), sigs.dtype)
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), redis_ids, redis_sigs


# --- persisted signatures (incremental refresh) ----------------------------------------
def persist_signatures(
    ids: Sequence[str], sigs: np.ndarray, index_dir: str | os.PathLike, version: str | None, cfg: NearDedupConfig
) -> Path:
    """Write the signatures of published rows as index_dir/signatures-<version>.parquet.

    The file records what the signatures were built with; `load_signatures` refuses files
    built with other settings. The same version overwrites its file (a rerun is idempotent).
    """
    if version is None:
        version = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
    if not version.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError(f"signature version must be letters, digits, '-', '_' or '.', got {version!r}")
    sigs = np.ascontiguousarray(sigs, dtype=np.uint32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(sigs.reshape(-1)), sigs.shape[1] if sigs.ndim == 2 else cfg.num_perm)
    table = pa.table({"id": pa.array(list(ids), pa.string()), "signature": column})
    meta = {**cfg.fingerprint(), "version": version}
    table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(meta).encode()})
    return write_parquet_atomic(table, Path(index_dir) / f"{SIGNATURE_FILE_PREFIX}{version}.parquet")


def load_signatures(
    index_dir: str | os.PathLike, cfg: NearDedupConfig, exclude_ids: set[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """(ids, signatures) of every persisted version in index_dir, oldest file name first.

    Rows whose id is in `exclude_ids` are left out: a row is never its own duplicate (this
    is what makes rerunning a refresh give the same result).
    """
    index_dir = Path(index_dir)
    if index_dir.exists() and not index_dir.is_dir():
        raise UserError(f"index_dir {index_dir} is not a directory")
    want = cfg.fingerprint()
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for path in sorted(index_dir.glob(f"{SIGNATURE_FILE_PREFIX}*.parquet")):
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"cannot read signature file {path}: {str(exc).splitlines()[0]}") from None
        meta = json.loads((table.schema.metadata or {}).get(_METADATA_KEY, b"{}"))
        got = {k: meta.get(k) for k in want}
        if got != want:
            diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
            raise UserError(f"{path} was built with other near-dedup settings (file, now): {diff}")
        file_ids = table["id"].to_pylist()
        sig = table["signature"].combine_chunks().values.to_numpy().reshape(len(file_ids), cfg.num_perm)
        if exclude_ids:
            keep = np.array([i not in exclude_ids for i in file_ids], dtype=bool)
            file_ids = [i for i, k in zip(file_ids, keep) if k]
            sig = sig[keep]
        ids.extend(file_ids)
        parts.append(sig)
    if not parts:
        return [], np.zeros((0, cfg.num_perm), dtype=np.uint32)
    return ids, np.concatenate(parts).astype(np.uint32, copy=False)
