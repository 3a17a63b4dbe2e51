"""tasks/dedup/minhash.py, shingles.py, tokens.py: normalisation, shingle hashes, and signatures equal to datasketch's own."""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from tasks.dedup.minhash import SCHEMES, minhash_signatures, to_lean_minhash
from tasks.dedup.shingles import shingle_hash, shingle_hash32, shingle_hashes, shingles
from tasks.dedup.tokens import normalize_code, normalized_tokens

TEXTS = [
    "def add(a, b):\n    # add two numbers\n    return a + b  # done\n",
    "x",
    "",
    "Write a function that reverses a list in place. http://example.com/#anchor",
    "a b c d",
    "Problem text.\n```python\ndef bar(x):\n    '''Double it.'''\n    return x.append(2)\n```\nMore prose /* not code */.",
    "int main() {\n  /* block\n comment */\n  int n = 3; // line\n  return n;\n}\n",
]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("canon", [False, True])
def test_signature_equals_datasketch_minhash(scheme, canon):
    sigs = minhash_signatures(TEXTS, num_perm=64, ngram=3, seed=7, canonicalize_identifiers=canon, scheme=scheme)
    assert sigs.shape == (len(TEXTS), 64)
    hashfunc = shingle_hash if scheme == "affine64" else shingle_hash32
    for text, row in zip(TEXTS, sigs):
        ref = MinHash(num_perm=64, seed=7, hashfunc=hashfunc, scheme=scheme)
        ref.update_batch(shingles(text, 3, canon))
        assert np.array_equal(ref.hashvalues, row), text
        lean = to_lean_minhash(row, seed=7, scheme=scheme)
        assert lean.jaccard(ref) == 1.0


def test_default_matches_datasketch_defaults_and_lsh_accepts_rows():
    a = "def mean(xs):\n    total = sum(xs)\n    return total / len(xs)\n" * 3
    b = a.replace("total", "acc")
    sigs = minhash_signatures([a, b], canonicalize_identifiers=True)
    ref = MinHash(hashfunc=shingle_hash32)  # datasketch's default num_perm=128, seed=1, scheme
    ref.update_batch(shingles(a, 5, True))
    assert np.array_equal(ref.hashvalues, sigs[0])
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    lsh.insert("a", to_lean_minhash(sigs[0]))
    assert lsh.query(to_lean_minhash(sigs[1])) == ["a"]


def test_batch_equals_one_by_one_and_chunking_and_workers():
    texts = TEXTS * 5
    whole = minhash_signatures(texts, canonicalize_identifiers=True)
    chunked = minhash_signatures(texts, canonicalize_identifiers=True, chunk_size=3)
    parallel = minhash_signatures(texts, canonicalize_identifiers=True, chunk_size=4, workers=2)
    single = np.stack([minhash_signatures([t], canonicalize_identifiers=True)[0] for t in texts])
    assert np.array_equal(whole, chunked) and np.array_equal(whole, single) and np.array_equal(whole, parallel)


def test_shingle_hashes_are_uint64_of_each_shingle():
    text = TEXTS[0] * 2
    hashes = shingle_hashes(text, ngram=4)
    assert hashes.dtype == np.uint64
    assert hashes.tolist() == [shingle_hash(s) for s in shingles(text, 4)]
    assert shingle_hashes("", 5).size == 0
    assert shingle_hashes("one two", 5).size == 1  # shorter than n: one shingle of all tokens


def test_empty_text_gets_empty_signature():
    sig = minhash_signatures([""], num_perm=16)[0]
    assert (sig == np.iinfo(np.uint32).max).all()


def test_normalisation_strips_comments_and_canonicalises_code_only():
    code = normalize_code(TEXTS[0], canonicalize_identifiers=True)
    assert code == "def _ _ _\nreturn _ _"
    assert "http" in normalize_code(TEXTS[3])  # a URL is not a // comment
    mixed = normalized_tokens(TEXTS[5], canonicalize_identifiers=True)
    assert mixed[:2] == ["problem", "text"]  # prose keeps its words
    assert "double" not in mixed  # docstring dropped
    assert ".append" in mixed and "bar" not in mixed  # attribute kept, name canonicalised
    c = normalize_code(TEXTS[6])
    assert "block" not in c and "line" not in c and "int n = 3;" in c
    renamed = TEXTS[0].replace("a", "left").replace("# add two numbers", "# sum")
    assert normalized_tokens(renamed, True) == normalized_tokens(TEXTS[0], True)


