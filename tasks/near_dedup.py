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

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, field_validator

from ossforge.errors import UserError
from ossforge.schema import AUDIT_SCHEMA, CLUSTER_ID, CLUSTER_SIZE
from tasks.lsh_index import RedisLSH, band_candidate_pairs, lsh_params
from tasks.minhash import SHINGLE_VERSION, batch_shingle_hashes, estimated_jaccard, minhash_signatures
from tasks.shards import write_parquet_atomic
from tasks.stats import StageStats

STAGE = "near_dedup"
REASON_DUPLICATE = "near_duplicate"
REASON_PUBLISHED = "near_duplicate_of_published"
SIGNATURE_FILE_PREFIX = "signatures-"
_METADATA_KEY = b"ossforge.minhash"
# Below this many rows, starting worker processes costs more than it saves.
_MIN_ROWS_FOR_WORKERS = 4000


class NearDedupConfig(BaseModel):
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
        description="check LSH candidates by exact Jaccard of their shingle sets (else by the signatures' estimate)",
    )
    lsh_storage: str | None = Field(None, description="redis://host:port/db: a shared datasketch MinHashLSH index")
    index_dir: str | None = Field(None, description="directory of persisted signatures of earlier versions")
    version: str | None = Field(None, description="name of this run's signature file in index_dir (default: hash of kept ids)")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="signature processes")

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
    columns = [pc.fill_null(pc.cast(table[f], pa.string()), "").to_pylist() for f in fields]
    if len(columns) == 1:
        return columns[0]
    return ["\n".join(parts) for parts in zip(*columns)]


def representative_rank(table: pa.Table) -> np.ndarray:
    """rank[i] = position of row i in keep-preference order: seed_index, then id."""
    keys = [("id", "ascending", "at_end")]
    if "seed_index" in table.column_names and pa.types.is_integer(table.schema.field("seed_index").type):
        keys.insert(0, ("seed_index", "ascending", "at_end"))
    order = pc.sort_indices(table.select([k[0] for k in keys]), sort_keys=keys).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _exact_jaccard(pairs: np.ndarray, texts: Sequence[str], cfg: NearDedupConfig) -> np.ndarray:
    """Jaccard of the shingle sets of each pair (only the documents in some pair are shingled)."""
    docs = np.unique(pairs)
    sets: dict[int, np.ndarray] = {}
    for lo in range(0, len(docs), 2000):
        chunk = docs[lo : lo + 2000]
        hashes, counts = batch_shingle_hashes([texts[i] for i in chunk], cfg.ngram, cfg.canonicalize_identifiers)
        for doc, part in zip(chunk, np.split(hashes, np.cumsum(counts)[:-1])):
            sets[int(doc)] = np.unique(part)
    out = np.empty(len(pairs))
    for k, (i, j) in enumerate(pairs):
        a, b = sets[int(i)], sets[int(j)]
        inter = np.intersect1d(a, b, assume_unique=True).size
        out[k] = inter / (a.size + b.size - inter) if (a.size + b.size) else 0.0
    return out


