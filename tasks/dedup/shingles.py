"""Shingle hashes of many documents at once: token n-grams hashed with array arithmetic.

Shingles are n-grams of the tokens of tasks/dedup/tokens.py. A shingle's 64-bit hash is a
polynomial combination of its tokens' 64-bit hashes (see `_span_hashes`), finished with the
MurmurHash3 64-bit mixer, so it can be computed for all positions of a batch with array
arithmetic, with no Python object per token. `shingle_hash`/`shingle_hash32` compute the
same value for one shingle (a tuple of tokens): that is the `hashfunc` to give datasketch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from tasks.dedup.tokens import (
    DEFINING_WORDS,
    IDENTIFIER_START,
    KEPT_WORDS,
    OPERATORS,
    PLACEHOLDER,
    PROSE_STOP_WORDS,
    WORD_BYTES,
    normalized_tokens,
    text_segments,
)
from tasks.dedup.workers import chunk_texts, map_chunks, sendable_chunk

# Bump when tokens, normalisation or shingle hashing change: persisted signatures built
# with another version cannot be compared with new ones.
SHINGLE_VERSION = "code3x-prose1-poly64-3"
CODE_WEIGHT = 3  # copies of each code shingle in the code + prose view (see _code_prose_hashes)

_MIX_C1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial combination
_S33 = np.uint64(33)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, element-wise (a bijection on uint64)."""
    h = h ^ (h >> _S33)
    h = h * _MIX_C1
    h = h ^ (h >> _S33)
    h = h * _MIX_C2
    return h ^ (h >> _S33)


# A token's 64-bit hash comes from its bytes read as little-endian 64-bit words: one gather
# per 8 bytes of token (most tokens fit one word), not a Python object and a hash call per
# token, nor arithmetic per byte of text. hash = fmix64(polynomial of (length, word 0, word 1,
# ...)); two different tokens of the same length up to 8 bytes never collide (fmix64 is a
# bijection).
_PAD = 8  # zero bytes after a token buffer's text, so every token can read whole words
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
_WORD_FLAGS = bytes(1 if c in WORD_BYTES and c != ord(".") else 0 for c in range(256))
_STARTS_IDENTIFIER = np.zeros(256, dtype=bool)
_STARTS_IDENTIFIER[list(IDENTIFIER_START)] = True
_DOT = ord(".")


def _token_buffer(parts: Sequence[bytes]) -> tuple[bytes, np.ndarray]:
    """(buffer, where each part ends): the parts joined by spaces (so tokens never span
    two), with a space before and _PAD zero bytes after, the layout `_word_spans` and
    `_span_hashes` expect."""
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    return b" " + b" ".join(parts) + b" " + bytes(_PAD), np.cumsum(lengths + 1)


