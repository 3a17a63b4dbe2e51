"""LSH over MinHash signatures: which pairs of documents are worth comparing.

Two indexes with the same banding (datasketch's optimal (bands, rows) for the threshold):

- `band_candidate_pairs`: in memory, vectorised (the complete list; near-dedup itself
  clusters without listing pairs, see tasks/dedup/lsh_clusters.py). Each band of each signature becomes one
  64-bit key; sorting the keys puts documents that share a bucket next to each other.
  Memory is 8 bytes per document and band, against hundreds of bytes per bucket entry in
  a dict-of-sets index, which is what keeps a million documents under 2 GB.
- `RedisLSH`: datasketch's own `MinHashLSH` with Redis storage, so several workers (and
  later refreshes) share one index. Keys are row ids; signatures are kept beside the index
  so a candidate found there can be checked without its text.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlparse

import numpy as np

from tasks.core.errors import UserError
from tasks.dedup.minhash import to_lean_minhash

# Buckets up to this size are paired by comparing sorted neighbours (vectorised over all
# buckets); larger ones are paired one bucket at a time. Every bucket gives every pair:
# a shortcut that linked a big bucket's members only to its first member lost duplicates
# that were similar to each other but not to that member.
SMALL_BUCKET = 8


@functools.lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(bands, rows per band) that minimise datasketch's weighted false positive/negative
    probabilities for this threshold: the same call `MinHashLSH(threshold, num_perm)` makes."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, weights[0], weights[1])


def band_keys(sigs: np.ndarray, band: int, rows: int, index: np.ndarray | None = None) -> np.ndarray:
    """One uint64 key per signature (or per row in `index`) for band `band`: a hash of its
    `rows` values."""
    cols = slice(band * rows, (band + 1) * rows)
    part = sigs[:, cols] if index is None else sigs[index, cols]  # copies only this band's columns
    key = np.full(len(part), ((band + 1) * 0x9E3779B97F4A7C15) % (1 << 64), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in range(rows):
            key = (key ^ part[:, col].astype(np.uint64)) * np.uint64(0x100000001B3)  # FNV-style, per column
            key ^= key >> np.uint64(29)
    return key


def band_candidate_pairs(sigs: np.ndarray, bands: int, rows: int, active: np.ndarray | None = None) -> np.ndarray:
    """Unique (i, j), i < j, of rows of `sigs` that share a bucket in some band: every such pair,
    up to identical signatures.

    Quadratic in a bucket's size: near-dedup does not list pairs any more
    (tasks/dedup/lsh_clusters.py judges them as it meets them); this complete list is the
    reference its clusters are tested against, for inputs small enough to list.

    `active` (bool per row) leaves rows out of the index (documents with no tokens).
    A row whose signature equals an earlier row's (templated rows) is paired with that row
    only, which stands for it in the buckets: each pair it stands for has the same MinHash
    estimate, and the copy's edge to it (estimate 1.0) puts both in one cluster. So a family
    of k identical signatures costs k pairs, not k^2 per band; distinct signatures in one
    bucket all meet, however big the bucket.
    """
    index = np.arange(len(sigs)) if active is None else np.flatnonzero(active)
    if len(index) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    index, copies = _collapse_identical(sigs, index)
    found = [copies]
    paired: set[bytes] = set()  # big buckets already paired in full (a family shares many bands)
    for band in range(bands):
        keys = band_keys(sigs, band, rows, index)
        order = np.argsort(keys, kind="stable")  # stable: ties stay in index order
        found.extend(index[pairs] for pairs in _bucket_pairs(keys[order], order, paired))
        del keys
    pairs = np.concatenate(found)
    if not len(pairs):
        return np.zeros((0, 2), dtype=np.int64)
    pairs.sort(axis=1)
    packed = pairs[:, 0].astype(np.int64) << 32 | pairs[:, 1].astype(np.int64)
    packed.sort()  # sort + mask: np.unique's hash path measured 7.3 s against ~0.5 s here on 5M pairs
    packed = packed[np.concatenate(([True], packed[1:] != packed[:-1]))]
    return np.stack([packed >> 32, packed & 0xFFFFFFFF], axis=1)


def _collapse_identical(sigs: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows that stand for their signature, (first, copy) row pairs of identical signatures)."""
    full = band_keys(sigs, 0, sigs.shape[1], index)  # one hash of the whole signature
    order = np.argsort(full, kind="stable")
    first_pos = np.empty(len(order), dtype=np.int64)
    new_group = np.concatenate(([True], full[order][1:] != full[order][:-1]))
    first_pos[order] = order[np.flatnonzero(new_group)[np.cumsum(new_group) - 1]]
    # A hash is not a proof: only a row equal to its group's first row is a copy.
    copy = (first_pos != np.arange(len(index))) & (sigs[index] == sigs[index[first_pos]]).all(axis=1)
    copies = np.stack([index[first_pos[copy]], index[copy]], axis=1).astype(np.int64)
    return index[~copy], copies