def test_band_candidate_pairs_equals_brute_force_bucket_pairs():
    from itertools import combinations

    from tasks.dedup.lsh_index import SMALL_BUCKET, band_candidate_pairs

    rng = np.random.default_rng(3)
    sigs = rng.integers(0, 4, size=(60, 12), dtype=np.uint32)  # tiny alphabet: many shared buckets
    sigs[:20] = sigs[0]  # one bucket bigger than SMALL_BUCKET in every band
    active = np.ones(60, bool)
    active[5] = False
    bands, rows = 4, 3
    got = {tuple(p) for p in band_candidate_pairs(sigs, bands, rows, active).tolist()}
    expected_small, big = set(), set()
    for b in range(bands):
        buckets = {}
        for i in np.flatnonzero(active):
            buckets.setdefault(sigs[i, b * rows : (b + 1) * rows].tobytes(), []).append(int(i))
        for members in buckets.values():
            (expected_small if len(members) <= SMALL_BUCKET else big).update(combinations(members, 2))
    assert expected_small <= got <= expected_small | big  # small buckets: every pair; big: a subset
    assert all(5 not in p for p in got)
    # A big bucket still links all its members (through its first member).
    assert {(0, j) for j in range(1, 20) if j != 5} <= got


def test_both_tokenizers_equal_the_regex_that_defines_tokens():
    import random
    import re

    from tasks.dedup.shingles import _token_buffer, _word_spans
    from tasks.dedup.tokens import tokenize

    rng = random.Random(0)
    alphabet = "ab_Z09 .\n\t()[]{};:,'\"#/*-+=é—ü..x"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))).encode()
        expected = re.findall(rb"\.?[\w\x80-\xff]+", text)
        assert tokenize(text) == expected, text
        buffer, _ = _token_buffer([text])
        starts, ends = _word_spans(buffer)
        assert [buffer[a:b] for a, b in zip(starts, ends)] == expected, text


def test_bulk_token_hashes_and_keyword_check_equal_the_per_token_ones():
    from tasks.dedup.shingles import _renameable_mask, _span_hashes, _token_buffer, _token_hashes, _word_spans
    from tasks.dedup.tokens import renameable, tokenize

    text = ("for item in self.items:  x_1 = len(é_name) + 0x1f; return .5 import numpy as np "
            "a_very_long_identifier_of_more_than_three_words = 12345678 + 123456789 + 1234567890123456789").encode()
    buffer, _ = _token_buffer([text])
    starts, ends = _word_spans(buffer)
    tokens = tokenize(text)
    bulk = _span_hashes(buffer, starts, ends)
    assert bulk.tolist() == _token_hashes(tokens).tolist()
    assert len(set(bulk.tolist())) == len(set(tokens))  # distinct tokens, distinct hashes
    assert _renameable_mask(buffer, starts, bulk).tolist() == [renameable(t) for t in tokens]
    # Tokens that differ only after their 8th or 16th byte hash differently.
    variants = [b"abcdefgh", b"abcdefghi", b"abcdefghj", b"abcdefgh12345678", b"abcdefgh12345679", b"abcdefgh123456789"]
    assert len(set(_token_hashes(variants).tolist())) == len(variants)


def test_a_big_planted_cluster_loses_no_duplicate_pair():
    """Issue 14: buckets larger than SMALL_BUCKET gave only pairs with their first member and
    near neighbours. A family of 41 rows that share 8 of 14 bands (boilerplate: similar, not
    duplicates, ~0.56) hides 20 true near-duplicate pairs 20 places apart, which differ in
    every other band: before, none of them was ever compared, so near-dedup kept both."""
    from itertools import combinations

    from tasks.dedup.lsh_index import SMALL_BUCKET, band_candidate_pairs, lsh_params

    rng = np.random.default_rng(14)
    bands, rows = lsh_params(0.7, 128)
    assert (bands, rows) == (14, 9)
    shared = 8 * rows  # bands 0-7: one bucket of 41 in each
    n = 42
    sigs = rng.integers(0, 2**32, size=(n, 128), dtype=np.uint32)
    sigs[:, :shared] = sigs[0, :shared]
    for i in range(1, 21):  # row i + 20 is row i with one value changed in each of bands 8-13
        sigs[i + 20] = sigs[i]
        sigs[i + 20, [shared + b * rows for b in range(bands - 8)]] ^= 1
    sigs[41] = sigs[40]  # identical signatures: paired with the first, which carries their pairs

    def estimate(a, b):
        return float(np.mean(sigs[a] == sigs[b]))

    duplicates = {(i, i + 20) for i in range(1, 21)}
    assert all(estimate(*p) > 0.9 for p in duplicates) and all(estimate(0, j) < 0.6 for j in range(1, n))
    got = {tuple(p) for p in band_candidate_pairs(sigs, bands, rows).tolist()}
    assert duplicates <= got  # before: none of the 20
    assert (40, 41) in got
    distinct = range(41)
    assert set(combinations(distinct, 2)) <= got  # every pair of distinct signatures in the bucket
    assert {p for p in got if 41 in p} == {(40, 41)}  # the copy only with its first
    assert n > SMALL_BUCKET
