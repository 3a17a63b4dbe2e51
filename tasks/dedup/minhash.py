"""MinHash signatures of code-and-prose documents, in bulk, compatible with datasketch.

`minhash_signatures` turns texts into an (n, num_perm) array with the permutations of
`datasketch.MinHash(num_perm, seed, scheme=...)`, applied to our own shingle hashes; a row
becomes a `datasketch.LeanMinHash` with `to_lean_minhash`, so rows go into datasketch's
`MinHashLSH` and its `jaccard` estimates agree with ours.

Why not `MinHash.update` per shingle: it does a Python call and a 128-wide numpy
operation per shingle. Here each document costs a few regex passes in Python; tokens, their
hashes, shingle hashes and the permutations are computed for hundreds of documents at once
in numpy, with no Python object per token (see bench/dedup.py for the figures).

The parts: tasks/dedup/tokens.py (normalisation, tokens), tasks/dedup/shingles.py (shingle
hashes in bulk, SHINGLE_VERSION), tasks/dedup/workers.py (chunks in worker processes); this
module applies the permutations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor

import numpy as np

from tasks.dedup.shingles import CODE_WEIGHT, batch_shingle_hashes, fmix64
from tasks.dedup.workers import chunk_texts, map_chunks, sendable_chunk

# --- datasketch's permutation schemes (datasketch >= 2.0; "legacy" is every earlier version)
SCHEMES = ("affine32", "affine64", "legacy")
DEFAULT_SCHEME = "affine32"  # datasketch 2.x's default: MinHash(num_perm, seed) uses it
_MERSENNE_PRIME = np.uint64((1 << 61) - 1)
_MAX_HASH32 = np.uint64((1 << 32) - 1)


def permutations(num_perm: int, seed: int = 1, scheme: str = DEFAULT_SCHEME) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) exactly as datasketch.MinHash(num_perm, seed, scheme=scheme) draws them."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = np.array(
            [
                (gen.randint(1, _MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, _MERSENNE_PRIME, dtype=np.uint64))
                for _ in range(num_perm)
            ],
            dtype=np.uint64,
        ).T
        return ab[0], ab[1]
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    width, dtype = (32, np.uint32) if scheme == "affine32" else (64, np.uint64)
    a = gen.randint(0, 1 << (width - 1), num_perm, dtype=dtype) * dtype(2) + dtype(1)
    b = gen.randint(0, 1 << width, num_perm, dtype=dtype)
    return a, b


def signature_dtype(scheme: str = DEFAULT_SCHEME):
    return np.uint32 if scheme == "affine32" else np.uint64


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


# Work in blocks of (permutations x shingles) that stay inside the L2 cache: measured ~4x
# faster than one (shingles x num_perm) pass on 2 KB documents.
_BLOCK_SHINGLES = 4096
_BLOCK_PERMS = 32


def signatures_of_hashes(hashes: np.ndarray, counts: np.ndarray, num_perm: int, seed: int = 1,
                         scheme: str = DEFAULT_SCHEME) -> np.ndarray:
    """Signatures of documents given as their concatenated shingle hashes and per-document counts."""
    return _signatures_of_hashes(hashes, counts, num_perm, seed, scheme)


def _signatures_of_hashes(hashes: np.ndarray, counts: np.ndarray, num_perm: int, seed: int, scheme: str) -> np.ndarray:
    a, b = permutations(num_perm, seed, scheme)
    dtype = signature_dtype(scheme)
    empty = dtype(_MAX_HASH32) if scheme in ("affine32", "legacy") else np.iinfo(np.uint64).max
    sigs = np.full((num_perm, len(counts)), empty, dtype=dtype)  # transposed: rows are permutations
    with np.errstate(over="ignore"):
        if scheme == "affine32":
            mixed = _fmix32(hashes.astype(np.uint32))  # low 32 bits = shingle_hash32
        elif scheme == "affine64":
            mixed = fmix64(hashes)
        else:
            mixed = hashes & _MAX_HASH32
    perms = _BLOCK_PERMS if dtype == np.uint32 else _BLOCK_PERMS // 2
    buf = np.empty((perms, _BLOCK_SHINGLES), dtype=dtype)
    ends = np.cumsum(counts)
    starts = ends - counts
    nonempty = np.flatnonzero(counts > 0)
    pos = 0
    while pos < len(nonempty):
        # Whole documents per block, so each document's min is one reduceat segment.
        lo = starts[nonempty[pos]]
        stop = max(int(np.searchsorted(ends[nonempty], lo + _BLOCK_SHINGLES, side="right")), pos + 1)
        docs = nonempty[pos:stop]
        hi = ends[docs[-1]]
        values = mixed[None, lo:hi]
        seg = starts[docs] - lo
        if hi - lo > buf.shape[1]:
            buf = np.empty((perms, hi - lo), dtype=dtype)
        for p in range(0, num_perm, perms):
            q = min(p + perms, num_perm)
            out = buf[: q - p, : hi - lo]
            with np.errstate(over="ignore"):
                if scheme == "legacy":
                    out = (values * a[p:q, None] + b[p:q, None]) % _MERSENNE_PRIME & _MAX_HASH32
                else:
                    np.multiply(values, a[p:q, None], out=out)
                    np.add(out, b[p:q, None], out=out)
            sigs[p:q, docs] = np.minimum.reduceat(out, seg, axis=1)
        pos = stop
    return np.ascontiguousarray(sigs.T)


# Texts per numpy pass inside a chunk: the token lists of a pass cost ~40 KB per document,
# so passes of this size bound a worker's memory whatever the chunk size.
_TEXTS_PER_PASS = 256


def _signature_chunk(args) -> np.ndarray:
    texts, num_perm, ngram, seed, canonicalize_identifiers, scheme, code_weight = args
    texts = chunk_texts(texts)
    out = np.empty((len(texts), num_perm), dtype=signature_dtype(scheme))
    for lo in range(0, len(texts), _TEXTS_PER_PASS):
        hashes, counts = batch_shingle_hashes(texts[lo : lo + _TEXTS_PER_PASS], ngram, canonicalize_identifiers,
                                              code_weight)
        out[lo : lo + len(counts)] = _signatures_of_hashes(hashes, counts, num_perm, seed, scheme)
    return out


def minhash_signatures(
    texts: Sequence[str],
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
    *,
    canonicalize_identifiers: bool = False,
    scheme: str = DEFAULT_SCHEME,
    workers: int = 1,
    chunk_size: int = 2000,
    code_weight: int = CODE_WEIGHT,
) -> np.ndarray:
    """(len(texts), num_perm) MinHash signatures; row i equals datasketch's
    `MinHash(num_perm, seed, hashfunc=shingle_hash32, scheme=scheme)` updated with the
    shingles of texts[i] (shingle_hash for "affine64"). A text with no tokens gets the empty
    signature (all max values), like an empty datasketch MinHash.

    workers > 1 computes chunks of `chunk_size` texts in that many processes.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    chunks = [texts[i : i + chunk_size] for i in range(0, len(texts), chunk_size)]
    parts = list(signature_chunks(chunks, num_perm, ngram, seed, canonicalize_identifiers, scheme, workers,
                                  code_weight=code_weight))
    if not parts:
        return np.zeros((0, num_perm), dtype=signature_dtype(scheme))
    return np.concatenate(parts)


