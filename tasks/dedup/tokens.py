"""The words near-dedup compares: normalised text (comments dropped, lower case) cut into tokens.

Tokens are the words of the text (identifiers, keywords, numbers, `.attributes`); in code,
identifiers a rename could touch may be replaced by a placeholder ("_"), so consistent
renames do not hide a duplicate. Shingles of these tokens, and their hashes, are made in
tasks/dedup/shingles.py; a change here changes them: bump its SHINGLE_VERSION.
"""

from __future__ import annotations

import keyword
import re

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
# `tokenize` (translate + split, C speed) where token objects are wanted, and `_word_spans`
# in tasks/dedup/shingles.py (numpy over a whole batch) where only their hashes are; a test
# keeps the two equal.
WORD_BYTES = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_." + bytes(range(0x80, 0x100)))
_TO_SPACE = bytes(c if c in WORD_BYTES else 0x20 for c in range(256))


def tokenize(data: bytes) -> list[bytes]:
    """The tokens of UTF-8 bytes, as re.findall(rb"\\.?[\\w\\x80-\\xff]+") finds them."""
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


KEPT_WORDS = frozenset(w.encode() for w in _KEEP_WORDS)
IDENTIFIER_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_" + bytes(range(0x80, 0x100)))
PLACEHOLDER = b"_"


def renameable(tok: bytes) -> bool:
    """An identifier a rename could touch: not a keyword, common builtin or `.attribute`."""
    return tok[0] in IDENTIFIER_START and tok not in KEPT_WORDS


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
    return [PLACEHOLDER if renameable(tok) else tok for tok in tokens]


def text_segments(text: str, canonicalize_identifiers: bool) -> list[tuple[bytes, bool]]:
    """Normalised UTF-8 text split into (segment, canonicalise-its-identifiers) parts."""
    data = _strip_comments((text or "").lower().encode())
    if not canonicalize_identifiers:
        return [(data, False)]
    return _code_regions(data)


def _tokens_bytes(text: str, canonicalize_identifiers: bool = False) -> list[bytes]:
    tokens: list[bytes] = []
    for segment, is_code in text_segments(text, canonicalize_identifiers):
        seg_tokens = tokenize(segment)
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
    for segment, is_code in text_segments(text, canonicalize_identifiers):
        for line in segment.decode().splitlines():
            if is_code:
                line = b" ".join(_canonical_tokens(tokenize(line.encode()))).decode()
            line = _HSPACE.sub(" ", line).strip()
            if line:
                lines.append(line)
    return "\n".join(lines)


# --- the code + prose view (canonicalize_identifiers=True) ---------------------------------
# Prose words that say nothing about which problem a text states: English glue and the
# vocabulary every programming task uses ("write a function that returns the list ...").
# Prose is compared as a set of the other words, so reworded glue and reordered sentences
# do not hide a duplicate.
PROSE_STOP_WORDS = frozenset(
    """a an the of to in on for and or is are be been being was were that this these those with as by it its at
    from which into than then there their them they he she his her we you your our us i me my if not no do does
    did can will should would could may might must has have had any all each every some such so also only other
    given write function python program method code return returns returned implement create define input output
    list number numbers string strings value values element elements find check whether how what when where who
    much many example examples e g following below above""".split()
)
# Words that define a function: the name after them is the function's own (renameable);
# a name called elsewhere, `name(`, is kept - a library's API, which no rename touches.
DEFINING_WORDS = frozenset(b"def function fn func fun sub class struct new".split())


# Operators are tokens in code: `a + b` and `a - b` are different programs (prose has none).
OPERATORS = b"+-*/%<>=!&|^~"
