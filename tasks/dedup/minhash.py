"""MinHash signatures of code-and-prose documents, in bulk, compatible with datasketch.

`minhash_signatures` turns texts into an (n, num_perm) array with the permutations of
`datasketch.MinHash(num_perm, seed, scheme=...)`, applied to our own shingle hashes; a row
becomes a `datasketch.LeanMinHash` with `to_lean_minhash`, so rows go into datasketch's
`MinHashLSH` and its `jaccard` estimates agree with ours.

Why not `MinHash.update` per shingle: it does a Python call and a 128-wide numpy
operation per shingle. Here each document costs a few regex passes in Python; tokens, their
hashes, shingle hashes and the permutations are computed for hundreds of documents at once
in numpy, with no Python object per token (see bench/dedup.py for the figures).

Shingles are n-grams of the words (identifiers, keywords, numbers, `.attributes`) of the
normalised text. A shingle's 64-bit hash is a polynomial combination of its
tokens' 64-bit hashes (see `_span_hashes`), finished with the MurmurHash3 64-bit mixer, so it can be computed
for all positions of a batch with array arithmetic. `shingle_hash`/`shingle_hash32` compute
the same value for one shingle (a tuple of tokens): that is the `hashfunc` to give datasketch.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from itertools import chain

import numpy as np

# Bump when tokens, normalisation or shingle hashing change: persisted signatures built
# with another version cannot be compared with new ones.
SHINGLE_VERSION = "words-poly64-2"

# --- datasketch's permutation schemes (datasketch >= 2.0; "legacy" is every earlier version)
SCHEMES = ("affine32", "affine64", "legacy")
DEFAULT_SCHEME = "affine32"  # datasketch 2.x's default: MinHash(num_perm, seed) uses it
_MERSENNE_PRIME = np.uint64((1 << 61) - 1)
_MAX_HASH32 = np.uint64((1 << 32) - 1)

# --- normalisation -------------------------------------------------------------------
# Comments are approximate and language-agnostic on purpose: the text mixes prose with code
# in several languages, and a comment missed or a string clipped only moves a similarity a bit.
_BLOCK_COMMENT = re.compile(rb"/\*.*?\*/", re.S)
# Docstrings are comments too. One pattern per kind, each starting with a literal: Python's
# re engine then jumps between occurrences of the literal instead of trying every position
# (an alternation here, or a leading look-behind, made comment stripping 2x slower).
# "Unrolled" bodies ([^"]* runs) for the same reason; they end at the first closing triple.
_TRIPLE_DOUBLE = re.compile(rb'"""[^"]*(?:"(?!"")[^"]*)*"""')
_TRIPLE_SINGLE = re.compile(rb"'''[^']*(?:'(?!'')[^']*)*'''")
# A line comment starts at line start or after whitespace, so `http://x` and `"#fff"` survive;
# C preprocessor lines and shebangs are code, not comments.
_HASH_COMMENT = re.compile(rb"#(?<!\S#)(?!include\b|define\b|if|endif\b|else\b|pragma\b|!)[^\n]*")
_SLASH_COMMENT = re.compile(rb"//(?<!\S//)[^\n]*")
_CODE_PUNCTUATION = b"(){}[];=<>"
# Tokens are words found in UTF-8 bytes: runs of letters, digits and "_" (non-ASCII bytes
# count as letters, so a token never splits a character). A word right after "." keeps its
# dot: `.append` is an attribute (an API name a rename does not touch), `append` a name.
# Punctuation is not a token: it doubles the token count and the cost, and word n-grams
# already tell documents apart. Tokens are re.findall(rb"\.?[\w\x80-\xff]+"), found two ways:
# `_tokenize` (translate + split, C speed) where token objects are wanted, and `_word_spans`
# (numpy over a whole batch) where only their hashes are; a test keeps the two equal.
_WORD_BYTES = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_." + bytes(range(0x80, 0x100)))
_TO_SPACE = bytes(c if c in _WORD_BYTES else 0x20 for c in range(256))


def _tokenize(data: bytes) -> list[bytes]:
    data = data.translate(_TO_SPACE)
    if b"." in data:
        # Every dot starts a token; a dot not followed by a word character is dropped.
        data = (data.replace(b".", b" .") + b" ").replace(b". ", b"  ")
    return data.split()


_HSPACE = re.compile(r"[ \t\f\v]+")

# Names a rename does not touch: keywords and the commonest builtins of the languages the
# seeds come from. Everything else that looks like an identifier in code becomes "_".
_KEEP_WORDS = frozenset(
    w.lower()
    for w in (
        *keyword.kwlist,
        *getattr(keyword, "softkwlist", []),
        # Python builtins
        "print len range int str float list dict set tuple bool bytes object type isinstance "
        "enumerate zip map filter sorted reversed sum min max abs open super self cls any all "
        "iter next round divmod hash repr format input exception valueerror typeerror keyerror "
        "indexerror runtimeerror staticmethod classmethod property",
        # C, C++, Java, C#, JS/TS, Rust, Go, PHP, Swift, shell keywords and core types
        "auto break case char const continue default do double else enum extern float for goto if "
        "inline int long register return short signed sizeof static struct switch typedef union "
        "unsigned void volatile while bool true false null nullptr new delete this class public "
        "private protected virtual override template typename namespace using std string vector "
        "map include define friend operator throw throws try catch finally final abstract "
        "interface extends implements package import instanceof synchronized transient native "
        "boolean byte let var function const async await yield typeof undefined export from of "
        "readonly declare type keyof number any void never unknown fn mut impl trait pub crate mod "
        "use match loop where dyn ref move self super usize isize u8 u16 u32 u64 i8 i16 i32 i64 "
        "f32 f64 vec option some none ok err result box func go chan defer select fallthrough "
        "struct echo array foreach elseif endif endforeach isset unset die require_once "
        "require include_once guard init deinit extension protocol inout lazy weak unowned "
        "then fi esac done elif local export readonly declare shift exit set unset in "
        "console log system out println printf cout cin endl main args",
    )
    for w in w.split()
)


_KEEP_BYTES = frozenset(w.encode() for w in _KEEP_WORDS)
_IDENT_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_" + bytes(range(0x80, 0x100)))
PLACEHOLDER = b"_"


def _renameable(tok: bytes) -> bool:
    """An identifier a rename could touch: not a keyword, common builtin or `.attribute`."""
    return tok[0] in _IDENT_START and tok not in _KEEP_BYTES


def _strip_comments(text: bytes) -> bytes:
    # No `b"//" in text` guards: the patterns' own literal search is faster than `in` for
    # 2-3 byte needles (measured: 7.0 vs 11.7 us per 2.8 KB document), and a pattern that
    # does not occur leaves the text as it is.
    text = _BLOCK_COMMENT.sub(b" ", text)
    text = _TRIPLE_DOUBLE.sub(b" ", text)
    text = _TRIPLE_SINGLE.sub(b" ", text)
    text = _HASH_COMMENT.sub(b"", text)
    return _SLASH_COMMENT.sub(b"", text)


def strip_comments(text: str) -> str:
    """Drop /* */, triple-quoted docstrings, and # or // line comments (any language, roughly)."""
    return _strip_comments(text.encode()).decode()


def _code_regions(text: bytes) -> list[tuple[bytes, bool]]:
    """Split text into (segment, is_code) parts by Markdown fences.

    A text without fences is all code if it looks like code (at least one code punctuation
    character per two lines), else all prose: canonicalising the words of prose would make
    every problem statement look alike.
    """
    if b"```" not in text:
        lines = text.count(b"\n") + 1 - text.count(b"\n\n")
        punctuation = len(text) - len(text.translate(None, _CODE_PUNCTUATION))
        return [(text, bool(text.strip()) and punctuation * 2 >= lines)]
    # A fence is a line whose first non-blank characters are ```: cut the text at such
    # lines (dropping them); odd-numbered parts sit between an opening and a closing fence.
    parts, start, pos = [], 0, text.find(b"```")
    while pos >= 0:
        line_start = text.rfind(b"\n", 0, pos) + 1
        line_end = text.find(b"\n", pos)
        line_end = len(text) if line_end < 0 else line_end
        if not text[line_start:pos].strip(b" \t"):
            parts.append(text[start:line_start])
            start = line_end + 1
        pos = text.find(b"```", line_end)
    parts.append(text[start:])
    return [(part, i % 2 == 1) for i, part in enumerate(parts)]


def _canonical_tokens(tokens: list[bytes]) -> list[bytes]:
    return [PLACEHOLDER if _renameable(tok) else tok for tok in tokens]


def _segments(text: str, canonicalize_identifiers: bool) -> list[tuple[bytes, bool]]:
    """Normalised UTF-8 text split into (segment, canonicalise-its-identifiers) parts."""
    data = _strip_comments((text or "").lower().encode())
    if not canonicalize_identifiers:
        return [(data, False)]
    return _code_regions(data)


def _tokens_bytes(text: str, canonicalize_identifiers: bool = False) -> list[bytes]:
    tokens: list[bytes] = []
    for segment, is_code in _segments(text, canonicalize_identifiers):
        seg_tokens = _tokenize(segment)
        tokens.extend(_canonical_tokens(seg_tokens) if is_code else seg_tokens)
    return tokens


def normalized_tokens(text: str, canonicalize_identifiers: bool = False) -> list[str]:
    """The token sequence shingles are taken from: lower-cased, comments dropped, and
    (optionally) identifiers in code replaced by "_" so consistent renames do not matter."""
    return [t.decode() for t in _tokens_bytes(text, canonicalize_identifiers)]


def normalize_code(text: str, canonicalize_identifiers: bool = False) -> str:
    """Text as the deduper sees it: no comments, no blank lines, single spaces, lower case.
    With canonicalize_identifiers, code lines become their words with identifiers replaced
    by "_" (what shingles see). Lines are kept (for readability and line-based matchers);
    shingles ignore them."""
    lines = []
    for segment, is_code in _segments(text, canonicalize_identifiers):
        for line in segment.decode().splitlines():
            if is_code:
                line = b" ".join(_canonical_tokens(_tokenize(line.encode()))).decode()
            line = _HSPACE.sub(" ", line).strip()
            if line:
                lines.append(line)
    return "\n".join(lines)


# --- shingle hashes --------------------------------------------------------------------
_MIX_C1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial combination
_S33 = np.uint64(33)


def _fmix64(h: np.ndarray) -> np.ndarray:
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
_WORD_FLAGS = bytes(1 if c in _WORD_BYTES and c != ord(".") else 0 for c in range(256))
_STARTS_IDENTIFIER = np.zeros(256, dtype=bool)
_STARTS_IDENTIFIER[list(_IDENT_START)] = True
_DOT = ord(".")


def _token_buffer(parts: Sequence[bytes]) -> tuple[bytes, np.ndarray]:
    """(buffer, where each part ends): the parts joined by spaces (so tokens never span
    two), with a space before and _PAD zero bytes after, the layout `_word_spans` and
    `_span_hashes` expect."""
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    return b" " + b" ".join(parts) + b" " + bytes(_PAD), np.cumsum(lengths + 1)


def _word_spans(buffer: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the tokens of a `_token_buffer`, the same tokens `_tokenize` finds."""
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
        return _fmix64(acc)


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
_KEEP_SHIFT, _KEEP_TABLE = _keep_table(_token_hashes(sorted(_KEEP_BYTES)))


def _renameable_mask(buffer: bytes, starts: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Vectorised `_renameable`: starts like an identifier and is not a kept word (by hash)."""
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
        full = _fmix64(acc)
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
        return _fmix64(acc)[0]


def shingle_hash(shingle: Sequence[str]) -> int:
    """The 64-bit hash of one shingle (a tuple of tokens), as `shingle_hashes` computes it."""
    return int(_short_hash(_token_hashes([t.encode() for t in shingle])))


def shingle_hash32(shingle: Sequence[str]) -> int:
    """32-bit shingle hash: the `hashfunc` for datasketch's 32-bit schemes."""
    return shingle_hash(shingle) & 0xFFFFFFFF


def shingles(text: str, ngram: int = 5, canonicalize_identifiers: bool = False) -> list[tuple[str, ...]]:
    """The shingles themselves (for tests and for datasketch's own MinHash)."""
    toks = normalized_tokens(text, canonicalize_identifiers)
    if not toks:
        return []
    if len(toks) < ngram:
        return [tuple(toks)]
    return [tuple(toks[i : i + ngram]) for i in range(len(toks) - ngram + 1)]


def shingle_hashes(text: str, ngram: int = 5, canonicalize_identifiers: bool = False) -> np.ndarray:
    """64-bit hashes (uint64) of the token n-grams of the normalised text, in text order
    (duplicates kept; np.unique gives the set)."""
    hashes, _ = batch_shingle_hashes([text], ngram, canonicalize_identifiers)
    return hashes


def batch_shingle_hashes(
    texts: Sequence[str], ngram: int = 5, canonicalize_identifiers: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of many texts at once: (concatenated hashes, per-text counts)."""
    if ngram < 1:
        raise ValueError("ngram must be at least 1")
    segments: list[bytes] = []
    doc_of_segment: list[int] = []
    segment_is_code: list[bool] = []
    for i, text in enumerate(texts):
        for segment, is_code in _segments(text, canonicalize_identifiers):
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


# --- permutations ---------------------------------------------------------------------
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


def _signatures_of_hashes(hashes: np.ndarray, counts: np.ndarray, num_perm: int, seed: int, scheme: str) -> np.ndarray:
    a, b = permutations(num_perm, seed, scheme)
    dtype = signature_dtype(scheme)
    empty = dtype(_MAX_HASH32) if scheme in ("affine32", "legacy") else np.iinfo(np.uint64).max
    sigs = np.full((num_perm, len(counts)), empty, dtype=dtype)  # transposed: rows are permutations
    with np.errstate(over="ignore"):
        if scheme == "affine32":
            mixed = _fmix32(hashes.astype(np.uint32))  # low 32 bits = shingle_hash32
        elif scheme == "affine64":
            mixed = _fmix64(hashes)
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


def _as_texts(chunk) -> list[str]:
    """A chunk is a sequence of str, or an Arrow table whose columns are joined per row by
    newlines (sending Arrow buffers to a worker is cheaper for the parent than Python str)."""
    if not hasattr(chunk, "column_names"):
        return list(chunk)
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = [pc.fill_null(pc.cast(chunk[name], pa.string()), "").to_pylist() for name in chunk.column_names]
    if len(columns) == 1:
        return columns[0]
    return ["\n".join(parts) for parts in zip(*columns)]


def _sendable(chunk):
    """A chunk as it is handed to a worker: a list of str, or an Arrow table that holds only
    its own rows. A sliced table pickles with its parent's whole buffers (a 2,000-row slice
    of a 10,000-row file sent 5x its bytes), so such a table is copied out with `take`."""
    if not hasattr(chunk, "column_names"):
        return list(chunk)
    if chunk.get_total_buffer_size() > 2 * chunk.nbytes:
        return chunk.take(np.arange(chunk.num_rows))
    return chunk


def _signature_chunk(args) -> np.ndarray:
    texts, num_perm, ngram, seed, canonicalize_identifiers, scheme = args
    texts = _as_texts(texts)
    out = np.empty((len(texts), num_perm), dtype=signature_dtype(scheme))
    for lo in range(0, len(texts), _TEXTS_PER_PASS):
        hashes, counts = batch_shingle_hashes(texts[lo : lo + _TEXTS_PER_PASS], ngram, canonicalize_identifiers)
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
    parts = list(signature_chunks(chunks, num_perm, ngram, seed, canonicalize_identifiers, scheme, workers))
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
) -> Iterator[np.ndarray]:
    """Signatures of a stream of text chunks, in order, in `pool` (or `workers` new processes).
    A chunk is a sequence of str or an Arrow table (its columns joined per row by newlines).

    Streaming keeps only a few chunks of text in memory, so a million documents need
    memory for their signatures, not their text.
    """
    args = ((_sendable(c), num_perm, ngram, seed, canonicalize_identifiers, scheme) for c in chunks)
    return map_chunks(_signature_chunk, args, workers, pool)


def _shingle_set_chunk(args) -> list[np.ndarray]:
    texts, ngram, canonicalize_identifiers = args
    texts = _as_texts(texts)
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
    args = ((_sendable(c), ngram, canonicalize_identifiers) for c in chunks)
    return map_chunks(_shingle_set_chunk, args, workers, pool)


@contextmanager
def worker_pool(workers: int) -> Iterator[Executor | None]:
    """A process pool to share between phases (None for one worker: run in-process).

    "spawn", not fork: the caller may be a Prefect flow with threads running, and forking
    a threaded process is unsafe. (As with any spawn pool, a script that calls this at
    import time needs an `if __name__ == "__main__":` guard.)
    """
    if workers <= 1:
        yield None
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        yield pool


def map_chunks(fn, args: Iterable, workers: int = 1, pool: Executor | None = None) -> Iterator:
    """fn(arg) for each arg, in order, with a bounded read-ahead of 2 per worker.

    Uses `pool` if given; else starts `workers` processes, unless there is only one item
    (then starting processes would cost more than it saves).
    """
    args = iter(args)
    if pool is None:
        first = next(args, None)
        second = next(args, None) if first is not None else None
        head = [a for a in (first, second) if a is not None]
        if workers <= 1 or second is None:
            yield from map(fn, chain(head, args))
            return
        with worker_pool(workers) as own:
            yield from map_chunks(fn, chain(head, args), workers, own)
        return
    ahead = 2 * max(getattr(pool, "_max_workers", workers), 1)
    pending = []
    for arg in args:
        pending.append(pool.submit(fn, arg))
        if len(pending) >= ahead:
            yield pending.pop(0).result()
    for fut in pending:
        yield fut.result()


def to_lean_minhash(signature_row, seed: int = 1, scheme: str = DEFAULT_SCHEME):
    """A datasketch LeanMinHash holding one signature row (for MinHashLSH, jaccard, serialize)."""
    from datasketch import LeanMinHash

    return LeanMinHash(seed=seed, hashvalues=np.asarray(signature_row), scheme=scheme)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature positions, row-wise (datasketch's MinHash.jaccard)."""
    return np.mean(np.asarray(sig_a) == np.asarray(sig_b), axis=-1)