def signature_chunks(
    chunks: Iterable[Sequence[str]],
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
    canonicalize_identifiers: bool = False,
    scheme: str = DEFAULT_SCHEME,
    workers: int = 1,
    pool: Executor | None = None,
    code_weight: int = CODE_WEIGHT,
) -> Iterator[np.ndarray]:
    """Signatures of a stream of text chunks, in order, in `pool` (or `workers` new processes).
    A chunk is a sequence of str or an Arrow table (its columns joined per row by newlines).

    Streaming keeps only a few chunks of text in memory, so a million documents need
    memory for their signatures, not their text.
    """
    args = ((sendable_chunk(c), num_perm, ngram, seed, canonicalize_identifiers, scheme, code_weight) for c in chunks)
    return map_chunks(_signature_chunk, args, workers, pool)


def to_lean_minhash(signature_row, seed: int = 1, scheme: str = DEFAULT_SCHEME):
    """A datasketch LeanMinHash holding one signature row (for MinHashLSH, jaccard, serialize)."""
    from datasketch import LeanMinHash

    return LeanMinHash(seed=seed, hashvalues=np.asarray(signature_row), scheme=scheme)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature positions, row-wise (datasketch's MinHash.jaccard)."""
    return np.mean(np.asarray(sig_a) == np.asarray(sig_b), axis=-1)