def _word_spans(buffer: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the tokens of a `_token_buffer`, the same tokens `tokenize` finds."""
    flags = np.frombuffer(buffer.translate(_WORD_FLAGS), dtype=np.int8)
    edges = flags[1:] - flags[:-1]  # +1 before a word's first byte, -1 before the byte after it
    starts, ends = np.flatnonzero(edges == 1) + 1, np.flatnonzero(edges == -1) + 1
    data = np.frombuffer(buffer, dtype=np.uint8)
    return starts - (data[starts - 1] == _DOT), ends


def _span_hashes(buffer: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """64-bit hashes of the byte spans buffer[starts[i]:ends[i]] of a `_token_buffer`."""
    words = np.ndarray((len(buffer) - 7,), dtype="<u8", buffer=buffer, strides=(1,))  # a word at every byte
    lengths = ends - starts
    with np.errstate(over="ignore"):
        acc = lengths.astype(np.uint64) * _POLY + (words[starts] & _LOW_BYTES[np.minimum(lengths, 8)])
        long = np.flatnonzero(lengths > 8)
        offset = 8
        while len(long):  # the rare tokens longer than 8 bytes: one more word each round
            rest = np.minimum(lengths[long] - offset, 8)
            acc[long] = acc[long] * _POLY + (words[starts[long] + offset] & _LOW_BYTES[rest])
            offset += 8
            long = long[lengths[long] > offset]
        return fmix64(acc)


def _token_hashes(tokens: Sequence[bytes]) -> np.ndarray:
    """Hashes of the given tokens, equal to those `batch_shingle_hashes` computes in bulk."""
    buffer, ends = _token_buffer(tokens)
    return _span_hashes(buffer, ends - np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)), ends)


def _keep_table(hashes: np.ndarray) -> tuple[np.uint64, np.ndarray]:
    """A direct-mapped table of the kept words' hashes: slot = (hash >> shift) & 0xFFFF, with
    a shift under which no two kept words share a slot. One gather per token tells whether
    it is a kept word (a binary search was 10x slower)."""
    for shift in range(48):
        slots = (hashes >> np.uint64(shift)) & np.uint64(0xFFFF)
        if len(np.unique(slots)) == len(hashes):
            table = np.zeros(1 << 16, dtype=np.uint64)
            table[slots] = hashes
            return np.uint64(shift), table
    raise AssertionError("no collision-free slot for the kept words")  # not for ~400 words


_PLACEHOLDER_HASH = _token_hashes([PLACEHOLDER])[0]
_KEEP_SHIFT, _KEEP_TABLE = _keep_table(_token_hashes(sorted(KEPT_WORDS)))


def _renameable_mask(buffer: bytes, starts: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Vectorised `renameable`: starts like an identifier and is not a kept word (by hash)."""
    kept = _KEEP_TABLE[(hashes >> _KEEP_SHIFT) & np.uint64(0xFFFF)] == hashes
    return _STARTS_IDENTIFIER[np.frombuffer(buffer, dtype=np.uint8)[starts]] & ~kept


def _ngram_hashes(tok_hashes: np.ndarray, lengths: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many documents whose token hashes are concatenated.

    Returns (hashes in document order, per-document shingle counts). A document shorter
    than `ngram` tokens has one shingle: all its tokens.
    """
    total = tok_hashes.shape[0]
    doc_of_token = np.repeat(np.arange(len(lengths)), lengths)
    span = max(total - ngram + 1, 0)
    with np.errstate(over="ignore"):
        # h_i = sum_k t[i+k] * P^(n-1-k): Horner over n shifted views, wrapping mod 2^64.
        acc = np.zeros(span, dtype=np.uint64)
        for k in range(ngram):
            acc = acc * _POLY + tok_hashes[k : k + span]
        full = fmix64(acc)
    # A position is a shingle when its first and last token belong to the same document.
    valid = doc_of_token[:span] == doc_of_token[ngram - 1 : ngram - 1 + span]
    hashes = full[valid]
    counts = np.where(lengths >= ngram, lengths - ngram + 1, np.minimum(lengths, 1))
    short = np.flatnonzero((lengths < ngram) & (lengths > 0))
    if len(short):  # splice the short documents' single shingles into document order
        starts = np.cumsum(lengths) - lengths
        extra = np.array([_short_hash(tok_hashes[starts[d] : starts[d] + lengths[d]]) for d in short], np.uint64)
        order = np.argsort(np.concatenate((doc_of_token[:span][valid], short)), kind="stable")
        hashes = np.concatenate((hashes, extra))[order]
    return hashes, counts


def _short_hash(tok_hashes: np.ndarray) -> np.uint64:
    with np.errstate(over="ignore"):
        acc = np.zeros(1, dtype=np.uint64)
        for t in tok_hashes:
            acc = acc * _POLY + t
        return fmix64(acc)[0]


def shingle_hash(shingle: Sequence[str]) -> int:
    """The 64-bit hash of one shingle (a tuple of tokens), as `shingle_hashes` computes it."""
    return int(_short_hash(_token_hashes([t.encode() for t in shingle])))


def shingle_hash32(shingle: Sequence[str]) -> int:
    """32-bit shingle hash: the `hashfunc` for datasketch's 32-bit schemes."""
    return shingle_hash(shingle) & 0xFFFFFFFF


def shingles(text: str, ngram: int = 5, canonicalize_identifiers: bool = False) -> list[tuple[str, ...]]:
    """The shingles themselves (for tests and for datasketch's own MinHash)."""
    if canonicalize_identifiers:
        code, prose = code_prose_tokens(text)
        code_s = [t.decode() for t in code]
        windows = [tuple(code_s[i : i + ngram]) for i in range(len(code_s) - ngram + 1)] or (
            [tuple(code_s)] if code_s else [])
        copies = [(marker.decode(),) + w for marker in _COPY_MARKER_TOKENS for w in windows]
        return copies + [(_PROSE_MARKER_TOKEN.decode(), w.decode()) for w in prose]
    toks = normalized_tokens(text, canonicalize_identifiers)
    if not toks:
        return []
    if len(toks) < ngram:
        return [tuple(toks)]
    return [tuple(toks[i : i + ngram]) for i in range(len(toks) - ngram + 1)]


def shingle_hashes(text: str, ngram: int = 5, canonicalize_identifiers: bool = False,
                   code_weight: int = CODE_WEIGHT) -> np.ndarray:
    """64-bit hashes (uint64) of the token n-grams of the normalised text, in text order
    (duplicates kept; np.unique gives the set)."""
    hashes, _ = batch_shingle_hashes([text], ngram, canonicalize_identifiers, code_weight)
    return hashes


# --- code + prose shingles (canonicalize_identifiers=True) ----------------------------------
# Code and prose change in different ways when a text is rewritten: code keeps its shape
# under renames and reformatting (canonical token n-grams survive), prose is reworded and
# reordered (n-grams of words do not survive, the set of its content words mostly does).
# So code gives token n-grams and prose gives single content words. Each code shingle
# counts CODE_WEIGHT times (as CODE_WEIGHT marked copies), so a changed lead-in sentence
# does not outweigh an unchanged program. Chosen on bench/quality.py's dev sets
# (docs/near_dedup.md): weight 3 and code 4-grams gave heavy-rewrite recall 0.89 at
# Jaccard 0.7 against 0.59 unweighted. (CODE_WEIGHT is defined at the top.)
_COPY_MARKER_TOKENS = [b"\x01code%d" % j for j in range(CODE_WEIGHT)]
_PROSE_MARKER_TOKEN = b"\x01prose"


def _pow_table(n: int) -> np.ndarray:
    return np.array([pow(int(_POLY), k, 1 << 64) for k in range(n + 1)], dtype=np.uint64)


# Token classes of the code + prose view: 1 = word byte ("." apart: see `_word_spans`),
# 2 = operator byte. A token is a run of one class, so `a+=b` is a, +=, b.
_CLASS = bytes(1 if c in WORD_BYTES and c != ord(".") else 2 if c in OPERATORS else 0 for c in range(256))
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\r\n\f\v")] = True
_DIGIT_START = np.zeros(256, dtype=bool)
_DIGIT_START[list(b"0123456789.")] = True  # numbers (example values) and `.attributes` in prose
_NUMBER_START = np.zeros(256, dtype=bool)
_NUMBER_START[list(b"0123456789")] = True
_ZERO_HASH = _token_hashes([b"0"])[0]
_UNDERSCORE = ord("_")
_OPEN_PAREN = ord("(")
_STOP_HASHES = np.sort(_token_hashes(sorted(w.encode() for w in PROSE_STOP_WORDS)))
_DEFINING_HASHES = np.sort(_token_hashes(sorted(DEFINING_WORDS)))
_DOC_SALT = np.uint64(0xD6E8FEB86659FD93)


def _in_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    pos = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[pos] == values


@dataclass
class _CodeProseTokens:
    """Tokens of a batch of texts in the code + prose view, in text order."""

    buffer: bytes
    starts: np.ndarray
    ends: np.ndarray
    hashes: np.ndarray  # canonical: renameable code identifiers carry the placeholder's hash
    doc: np.ndarray
    code: np.ndarray  # token is in code
    canonical: np.ndarray  # code token replaced by the placeholder
    prose_kept: np.ndarray  # prose word that counts (not a stop word, number or code identifier)
    number: np.ndarray  # code token that is a number


def code_prose_token_batch(texts: Sequence[str]) -> _CodeProseTokens:
    """In code: words and operator runs; identifiers become "_" unless kept words or called
    names (`name(` or `name (`, but not right after `def`/`function`/...: a definition is
    renameable). In prose: words, of which stop words, numbers, words with "_" and words
    that are identifiers in the same text's code do not count (a rename reaches the prose
    that names a variable). Array operations over the whole batch, no object per token."""
    segments: list[bytes] = []
    doc_of_segment: list[int] = []
    segment_is_code: list[bool] = []
    for i, text in enumerate(texts):
        for segment, is_code in text_segments(text, True):
            segments.append(segment)
            doc_of_segment.append(i)
            segment_is_code.append(is_code)
    buffer, segment_ends = _token_buffer(segments)
    data = np.frombuffer(buffer, dtype=np.uint8)
    cls = np.frombuffer(buffer.translate(_CLASS), dtype=np.int8)
    change = cls[1:] != cls[:-1]
    starts = np.flatnonzero(change & (cls[1:] != 0)) + 1
    ends = np.flatnonzero(change & (cls[:-1] != 0)) + 1
    is_word = cls[starts] == 1
    starts = starts - (is_word & (data[starts - 1] == ord(".")))  # `.attr` keeps its dot
    segment = np.searchsorted(segment_ends, starts, side="right")
    code = np.array(segment_is_code, dtype=bool)[segment] if len(starts) else np.zeros(0, bool)
    keep = is_word | code  # operators count only in code
    starts, ends, is_word, segment, code = starts[keep], ends[keep], is_word[keep], segment[keep], code[keep]
    doc = np.array(doc_of_segment, dtype=np.int64)[segment] if len(starts) else np.zeros(0, np.int64)
    raw = _span_hashes(buffer, starts, ends)
    # A call: "(" right after the name, or after one or two whitespace bytes.
    nxt = data[ends]
    called = nxt == _OPEN_PAREN
    gap = _SPACE[nxt]
    called[gap] = data[ends[gap] + 1] == _OPEN_PAREN
    gap2 = gap & _SPACE[data[np.minimum(ends + 1, len(data) - 1)]]
    called[gap2] = data[ends[gap2] + 2] == _OPEN_PAREN
    after_definer = np.zeros(len(starts), bool)
    if len(starts) > 1:
        after_definer[1:] = _in_sorted(raw[:-1], _DEFINING_HASHES) & (doc[1:] == doc[:-1])
    renameable = is_word & _renameable_mask(buffer, starts, raw)
    canonical = code & renameable & ~(called & ~after_definer)
    hashes = np.where(canonical, _PLACEHOLDER_HASH, raw)
    # Prose words that count.
    prose_kept = ~code & ~_DIGIT_START[data[starts]]
    idx = np.flatnonzero(prose_kept)
    bad = _in_sorted(raw[idx], _STOP_HASHES)
    underscores = np.flatnonzero(data == _UNDERSCORE)
    if len(underscores):
        bad |= np.searchsorted(underscores, ends[idx]) > np.searchsorted(underscores, starts[idx])
    identifiers = np.flatnonzero(code & renameable)
    if len(identifiers) and len(idx):
        with np.errstate(over="ignore"):
            salt = doc.astype(np.uint64) * _DOC_SALT
            bad |= np.isin(fmix64(raw[idx] + salt[idx]), fmix64(raw[identifiers] + salt[identifiers]))
    prose_kept[idx[bad]] = False
    number = code & is_word & _NUMBER_START[data[starts]]
    return _CodeProseTokens(buffer, starts, ends, hashes, doc, code, canonical, prose_kept, number)


def code_prose_tokens(text: str) -> tuple[list[bytes], list[bytes]]:
    """(code tokens, prose words) of one text as the code + prose shingles see them."""
    t = code_prose_token_batch([text])
    code = [PLACEHOLDER if c else t.buffer[s:e] for s, e, c in zip(t.starts[t.code], t.ends[t.code], t.canonical[t.code])]
    prose = [t.buffer[s:e] for s, e in zip(t.starts[t.prose_kept], t.ends[t.prose_kept])]
    return code, prose


def _code_prose_hashes(texts: Sequence[str], ngram: int, code_weight: int = CODE_WEIGHT,
                       numbers_as_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    return code_prose_shingle_hashes(code_prose_token_batch(texts), len(texts), ngram, code_weight, numbers_as_zero)


def code_prose_shingle_hashes(t: _CodeProseTokens, n_docs: int, ngram: int, code_weight: int = CODE_WEIGHT,
                              numbers_as_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of the code + prose view: hash of (marker, *tokens) as `shingle_hash`
    computes it, i.e. fmix64(marker * P^len + Horner(tokens)), for all texts in bulk. One
    `code_prose_token_batch` can give several views (n-gram sizes, numbers as "0")."""
    hashes = np.where(t.number, _ZERO_HASH, t.hashes) if numbers_as_zero else t.hashes
    tok, doc_of_token = hashes[t.code], t.doc[t.code]
    code_len = np.bincount(doc_of_token, minlength=n_docs).astype(np.int64)
    markers = _token_hashes(_COPY_MARKER_TOKENS + [_PROSE_MARKER_TOKEN])
    powers = _pow_table(ngram)
    parts, docs = [], []
    if tok.shape[0]:
        total = tok.shape[0]
        span = max(total - ngram + 1, 0)
        with np.errstate(over="ignore"):
            acc = np.zeros(span, dtype=np.uint64)
            for k in range(ngram):
                acc = acc * _POLY + tok[k : k + span]
            valid = doc_of_token[:span] == doc_of_token[ngram - 1 : ngram - 1 + span]
            acc, acc_doc = acc[valid], doc_of_token[:span][valid]
            acc_pow = np.full(acc.shape[0], powers[ngram], dtype=np.uint64)
            short = np.flatnonzero((code_len < ngram) & (code_len > 0))
            if len(short):  # a text with fewer code tokens than ngram: one shingle of them all
                starts = np.cumsum(code_len) - code_len
                extra = np.zeros(len(short), dtype=np.uint64)
                for k in range(int(code_len[short].max())):
                    has = code_len[short] > k
                    extra[has] = extra[has] * _POLY + tok[starts[short][has] + k]
                acc = np.concatenate((acc, extra))
                acc_doc = np.concatenate((acc_doc, short))
                acc_pow = np.concatenate((acc_pow, powers[code_len[short]]))
            for j in range(code_weight):
                parts.append(fmix64(markers[j] * acc_pow + acc))
                docs.append(acc_doc)
    if t.prose_kept.any():
        with np.errstate(over="ignore"):
            parts.append(fmix64(markers[-1] * _POLY + t.hashes[t.prose_kept]))
        docs.append(t.doc[t.prose_kept])
    if not parts:
        return np.zeros(0, dtype=np.uint64), np.zeros(n_docs, dtype=np.int64)
    # Group by document without a sort: each part is in document order already, so a part's
    # shingle goes to its document's offset + what earlier parts put there + its rank in its
    # document within the part.
    counts = [np.bincount(d, minlength=n_docs) for d in docs]
    total = np.sum(counts, axis=0).astype(np.int64)
    out = np.empty(int(total.sum()), dtype=np.uint64)
    base = np.cumsum(total) - total
    for part, d, c in zip(parts, docs, counts):
        first = np.cumsum(c) - c  # where this document's run starts within the part
        out[base[d] + np.arange(len(d)) - first[d]] = part
        base = base + c
    return out, total


def batch_shingle_hashes(
    texts: Sequence[str], ngram: int = 5, canonicalize_identifiers: bool = False, code_weight: int = CODE_WEIGHT,
    numbers_as_zero: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many texts at once: (concatenated hashes, per-text counts).
    With canonicalize_identifiers, the code + prose view: each code shingle `code_weight`
    times (1 where only code is compared: the copies then change no similarity, only cost);
    numbers_as_zero makes every number in code "0" (decontamination's containment check)."""
    if ngram < 1:
        raise ValueError("ngram must be at least 1")
    if not 1 <= code_weight <= CODE_WEIGHT:
        raise ValueError(f"code_weight must be between 1 and {CODE_WEIGHT}")
    if canonicalize_identifiers:
        return _code_prose_hashes(texts, ngram, code_weight, numbers_as_zero)
    segments: list[bytes] = []
    doc_of_segment: list[int] = []
    segment_is_code: list[bool] = []
    for i, text in enumerate(texts):
        for segment, is_code in text_segments(text, canonicalize_identifiers):
            segments.append(segment)
            doc_of_segment.append(i)
            segment_is_code.append(is_code)
    buffer, segment_ends = _token_buffer(segments)
    starts, ends = _word_spans(buffer)
    tok_hashes = _span_hashes(buffer, starts, ends)
    # Tokens per segment: where each segment's end falls among the (sorted) token starts.
    per_segment = np.diff(np.searchsorted(starts, segment_ends), prepend=0)
    lengths = np.bincount(np.array(doc_of_segment, dtype=np.int64), weights=per_segment, minlength=len(texts))
    lengths = lengths.astype(np.int64)
    if canonicalize_identifiers and len(starts):
        in_code = np.repeat(np.array(segment_is_code, dtype=bool), per_segment)
        tok_hashes[in_code & _renameable_mask(buffer, starts, tok_hashes)] = _PLACEHOLDER_HASH
    return _ngram_hashes(tok_hashes, lengths, ngram)


def _shingle_set_chunk(args) -> list[np.ndarray]:
    texts, ngram, canonicalize_identifiers = args
    texts = chunk_texts(texts)
    hashes, counts = batch_shingle_hashes(texts, ngram, canonicalize_identifiers)
    return [np.unique(part) for part in np.split(hashes, np.cumsum(counts)[:-1])]


def shingle_set_chunks(
    chunks: Iterable[Sequence[str]],
    ngram: int = 5,
    canonicalize_identifiers: bool = False,
    workers: int = 1,
    pool: Executor | None = None,
) -> Iterator[list[np.ndarray]]:
    """Per text chunk, the sorted unique shingle hashes of each text (for exact Jaccard)."""
    args = ((sendable_chunk(c), ngram, canonicalize_identifiers) for c in chunks)
    return map_chunks(_shingle_set_chunk, args, workers, pool)