def _bucket_pairs(sorted_keys: np.ndarray, order: np.ndarray, paired: set[bytes]) -> list[np.ndarray]:
    """Every pair of positions (in `order`'s numbering) whose keys are equal, given keys sorted.

    A big bucket whose members were all paired already (the same members in an earlier
    band, recorded in `paired`) is skipped: its k^2/2 pairs are not made again per band.
    """
    same_as_prev = sorted_keys[1:] == sorted_keys[:-1]
    if not same_as_prev.any():
        return []
    found = []
    # Small buckets, all at once: each member with its next SMALL_BUCKET - 1 neighbours.
    for d in range(1, SMALL_BUCKET):
        same = sorted_keys[d:] == sorted_keys[:-d]
        if not same.any():
            break
        found.append(np.stack([order[:-d][same], order[d:][same]], axis=1))
    # Big buckets, one at a time: the pairs farther apart than the neighbours above.
    new_group = np.concatenate(([True], ~same_as_prev))
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, len(order)))
    for start, size in zip(starts[sizes > SMALL_BUCKET], sizes[sizes > SMALL_BUCKET]):
        members = order[start : start + size]
        digest = hashlib.blake2b(np.sort(members).tobytes(), digest_size=16).digest()
        if digest in paired:
            continue
        paired.add(digest)
        i, j = np.triu_indices(int(size), SMALL_BUCKET)
        found.append(np.stack([members[i], members[j]], axis=1))
    return found


def parse_redis_url(url: str) -> dict:
    """redis://host:port/db -> redis.Redis keyword arguments (a UserError if malformed)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise UserError(f"--lsh-storage must look like redis://host:port/db, got {url!r}")
    try:
        db = int(parsed.path.strip("/") or 0)
        port = parsed.port or 6379
    except ValueError:
        raise UserError(f"--lsh-storage must look like redis://host:port/db, got {url!r}") from None
    params = {"host": parsed.hostname, "port": port, "db": db}
    if parsed.password:
        params["password"] = parsed.password
    if parsed.username:
        params["username"] = parsed.username
    if parsed.scheme == "rediss":
        params["ssl"] = True
    return params


class RedisLSH:
    """datasketch MinHashLSH on Redis, shared by workers and refreshes.

    The index name (basename) is derived from everything that makes signatures comparable
    (num_perm, seed, scheme, shingling, fields, bands), so indexes built with other settings
    never mix. Signatures are stored in a Redis hash beside the index.
    """

    def __init__(self, url: str, threshold: float, num_perm: int, seed: int, fingerprint: dict, scheme: str):
        import redis
        from datasketch import MinHashLSH

        self.params = parse_redis_url(url)
        self.bands, self.rows = lsh_params(threshold, num_perm)
        ident = json.dumps({**fingerprint, "bands": self.bands, "rows": self.rows}, sort_keys=True)
        self.basename = b"ossforge-neardedup-" + hashlib.sha256(ident.encode()).hexdigest()[:16].encode()
        self.seed, self.scheme = seed, scheme
        self.client = redis.Redis(**self.params)
        try:
            self.client.ping()
        except redis.exceptions.RedisError as exc:
            raise UserError(f"cannot reach Redis at {url}: {exc}") from None
        self.lsh = MinHashLSH(
            num_perm=num_perm,
            params=(self.bands, self.rows),
            storage_config={"type": "redis", "basename": self.basename, "redis": self.params},
        )
        self.sig_key = self.basename + b"_signatures"
        self.dtype = np.uint32 if scheme == "affine32" else np.uint64

    @contextmanager
    def exclusive(self, ttl: float = 30.0, wait: float = 600.0) -> Iterator[None]:
        """Hold the index's Redis lock (one holder across all workers and machines).

        The lock expires `ttl` seconds after its holder stops renewing it (a thread renews
        it every ttl/3 seconds), so a crashed worker blocks the others for at most `ttl`.
        Waits up to `wait` seconds for another holder, then gives up with a UserError.
        """
        lock = self.client.lock(self.basename + b"_lock", timeout=ttl, blocking_timeout=wait, thread_local=False)
        if not lock.acquire():
            raise UserError(f"Redis index {self.basename.decode()} stayed locked by another run for {wait:.0f} s")
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(ttl / 3):
                lock.reacquire()

        renewer = threading.Thread(target=renew, name="redis-lsh-lock", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            lock.release()

    def query_many(self, sigs: np.ndarray) -> list[set[str]]:
        """Keys in the shared index that share a bucket with each signature (one pipeline per band)."""
        import pickle

        found: list[set[str]] = [set() for _ in range(len(sigs))]
        if not len(sigs):
            return found
        for (start, end), table in zip(self.lsh.hashranges, self.lsh.hashtables):
            keys = [self.lsh._H(np.ascontiguousarray(sig[start:end])) for sig in sigs]
            for i, members in enumerate(table.getmany(*keys)):
                found[i].update(pickle.loads(m) for m in members)
        return found

    def signatures(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        raw = self.client.hmget(self.sig_key, list(keys))
        return {k: np.frombuffer(v, dtype=self.dtype) for k, v in zip(keys, raw) if v is not None}

    def insert_many(self, keys: Sequence[str], sigs: np.ndarray) -> int:
        """Insert rows not yet in the index (a row's signature is written after its LSH
        entry, so "has a signature" means "fully inserted"); returns how many were new."""
        keys = list(keys)
        present = []
        for i in range(0, len(keys), 10_000):  # one round trip per 10,000 keys, not per key
            present.extend(self.client.hmget(self.sig_key, keys[i : i + 10_000]))
        new = [(k, s) for k, s, p in zip(keys, sigs, present) if p is None]
        with self.lsh.insertion_session(buffer_size=10_000) as session:
            for key, sig in new:
                session.insert(key, to_lean_minhash(sig, seed=self.seed, scheme=self.scheme), check_duplication=False)
        for i in range(0, len(new), 10_000):
            self.client.hset(self.sig_key, mapping={k: np.asarray(s, self.dtype).tobytes() for k, s in new[i : i + 10_000]})
        return len(new)

    def __len__(self) -> int:
        return self.client.hlen(self.sig_key)