def _components(n_nodes: int, edges: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
    return connected_components(graph, directed=False)[1]


def near_dedup(table: pa.Table, cfg: NearDedupConfig | None = None) -> tuple[pa.Table, pa.Table, StageStats]:
    """Keep one row per near-duplicate cluster. Returns (kept rows with cluster_id and
    cluster_size, audit rows of the dropped ones, stats)."""
    cfg = cfg or NearDedupConfig()
    stats = StageStats(STAGE, rows_in=table.num_rows)
    started = time.perf_counter()
    if "id" not in table.column_names:
        raise UserError("near-dedup needs an 'id' column to name the row a duplicate points at")
    texts = document_texts(table, cfg.fields)
    ids = pc.cast(table["id"], pa.string()).to_pylist()
    n = len(texts)
    bands, rows = lsh_params(cfg.threshold, cfg.num_perm)

    t0 = time.perf_counter()
    workers = cfg.workers if n >= _MIN_ROWS_FOR_WORKERS else 1
    sigs = minhash_signatures(
        texts, cfg.num_perm, cfg.ngram, cfg.seed, canonicalize_identifiers=cfg.canonicalize_identifiers, workers=workers
    )
    signature_seconds = time.perf_counter() - t0
    empty = (sigs == np.iinfo(sigs.dtype).max).all(axis=1)  # no tokens: never a near-duplicate

    # Published signatures (earlier versions) come first in the node numbering: nodes
    # 0..P-1 are published rows, P..P+n-1 this table's rows.
    pub_ids, pub_sigs = load_signatures(cfg.index_dir, cfg, exclude_ids=set(ids)) if cfg.index_dir else ([], None)
    n_pub = len(pub_ids)
    all_sigs = sigs if n_pub == 0 else np.concatenate([pub_sigs, sigs])
    active = np.concatenate([np.ones(n_pub, bool), ~empty])

    t0 = time.perf_counter()
    pairs = band_candidate_pairs(all_sigs, bands, rows, active)
    pairs = pairs[pairs[:, 1] >= n_pub]  # published-published pairs were settled when published
    redis_pairs, redis_ids, redis_sigs = _redis_candidates(cfg, ids, sigs, empty, n_pub) if cfg.lsh_storage else (
        np.zeros((0, 2), np.int64), [], None)
    lsh_seconds = time.perf_counter() - t0

    # Check candidates: exact Jaccard where both texts are here, the estimate otherwise.
    t0 = time.perf_counter()
    candidates = len(pairs) + len(redis_pairs)
    similarity = estimated_jaccard(all_sigs[pairs[:, 0]], all_sigs[pairs[:, 1]]) if len(pairs) else np.zeros(0)
    if cfg.verify_jaccard and len(pairs):
        both_new = pairs[:, 0] >= n_pub
        if both_new.any():
            similarity[both_new] = _exact_jaccard(pairs[both_new] - n_pub, texts, cfg)
    edges = pairs[similarity >= cfg.threshold]
    if len(redis_pairs):
        # Redis rows are numbered after this table's rows.
        est = estimated_jaccard(redis_sigs[redis_pairs[:, 0]], sigs[redis_pairs[:, 1] - n_pub])
        keep = est >= cfg.threshold
        edges = np.concatenate([edges, np.stack([redis_pairs[keep, 0] + n_pub + n, redis_pairs[keep, 1]], axis=1)])
    verify_seconds = time.perf_counter() - t0

    n_redis = len(redis_ids)
    n_nodes = n_pub + n + n_redis
    labels = _components(n_nodes, edges) if len(edges) else np.arange(n_nodes)
    kept_mask, duplicate_of, cluster_size, reasons = _choose_representatives(
        labels, n_pub, n, representative_rank(table), pub_ids + [None] * n + redis_ids, ids
    )

    kept = table.filter(pa.array(kept_mask))
    kept_idx = np.flatnonzero(kept_mask)
    for name in (CLUSTER_ID, CLUSTER_SIZE):
        if name in kept.column_names:
            kept = kept.drop_columns([name])
    kept = kept.append_column(CLUSTER_ID, pa.array([ids[i] for i in kept_idx], pa.string()))
    kept = kept.append_column(CLUSTER_SIZE, pa.array(cluster_size[kept_idx], pa.int32()))
    audit = _audit_table(table, ~kept_mask, ids, duplicate_of, reasons)

    if cfg.lsh_storage:
        RedisLSH(cfg.lsh_storage, cfg.threshold, cfg.num_perm, cfg.seed, cfg.fingerprint(), "affine32").insert_many(
            [ids[i] for i in kept_idx], sigs[kept_idx]
        )
    if cfg.index_dir:
        persist_signatures([ids[i] for i in kept_idx], sigs[kept_idx], cfg.index_dir, cfg.version, cfg)

    stats.rows_out = kept.num_rows
    for reason in (REASON_DUPLICATE, REASON_PUBLISHED):
        count = sum(1 for r in reasons if r == reason)
        if count:
            stats.drop(reason, count)
    sizes = cluster_size[kept_idx]
    stats.extra = {
        "threshold": cfg.threshold,
        "num_perm": cfg.num_perm,
        "bands": bands,
        "rows_per_band": rows,
        "ngram": cfg.ngram,
        "clusters_with_duplicates": int((sizes > 1).sum()),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "candidate_pairs": int(candidates),
        "duplicate_edges": int(len(edges)),
        "empty_documents": int(empty.sum()),
        "published_signatures": n_pub + n_redis,
        "signature_seconds": round(signature_seconds, 3),
        "lsh_seconds": round(lsh_seconds, 3),
        "verify_seconds": round(verify_seconds, 3),
    }
    stats.seconds = time.perf_counter() - started
    return kept, audit, stats


def _choose_representatives(labels, n_pub, n, rank, node_ids, ids):
    """Per cluster: a published member wins (all new members are its duplicates); else the
    new member with the smallest rank is kept."""
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

    of_published = pub_rep[new_labels] != none
    kept = ~of_published & (best_rank[new_labels] == rank)
    duplicate_of: list[str | None] = [None] * n
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(of_published):
        duplicate_of[i], reasons[i] = node_ids[pub_rep[new_labels[i]]], REASON_PUBLISHED
    for i in np.flatnonzero(~of_published & ~kept):
        duplicate_of[i], reasons[i] = ids[row_of_rank[best_rank[new_labels[i]]]], REASON_DUPLICATE
    return kept, duplicate_of, size[new_labels], reasons


def _audit_table(table: pa.Table, dropped: np.ndarray, ids, duplicate_of, reasons) -> pa.Table:
    idx = np.flatnonzero(dropped)
    columns = {name: pa.nulls(len(idx), field.type) for name, field in zip(AUDIT_SCHEMA.names, AUDIT_SCHEMA)}
    columns["id"] = pa.array([ids[i] for i in idx], pa.string())
    columns["stage"] = pa.array([STAGE] * len(idx), pa.string())
    columns["reason"] = pa.array([reasons[i] for i in idx], pa.string())
    columns["duplicate_of"] = pa.array([duplicate_of[i] for i in idx], pa.string())
    for text_col in ("problem", "solution"):
        if text_col in table.column_names:
            columns[text_col] = pc.cast(table[text_col].take(pa.array(idx, pa.int64())), pa.string())
    return pa.table(columns, schema=AUDIT_SCHEMA)


def _redis_candidates(cfg, ids, sigs, empty, n_pub):
    """Pairs (redis row, table node) from the shared index, ids of those redis rows, their signatures."""
    index = RedisLSH(cfg.lsh_storage, cfg.threshold, cfg.num_perm, cfg.seed, cfg.fingerprint(), "affine32")
    local = set(ids)
    found = index.query_many(sigs)
    redis_ids = sorted({key for i, keys in enumerate(found) if not empty[i] for key in keys} - local)
    pos = {key: k for k, key in enumerate(redis_ids)}
    pairs = [(pos[key], n_pub + i) for i, keys in enumerate(found) if not empty[i] for key in keys if key in pos]
    stored = index.signatures(redis_ids)
    missing = [key for key in redis_ids if key not in stored]
    if missing:
        raise UserError(f"Redis index {index.basename.decode()} has keys without signatures, e.g. {missing[0]!r}")
    redis_sigs = np.stack([stored[k] for k in redis_ids]) if redis_ids else np.zeros((0, cfg.num_perm), sigs.dtype)
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
