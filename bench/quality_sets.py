"""Evaluation sets for near-dedup and decontamination, built from real material with
rewrites written as a person (or a teacher LLM) would make them - not from the matcher's
own view of text, so the figures say how the matchers do on data they were not shaped by.

Material:
- code: functions of this interpreter's standard library and of packages installed in the
  venv (Python via `ast`; JavaScript, C and C++ files shipped inside packages, functions
  found by their header and matching braces). The problem text of a document is the
  function's docstring or leading comment, framed by a lead-in sentence; the solution is the
  code in a Markdown fence plus a closing sentence - the shape of an OSS-Instruct row.
- benchmarks: the files in the benchmark directory (default /work/shared/benchmarks; read
  there, never copied): HumanEval, MBPP (test ids 11-510), GSM8K test.
- clean near misses: MBPP problems outside the test split and outside sanitized MBPP /
  MBPP+ (the same style and topics as the benchmark, but not benchmark items).

Rewrite classes (one function each, below): comments changed, identifiers renamed
(one / a third / all, consistently in code and prose), lead-in sentence changed, prose
sentences reworded with a synonym table and reordered, re-indentation / brace style /
operator spacing, line wrapping, docstring edits, example values changed, independent
adjacent statements swapped. Near-dedup tiers combine them: light, heavy, format,
docstring, reorder, mixed (everything). Hard negatives: sibling functions of one file,
functions of one API family (the same name in different modules), template problems (the
same generated problem sentence, different code).

Splits: "dev" and "heldout" use disjoint source files and disjoint benchmark items
(by a stable hash), and different random seeds.

    .venv/bin/python bench/quality_sets.py --split dev --out /tmp/q   # writes the sets as JSONL
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import json
import keyword
import random
import re
import sys
import sysconfig
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BENCHMARK_DIR = Path("/work/shared/benchmarks")
SPLIT_SEED = {"dev": 11, "heldout": 29}


def split_of(key: str) -> str:
    """Stable assignment of a source file / benchmark item to one split."""
    return "dev" if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 2 == 0 else "heldout"


# --- real code --------------------------------------------------------------------------


@dataclass
class Function:
    lang: str  # python, javascript, c, cpp
    path: str
    name: str
    code: str  # the function's source, without its docstring (Python)
    prose: str  # docstring / leading comment, '' when none
    params: list[str] = field(default_factory=list)
    locals: list[str] = field(default_factory=list)  # names assigned inside (renameable)


def _python_files(split: str) -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = ROOT / ".venv/lib/python3.11/site-packages"
    files = sorted(p for p in stdlib.glob("*.py"))
    files += sorted(p for p in stdlib.glob("*/*.py") if "test" not in p.parts and "idlelib" not in p.parts)
    for pkg in ("click", "attr", "dateutil", "yaml", "jinja2", "packaging", "requests", "httpx", "rich", "typer",
                "anyio", "pydantic", "datasketch", "sqlalchemy", "alembic", "fsspec", "tenacity", "docker"):
        files += sorted(p for p in (site / pkg).rglob("*.py") if "tests" not in p.parts)[:60]
    return [f for f in files if split_of(str(f.name) + str(f.parent.name)) == split]


def _brace_files(split: str) -> list[tuple[str, Path]]:
    site = ROOT / ".venv/lib/python3.11/site-packages"
    out = []
    for path in sorted(site.rglob("*")):
        suffix = path.suffix
        lang = {".js": "javascript", ".c": "c", ".cpp": "cpp", ".cc": "cpp", ".h": "c"}.get(suffix)
        if lang is None or "ui_v2_build" in path.parts or "ui-build" in path.parts or path.name.endswith(".min.js"):
            continue
        if not path.is_file() or not 1500 < path.stat().st_size < 400_000:
            continue
        if split_of(path.name + path.parent.name) == split:
            out.append((lang, path))
    return out


def _python_functions(path: Path) -> list[Function]:
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    lines = source.splitlines()
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.end_lineno is None:
            continue
        start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        chunk = lines[start - 1: node.end_lineno]
        indent = min((len(l) - len(l.lstrip()) for l in chunk if l.strip()), default=0)
        chunk = [l[indent:] for l in chunk]
        doc = ast.get_docstring(node) or ""
        body = node.body
        if doc and isinstance(body[0], ast.Expr) and body[0].end_lineno:
            d0, d1 = body[0].lineno - start, body[0].end_lineno - start
            chunk = chunk[:d0] + chunk[d1 + 1:]
        code = "\n".join(chunk).rstrip()
        n_lines = sum(1 for l in chunk if l.strip())
        if not 6 <= n_lines <= 45:
            continue
        params = [a.arg for a in node.args.args + node.args.kwonlyargs if a.arg not in ("self", "cls")]
        stored = []
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store) and sub.id not in stored:
                stored.append(sub.id)
        out.append(Function("python", str(path), node.name, code, doc.strip(), params, stored))
    return out


_C_KEYWORDS = set(
    """auto break case char const continue default do double else enum extern float for goto if inline int long
    register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
    bool true false nullptr class public private protected template typename namespace using virtual override new
    delete this throw try catch operator size_t uint8_t uint16_t uint32_t uint64_t int8_t int16_t int32_t int64_t
    function var let const async await yield of in instanceof typeof null undefined export import from default
    constexpr noexcept std""".split()
)
_JS_HEADER = re.compile(r"^(?:export\s+)?(?:async\s+)?function\s*\*?\s*(\w+)\s*\(([^)]*)\)\s*\{|"
                        r"^\s{0,4}(?:static\s+|async\s+)*(\w+)\s*\(([^)]*)\)\s*\{", re.M)
_C_HEADER = re.compile(r"^(?:[A-Za-z_][\w:<>,\s\*&]*?[\s\*&])(\w+)\s*\(([^;{)]*)\)\s*(?:const\s*)?\n?\{", re.M)
_DECL = re.compile(r"\b(?:let|const|var|int|float|double|char|long|size_t|auto|bool|unsigned|int64_t|int32_t|"
                   r"uint32_t|uint64_t|Py_ssize_t|PyObject\s*\*)\s*[\*&]?\s*([A-Za-z_]\w*)")


def _brace_end(text: str, open_at: int) -> int | None:
    depth, i, n = 0, open_at, len(text)
    while i < n:
        c = text[i]
        if c in "\"'`":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = j
        elif text.startswith("//", i):
            i = text.find("\n", i)
            if i < 0:
                return None
        elif text.startswith("/*", i):
            i = text.find("*/", i)
            if i < 0:
                return None
            i += 1
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


_LEADING_COMMENT = re.compile(r"((?:[ \t]*(?://[^\n]*|/\*(?:[^*]|\*(?!/))*\*/)[ \t]*\n)+)\s*$")


def _comment_prose(comment: str) -> str:
    text = re.sub(r"/\*+|\*+/|^\s*\*|^\s*//+", " ", comment, flags=re.M)
    text = re.sub(r"@\w+", " ", text)
    return " ".join(text.split())


def _brace_functions(lang: str, path: Path) -> list[Function]:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return []
    if "Generated by Cython" in text[:2000] or text.count("\n") < 20:
        return []
    header = _JS_HEADER if lang == "javascript" else _C_HEADER
    out = []
    for m in header.finditer(text):
        name = m.group(1) or (m.group(3) if m.lastindex and m.lastindex >= 3 else None)
        params_text = m.group(2) if m.group(1) else (m.group(4) or "")
        if not name or name in _C_KEYWORDS or name in ("if", "for", "while", "switch", "catch"):
            continue
        end = _brace_end(text, m.end() - 1)
        if end is None:
            continue
        code = text[m.start(): end + 1]
        indent = len(code) - len(code.lstrip(" "))
        code = "\n".join(l[indent:] if l[:indent].strip() == "" else l for l in code.splitlines())
        n_lines = sum(1 for l in code.splitlines() if l.strip())
        if not 6 <= n_lines <= 45:
            continue
        before = text[max(0, m.start() - 1500): m.start()]
        cm = _LEADING_COMMENT.search(before)
        prose = _comment_prose(cm.group(1)) if cm else ""
        params = [p for p in (re.findall(r"([A-Za-z_]\w*)\s*(?:=[^,]*)?$", part.strip()) for part in
                              params_text.split(",")) for p in p if p not in _C_KEYWORDS]
        local = [v for v in dict.fromkeys(_DECL.findall(code)) if v not in _C_KEYWORDS]
        out.append(Function(lang, str(path), name, code, prose, params, local))
    return out


def _dedupe_functions(funcs: list[Function]) -> list[Function]:
    # Identical code in two places is a genuine duplicate, not a negative: keep one of each.
    seen, out = set(), []
    for f in funcs:
        key = re.sub(r"\s+", "", f.code)
        if key in seen:
            continue
        seen.add(key)
        out.append(f)
    return out


def real_functions(split: str, rng: random.Random, max_python: int = 2600, max_other: int = 900) -> list[Function]:
    py = [f for p in _python_files(split) for f in _python_functions(p)]
    other = [f for lang, p in _brace_files(split) for f in _brace_functions(lang, p)]
    py, other = _dedupe_functions(py), _dedupe_functions(other)
    rng.shuffle(py)
    rng.shuffle(other)
    return py[:max_python] + other[:max_other]


# --- documents ----------------------------------------------------------------------------

LEAD_INS = [
    "You are building a small utility module for an internal tool.",
    "A colleague asked you to help with part of a larger code base.",
    "Consider the following programming task.",
    "In this exercise you will write one self-contained function.",
    "Your team maintains a library and needs a new helper.",
    "This problem comes from a real project's code base.",
    "Imagine you are contributing to an open-source package.",
    "Here is a task taken from day-to-day engineering work.",
]
CLOSINGS = [
    "The function above handles the cases described in the problem.",
    "This solution keeps the behaviour described in the task.",
    "The implementation follows the description step by step.",
    "",
]
FENCE = {"python": "python", "javascript": "javascript", "c": "c", "cpp": "cpp"}
LANG_TITLE = {"python": "Python", "javascript": "JavaScript", "c": "C", "cpp": "C++"}


def template_prose(f: Function) -> str:
    args = ", ".join(f.params) or "no arguments"
    return f"Implement the {LANG_TITLE[f.lang]} function `{f.name}` taking {args}, as described."


def make_document(f: Function, lead: str, closing: str, prose: str | None = None, code: str | None = None,
                  mapping: dict[str, str] | None = None) -> dict:
    prose = f.prose if prose is None else prose
    code = f.code if code is None else code
    sig = f"Implement it as `{(mapping or {}).get(f.name, f.name)}` in {LANG_TITLE[f.lang]}."
    problem = "\n\n".join(p for p in (lead, prose or template_prose(f), sig) if p)
    solution = f"```{FENCE[f.lang]}\n{code}\n```" + (f"\n\n{closing}" if closing else "")
    return {"problem": problem, "solution": solution}


# --- rewrite rules --------------------------------------------------------------------------
# Written from how people and LLMs rewrite text, not from how any matcher reads it.

SYNONYMS = {
    "return": ["give back", "yield", "produce"], "returns": ["gives back", "yields", "produces"],
    "given": ["provided", "supplied", "specified"], "list": ["sequence", "array", "collection"],
    "number": ["value", "figure", "count"], "numbers": ["values", "figures", "integers"],
    "string": ["text", "character sequence", "str value"], "strings": ["texts", "character sequences"],
    "function": ["routine", "procedure", "helper"], "write": ["create", "implement", "code"],
    "find": ["determine", "locate", "compute"], "check": ["verify", "test", "determine"],
    "whether": ["if"], "compute": ["calculate", "work out", "determine"], "calculate": ["compute", "work out"],
    "get": ["obtain", "fetch", "retrieve"], "set": ["assign", "configure"], "create": ["build", "make", "construct"],
    "remove": ["delete", "drop", "strip"], "add": ["append", "insert", "include"], "count": ["tally", "number"],
    "element": ["item", "entry", "member"], "elements": ["items", "entries", "members"],
    "file": ["document", "path"], "files": ["documents", "paths"], "object": ["instance", "value"],
    "value": ["result", "quantity"], "values": ["results", "quantities"], "first": ["initial", "leading"],
    "last": ["final", "trailing"], "each": ["every"], "all": ["every one of the"], "new": ["fresh"],
    "use": ["employ", "utilize"], "used": ["employed", "utilized"], "if": ["when", "in case"],
    "must": ["has to", "should"], "should": ["ought to", "must"], "can": ["may", "is able to"],
    "contains": ["holds", "includes"], "contain": ["hold", "include"], "sum": ["total"], "total": ["sum"],
    "largest": ["biggest", "greatest"], "smallest": ["least", "tiniest"], "maximum": ["largest", "max"],
    "minimum": ["smallest", "min"], "length": ["size"], "size": ["length", "dimension"],
    "character": ["char", "symbol"], "characters": ["chars", "symbols"], "word": ["token", "term"],
    "words": ["tokens", "terms"], "integer": ["whole number", "int"], "integers": ["whole numbers", "ints"],
    "array": ["list", "vector"], "match": ["correspond to", "fit"], "matches": ["fits"],
    "many": ["numerous", "a lot of"], "how": ["in what way"], "make": ["produce", "build"],
    "takes": ["accepts", "receives"], "take": ["accept", "receive"], "input": ["argument", "parameter"],
    "output": ["result"], "result": ["outcome", "output"], "buy": ["purchase"], "buys": ["purchases"],
    "sells": ["sold", "trades"], "sell": ["trade", "vend"], "pays": ["spends", "gives"], "costs": ["is priced at"],
    "each": ["every"], "day": ["daily period"], "days": ["daily periods"], "week": ["seven-day period"],
    "money": ["cash", "funds"], "dollars": ["bucks", "USD"], "hours": ["hrs"], "minutes": ["mins"],
    "people": ["persons", "individuals"], "friends": ["pals", "companions"], "bought": ["purchased"],
    "made": ["produced", "created"], "has": ["owns", "holds"], "have": ["own", "hold"],
    "total": ["overall amount", "sum"], "left": ["remaining"], "more": ["additional", "extra"],
    "half": ["fifty percent"], "twice": ["two times"], "times": ["occasions"], "wants": ["would like", "hopes"],
    "needs": ["requires"], "need": ["require"], "start": ["beginning"], "end": ["finish"],
    "sorted": ["ordered"], "sort": ["order", "arrange"], "reverse": ["invert", "flip"],
    "pair": ["couple"], "pairs": ["couples", "tuples"], "key": ["name", "identifier"], "keys": ["names"],
    "dictionary": ["mapping", "dict"], "tuple": ["pair", "record"], "tuples": ["records"], "nested": ["inner"],
    "default": ["fallback"], "optional": ["non-mandatory"], "raise": ["throw"], "raises": ["throws"],
    "error": ["exception", "failure"], "empty": ["blank", "vacant"], "true": ["True"], "false": ["False"],
    "positive": ["greater than zero"], "negative": ["below zero"], "even": ["divisible by two"],
    "odd": ["not divisible by two"], "prime": ["primal"], "unique": ["distinct"], "duplicate": ["repeated"],
    "duplicates": ["repeats", "repeated items"], "occurrence": ["appearance"], "occurrences": ["appearances"],
    "position": ["index", "location"], "index": ["position", "offset"], "between": ["among"],
    "consecutive": ["adjacent", "successive"], "close": ["near"], "closer": ["nearer"], "than": ["compared to"],
    "threshold": ["limit", "cutoff"], "separate": ["split"], "groups": ["clusters"], "group": ["cluster"],
    "input": ["argument"], "string.": ["text."], "list.": ["sequence."], "provided": ["given"],
}
EXTRA_SENTENCES = [
    "Make sure your code is easy to read.", "Keep the implementation efficient.",
    "Handle edge cases carefully.", "Use only the standard library.",
]
COMMENTS = [
    "handle the edge case first", "main loop", "accumulate the result", "guard against bad input",
    "fast path", "TODO: revisit this", "keep order stable", "update state", "nothing left to do",
    "compute the answer", "see the docs for details", "walk the structure",
]
NAME_WORDS = ["item", "entry", "acc", "total", "buf", "node", "cur", "res", "tmp", "idx", "elem", "val",
              "part", "piece", "chunk", "token", "count", "size", "out", "src", "dst", "key", "obj", "arg"]
NAME_SYNONYMS = {"count": "num", "value": "val", "index": "pos", "result": "out", "data": "payload", "name": "label",
                 "size": "length", "length": "size", "list": "seq", "item": "elem", "items": "elems", "text": "content",
                 "line": "row", "lines": "rows", "path": "location", "key": "field", "args": "params",
                 "num": "count", "buf": "buffer", "str": "s", "string": "text", "i": "k", "j": "m", "n": "total",
                 "x": "val", "y": "other", "s": "text", "l": "lst", "res": "result", "ret": "retval",
                 "obj": "instance", "node": "vertex", "start": "begin", "end": "stop", "first": "head",
                 "last": "tail", "new": "fresh", "old": "prev", "tmp": "scratch", "source": "origin"}

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(])")


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(" ".join(text.split())) if s]


def reword(text: str, rng: random.Random, p: float) -> str:
    """Replace words by synonyms with probability p (case of the first letter kept)."""
    def swap(m: re.Match) -> str:
        w = m.group(0)
        options = SYNONYMS.get(w.lower())
        if not options or rng.random() >= p:
            return w
        new = rng.choice(options)
        return new[0].upper() + new[1:] if w[0].isupper() else new
    return re.sub(r"(?<![\w`])[A-Za-z]+(?![\w`])", swap, text)


def reorder_sentences(text: str, rng: random.Random) -> str:
    parts = sentences(text)
    if len(parts) > 1:
        head, tail = parts[:1], parts[1:]
        rng.shuffle(tail)
        # A person reordering keeps the opening as a rule and moves it now and then.
        parts = tail + head if rng.random() < 0.5 else head + tail
        if parts == sentences(text) and len(parts) > 1:
            parts = parts[1:] + parts[:1]
    return " ".join(parts)


def change_numbers(text: str, rng: random.Random, p: float = 1.0) -> str:
    def bump(m: re.Match) -> str:
        if rng.random() >= p:
            return m.group(0)
        v = int(m.group(0))
        return str(v + rng.choice([1, 2, 3, 5, 7]) if v < 20 else v + rng.randint(1, max(2, v // 3)))
    return re.sub(r"(?<![\w.])\d+(?![\w.])", bump, text)


def new_name(old: str, rng: random.Random, taken: set[str]) -> str:
    parts = re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", old) or [old]
    swapped = [NAME_SYNONYMS.get(p.lower(), p.lower()) for p in parts]
    style = rng.random()
    if swapped == [p.lower() for p in parts] or style < 0.3:
        swapped = [rng.choice(NAME_WORDS)] + ([rng.choice(NAME_WORDS)] if rng.random() < 0.5 else [])
    if "_" not in old and any(c.isupper() for c in old[1:]):
        cand = swapped[0] + "".join(w.title() for w in swapped[1:])
    else:
        cand = "_".join(swapped)
    cand = ("_" if old.startswith("_") else "") + cand
    while cand in taken or keyword.iskeyword(cand) or cand in _C_KEYWORDS:
        cand += rng.choice(["2", "_x", "_v", "0"])
    taken.add(cand)
    return cand


def rename_map(f: Function, fraction: float | None, rng: random.Random, count: int | None = None,
               include_function: bool = True) -> dict[str, str]:
    names = list(dict.fromkeys(f.params + f.locals))
    names = [n for n in names if len(n) > 0 and n != f.name and not n.startswith("__")]
    if include_function:
        names = [f.name] + names
    if count is None:
        count = max(1, round(len(names) * (fraction or 0)))
    chosen = rng.sample(names, min(count, len(names))) if names else []
    taken = set(re.findall(r"[A-Za-z_]\w*", f.code))
    return {n: new_name(n, rng, taken) for n in chosen}


def _py_tokens(code: str):
    try:
        return list(tokenize.generate_tokens(io.StringIO(code + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None


def apply_renames(code: str, lang: str, mapping: dict[str, str]) -> str:
    if not mapping:
        return code
    pattern = re.compile(r"(?<![\w.$])(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True))) +
                         r")(?![\w$])")
    # Only outside string literals: a rename does not touch text the program prints.
    pieces = re.split(r"(\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*')", code)
    return "".join(p if i % 2 else pattern.sub(lambda m: mapping[m.group(1)], p) for i, p in enumerate(pieces))


def rename_in_prose(text: str, mapping: dict[str, str]) -> str:
    if not mapping:
        return text
    pattern = re.compile(r"(?<![\w])(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True))) + r")(?!\w)")
    return pattern.sub(lambda m: mapping[m.group(1)], text)


_PY_COMMENT = re.compile(r"(?m)(^|[ \t])#(?!!)[^\n]*")
_C_COMMENT = re.compile(r"(?m)(^|[ \t])//[^\n]*|/\*.*?\*/", re.S)


def change_comments(code: str, lang: str, rng: random.Random) -> str:
    """Each comment replaced (or dropped), and one new comment line added."""
    marker = "#" if lang == "python" else "//"

    def replace(m: re.Match) -> str:
        lead = m.group(1) or ""
        return "" if rng.random() < 0.3 else f"{lead}{marker} {rng.choice(COMMENTS)}"
    code = (_PY_COMMENT if lang == "python" else _C_COMMENT).sub(replace, code)
    lines = code.splitlines()
    body = [i for i, l in enumerate(lines) if i > 0 and l.strip() and not l.strip().startswith(("@", "}", ")"))]
    if body:
        i = rng.choice(body)
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        lines.insert(i, f"{indent}{marker} {rng.choice(COMMENTS)}")
    return "\n".join(l.rstrip() for l in lines)


def reindent(code: str, lang: str, rng: random.Random) -> str:
    lines = code.splitlines()
    out = []
    target = rng.choice(["  ", "\t", "   "]) if lang != "python" else rng.choice(["  ", "\t"])
    for l in lines:
        stripped = l.lstrip(" ")
        n = len(l) - len(stripped)
        unit = 4 if lang == "python" else (2 if lines and any(x.startswith("  ") and not x.startswith("    ")
                                                                for x in lines) else 4)
        out.append(target * (n // unit) + " " * (n % unit) + stripped)
    code = "\n".join(out)
    if lang != "python":
        if rng.random() < 0.5:  # K&R -> Allman
            code = re.sub(r"(?m)^([ \t]*)(.*\S)[ \t]*\{[ \t]*$", lambda m: f"{m.group(1)}{m.group(2)}\n{m.group(1)}{{",
                          code)
        code = re.sub(r"\b(if|for|while|switch)\(", r"\1 (", code)
    # operator spacing, outside strings
    pieces = re.split(r"(\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*')", code)
    spaced = rng.random() < 0.5
    for i in range(0, len(pieces), 2):
        p = pieces[i]
        p = re.sub(r"\s*,\s*(?=\S)", ", " if spaced else ",", p) if lang != "python" else re.sub(r",(?=\S)", ", ", p)
        p = re.sub(r"(?<=\w) ?([+\-*/]) ?(?=\w)", r" \1 " if spaced else r"\1", p)
        pieces[i] = p
    return "\n".join(l.rstrip() for l in "".join(pieces).splitlines())


def wrap_lines(code: str, lang: str, rng: random.Random, width: int = 50) -> str:
    """Break long lines after a comma inside brackets (valid continuation in all four languages)."""
    out = []
    for line in code.splitlines():
        if len(line) <= width or "," not in line or line.lstrip().startswith(("#", "//", "*")):
            out.append(line)
            continue
        depth, cut = 0, None
        in_str = None
        for i, c in enumerate(line):
            if in_str:
                if c == in_str and line[i - 1] != "\\":
                    in_str = None
                continue
            if c in "\"'":
                in_str = c
            elif c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
            elif c == "," and depth > 0 and i > width // 2:
                cut = i
                break
        if cut is None:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out += [line[: cut + 1], indent + "        " + line[cut + 1:].lstrip()]
    return "\n".join(out)


def swap_independent_statements(code: str, lang: str, rng: random.Random) -> str:
    """Swap one or two pairs of adjacent one-line statements that neither reads what the other writes."""
    lines = code.splitlines()
    names = lambda s: set(re.findall(r"[A-Za-z_]\w*", s))
    cands = []
    for i in range(1, len(lines) - 1):
        a, b = lines[i], lines[i + 1]
        ia, ib = len(a) - len(a.lstrip()), len(b) - len(b.lstrip())
        if ia != ib or not a.strip() or not b.strip():
            continue
        ok_end = (lambda s: s.rstrip().endswith(";")) if lang != "python" else (lambda s: not s.rstrip().endswith((":", "\\", ",", "(", "[", "{")))
        if not (ok_end(a) and ok_end(b)):
            continue
        ma, mb = re.match(r"\s*(?:\w+\s+)?\**([A-Za-z_][\w.\[\]]*)\s*=[^=]", a), re.match(r"\s*(?:\w+\s+)?\**([A-Za-z_][\w.\[\]]*)\s*=[^=]", b)
        if not (ma and mb) or re.match(r"\s*(return|if|for|while|else|elif|try|except|with|def|class)\b", a + b):
            continue
        ta, tb = names(ma.group(1)), names(mb.group(1))
        if ta & names(b) or tb & names(a):
            continue
        cands.append(i)
    rng.shuffle(cands)
    done = set()
    for i in cands[:2]:
        if i in done or i + 1 in done or i - 1 in done:
            continue
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
        done |= {i, i + 1}
    return "\n".join(lines)


def edit_docstring(prose: str, rng: random.Random) -> str:
    parts = sentences(prose)
    if len(parts) > 2 and rng.random() < 0.5:
        parts.pop(rng.randrange(1, len(parts)))
    parts.append(rng.choice(EXTRA_SENTENCES))
    return change_numbers(reword(" ".join(parts), rng, 0.3), rng, 0.5)


# --- near-dedup tiers ---------------------------------------------------------------------------


def rewrite(f: Function, tier: str, rng: random.Random, lead: str, closing: str) -> dict:
    code, prose = f.code, f.prose or template_prose(f)
    mapping: dict[str, str] = {}
    new_lead = rng.choice([l for l in LEAD_INS if l != lead])
    if tier == "light":  # comments changed, one identifier renamed, a different lead-in
        mapping = rename_map(f, None, rng, count=1, include_function=False) or rename_map(f, None, rng, count=1)
        code = apply_renames(change_comments(code, f.lang, rng), f.lang, mapping)
        prose = rename_in_prose(prose, mapping)
        lead = new_lead
    elif tier == "heavy":  # a third renamed, comments changed, prose reworded + reordered
        mapping = rename_map(f, 1 / 3, rng)
        code = apply_renames(change_comments(code, f.lang, rng), f.lang, mapping)
        prose = reorder_sentences(reword(rename_in_prose(prose, mapping), rng, 0.6), rng)
        lead = new_lead
    elif tier == "format":  # re-indented, re-spaced, wrapped; prose untouched
        code = wrap_lines(reindent(code, f.lang, rng), f.lang, rng)
    elif tier == "docstring":  # docstring edited, example values changed
        prose = edit_docstring(prose, rng)
        code = change_numbers(code, rng, 0.5)
    elif tier == "reorder":  # independent statements reordered, example values changed
        code = change_numbers(swap_independent_statements(code, f.lang, rng), rng, 0.3)
    elif tier == "mixed":  # heavy + format + reorder + docstring edit
        mapping = rename_map(f, 1 / 3, rng)
        code = apply_renames(change_comments(swap_independent_statements(code, f.lang, rng), f.lang, rng), f.lang,
                             mapping)
        code = wrap_lines(reindent(change_numbers(code, rng, 0.3), f.lang, rng), f.lang, rng)
        prose = reorder_sentences(edit_docstring(rename_in_prose(prose, mapping), rng), rng)
        lead = new_lead
    else:
        raise ValueError(tier)
    closing = rng.choice(CLOSINGS) if tier in ("heavy", "mixed") else closing
    return make_document(f, lead, closing, prose=prose, code=code, mapping=mapping)


NEAR_TIERS = ("light", "heavy", "format", "docstring", "reorder", "mixed")


def near_dedup_set(split: str, per_tier: int = 200) -> list[dict]:
    """Rows: id, family (true duplicate group), tier ('original' or a rewrite tier), kind, problem, solution.

    Originals are every function drawn (siblings of one file, same-named functions of different
    modules, template problems share material); each tier rewrites `per_tier` of them.
    """
    rng = random.Random(SPLIT_SEED[split])
    funcs = [f for f in real_functions(split, rng) if f.prose or rng.random() < 0.25]
    rows = []
    style: dict[int, tuple[str, str]] = {}
    for i, f in enumerate(funcs):
        lead, closing = rng.choice(LEAD_INS), rng.choice(CLOSINGS)
        style[i] = (lead, closing)
        kind = "documented" if f.prose else "template"
        rows.append({"id": f"o{i}", "family": i, "tier": "original", "kind": kind, "lang": f.lang,
                     "source": f"{Path(f.path).name}:{f.name}", **make_document(f, lead, closing)})
    order = list(range(len(funcs)))
    rng.shuffle(order)
    pos = 0
    for tier in NEAR_TIERS:
        made = 0
        while made < per_tier and pos < len(order):
            i = order[pos]
            pos += 1
            f = funcs[i]
            doc = rewrite(f, tier, rng, *style[i])
            if doc["solution"] == rows[i]["solution"] and doc["problem"] == rows[i]["problem"]:
                continue  # the rule found nothing to change in this function
            rows.append({"id": f"r{i}-{tier}", "family": i, "tier": tier, "kind": rows[i]["kind"], "lang": f.lang,
                         "source": rows[i]["source"], **doc})
            made += 1
    return rows


def hard_negative_pairs(rows: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """Pairs of distinct originals that share material: one file, one API name, one template."""
    originals = [r for r in rows if r["tier"] == "original"]
    by_file, by_name = {}, {}
    for r in originals:
        file, name = r["source"].rsplit(":", 1)
        by_file.setdefault(file, []).append(r["id"])
        by_name.setdefault(name, []).append(r["id"])
    pairs = {"sibling": [], "api_family": [], "template": []}
    for ids in by_file.values():
        pairs["sibling"] += list(zip(ids, ids[1:]))
    for ids in by_name.values():
        pairs["api_family"] += list(zip(ids, ids[1:]))
    tmpl = [r["id"] for r in originals if r["kind"] == "template"]
    pairs["template"] = list(zip(tmpl, tmpl[1:]))
    return pairs


# --- decontamination tiers ----------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    return json.loads(text) if text.lstrip().startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]


_DOCSTRING = re.compile(r'("""|\'\'\')(.*?)\1', re.S)


def _he_parts(r: dict) -> tuple[str, str, str]:
    """(docstring prose without examples, signature line + body code, examples text)."""
    prompt = r["prompt"]
    blocks = list(_DOCSTRING.finditer(prompt))
    doc = blocks[-1].group(2) if blocks else ""
    prose_lines, examples = [], []
    in_examples = False
    for line in doc.splitlines():
        s = line.strip()
        if s.startswith(">>>") or re.match(r"(?i)^(for )?examples?:?$", s) or in_examples and s:
            in_examples = in_examples or s.startswith(">>>") or s.lower().startswith(("example", "for example"))
            examples.append(s)
            continue
        prose_lines.append(s)
    code = (prompt[: blocks[-1].start()] + prompt[blocks[-1].end():] if blocks else prompt).rstrip() + "\n"
    code += r["canonical_solution"]
    return " ".join(" ".join(prose_lines).split()), code, "\n".join(examples)


def _fn_names(code: str) -> tuple[list[str], list[str]]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return re.findall(r"def (\w+)", code), []
    funcs = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    names = []
    for n in ast.walk(tree):
        if isinstance(n, ast.arg) and n.arg not in names and n.arg != "self":
            names.append(n.arg)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id not in names:
            names.append(n.id)
    return funcs, names


def paraphrase_code(code: str, rng: random.Random, lang: str = "python") -> tuple[str, dict[str, str]]:
    funcs, names = _fn_names(code)
    taken = set(re.findall(r"[A-Za-z_]\w*", code))
    mapping = {n: new_name(n, rng, taken) for n in funcs + names if n not in mapping_skip}
    code = apply_renames(code, lang, mapping)
    code = change_comments(code, lang, rng)
    code = change_numbers(code, rng, 0.3)
    if rng.random() < 0.5:
        code = swap_independent_statements(code, lang, rng)
    return code, mapping


mapping_skip = {"self", "cls", "_"}
CODE_LEADS = [
    "Write a Python function for the following task.", "Solve the following problem in Python.",
    "Implement a solution to this problem.", "Create a program that does the following.",
    "Here is a programming problem for you.",
]
MATH_LEADS = [
    "Write a Python function `solve()` that returns the answer to this word problem:",
    "Implement a program that computes the answer to the following question.",
    "Write code to solve this problem and return the result as a number.",
    "Create a function that models the situation below and returns the final amount.",
]


def _gsm8k_solution(question: str, rng: random.Random) -> str:
    nums = re.findall(r"\d+(?:\.\d+)?", question)
    nouns = [w.lower() for w in re.findall(r"[A-Za-z]{4,}", question) if w.lower() not in ("each", "many", "much",
                                                                                           "does", "with", "that")]
    lines = ["def solve():"]
    var_names = []
    for k, n in enumerate(nums[:6]):
        v = (nouns[k] if k < len(nouns) else f"value{k}") + rng.choice(["", "_count", "_amount"])
        var_names.append(v)
        lines.append(f"    {v} = {n}")
    expr = " + ".join(var_names[:2]) or "0"
    if len(var_names) > 2:
        expr = f"({expr}) * {var_names[2]}"
    lines += [f"    total = {expr}", "    return total", "", "print(solve())"]
    return "```python\n" + "\n".join(lines) + "\n```\n\nThe function sets up each quantity and combines them."


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


_BENCH_PAIRS: dict[Path, list[tuple[str, str]]] = {}


def _same_problem_as_benchmark(r: dict, benchmark_dir: Path) -> bool:
    """MBPP repeats some problems across its splits ("harmonic sum of n-1" is task 248 and a
    training task): such a row is contamination, not a clean near miss. Judged with difflib
    on the raw texts (no matcher involved): near-identical code, or near-identical text
    with close code."""
    import difflib

    if benchmark_dir not in _BENCH_PAIRS:
        pairs = [(_norm(b["text"]), _norm(b["code"])) for b in _read_jsonl(benchmark_dir / "mbpp.jsonl")
                 if 11 <= b["task_id"] <= 510]
        pairs += [(_norm(b["prompt"]), _norm(b["code"])) for b in _read_jsonl(benchmark_dir / "sanitized-mbpp.json")]
        _BENCH_PAIRS[benchmark_dir] = pairs
    text, code = _norm(r["text"]), _norm(r["code"])
    for btext, bcode in _BENCH_PAIRS[benchmark_dir]:
        t = difflib.SequenceMatcher(None, text, btext)
        c = difflib.SequenceMatcher(None, code, bcode)
        if c.real_quick_ratio() >= 0.9 and c.quick_ratio() >= 0.9 and c.ratio() >= 0.9:
            return True
        if t.real_quick_ratio() >= 0.9 and t.quick_ratio() >= 0.9 and t.ratio() >= 0.9 and c.ratio() >= 0.8:
            return True
    return False


def decontamination_set(split: str, benchmark_dir: Path = DEFAULT_BENCHMARK_DIR, clean_extra: int = 1800) -> list[dict]:
    """Rows: id, tier, benchmark item it derives from ('' for clean), problem, solution."""
    rng = random.Random(SPLIT_SEED[split] * 7 + 1)
    he = [r for r in _read_jsonl(benchmark_dir / "HumanEval.jsonl.gz") if split_of(r["task_id"]) == split]
    mbpp_all = _read_jsonl(benchmark_dir / "mbpp.jsonl")
    mbpp = [r for r in mbpp_all if 11 <= r["task_id"] <= 510 and split_of(f"mbpp/{r['task_id']}") == split]
    gsm = [(i, r) for i, r in enumerate(_read_jsonl(benchmark_dir / "gsm8k_test.jsonl"))
           if split_of(f"gsm8k/test/{i}") == split]
    rows = []

    def add(tier, item, problem, solution):
        rows.append({"id": f"{tier}-{len(rows)}", "tier": tier, "item": item, "problem": problem,
                     "solution": solution})

    # verbatim: the item as a sample would carry it (framed, sometimes inside a longer answer)
    for r in rng.sample(he, min(60, len(he))):
        prose, code, examples = _he_parts(r)
        add("verbatim", r["task_id"], f"{rng.choice(CODE_LEADS)}\n\n{r['prompt']}",
            f"```python\n{r['prompt']}{r['canonical_solution']}```\n\n{rng.choice(CLOSINGS)}")
    for r in rng.sample(mbpp, min(120, len(mbpp))):
        tests = "\n".join(r["test_list"]) if rng.random() < 0.5 else ""
        add("verbatim", f"mbpp/{r['task_id']}", f"{r['text']}\n{tests}".strip(),
            f"Here is the solution:\n\n```python\n{r['code']}\n```")
    for i, r in rng.sample(gsm, min(100, len(gsm))):
        add("verbatim", f"gsm8k/test/{i}", r["question"], _gsm8k_solution(r["question"], rng))
    # recast: GSM8K questions as coding tasks (numbers changed half the time)
    for i, r in rng.sample(gsm, min(200, len(gsm))):
        q = change_numbers(r["question"], rng) if rng.random() < 0.5 else r["question"]
        add("recast_gsm8k", f"gsm8k/test/{i}", f"{rng.choice(MATH_LEADS)}\n\n{q}", _gsm8k_solution(q, rng))
    # paraphrased: problem reworded and reordered, identifiers renamed, examples changed
    for r in rng.sample(he, min(70, len(he))):
        prose, code, examples = _he_parts(r)
        new_code, mapping = paraphrase_code(code, rng)
        text = reorder_sentences(reword(rename_in_prose(prose, mapping), rng, 0.6), rng)
        ex = change_numbers(rename_in_prose(examples, mapping), rng) if examples and rng.random() < 0.5 else ""
        add("paraphrase", r["task_id"], f"{rng.choice(CODE_LEADS)}\n\n{text}\n{ex}".strip(),
            f"```python\n{new_code}\n```\n\n{rng.choice(CLOSINGS)}")
    for r in rng.sample(mbpp, min(160, len(mbpp))):
        new_code, mapping = paraphrase_code(r["code"], rng)
        text = reorder_sentences(reword(rename_in_prose(r["text"], mapping), rng, 0.6), rng)
        tests = ""
        if rng.random() < 0.4:
            tests = "\n" + change_numbers(rename_in_prose(rng.choice(r["test_list"]), mapping), rng)
        add("paraphrase", f"mbpp/{r['task_id']}", f"{rng.choice(CODE_LEADS)} {text}{tests}",
            f"```python\n{new_code}\n```")
    for i, r in rng.sample(gsm, min(100, len(gsm))):
        q = reorder_sentences(reword(change_numbers(r["question"], rng), rng, 0.6), rng)
        add("paraphrase", f"gsm8k/test/{i}", f"{rng.choice(MATH_LEADS)}\n\n{q}", _gsm8k_solution(q, rng))
    # clean: MBPP problems outside every benchmark split we check (near misses: same style,
    # same topics), and real functions of the installed code as problems.
    sanitized = {r["task_id"] for r in _read_jsonl(benchmark_dir / "sanitized-mbpp.json")}
    plus = {int(r["task_id"].split("/")[1]) for r in _read_jsonl(benchmark_dir / "MbppPlus.jsonl.gz")}
    near_miss = [r for r in mbpp_all if not 11 <= r["task_id"] <= 510 and r["task_id"] not in sanitized
                 and r["task_id"] not in plus and split_of(f"mbpp/{r['task_id']}") == split]
    near_miss = [r for r in near_miss if not _same_problem_as_benchmark(r, benchmark_dir)]
    for r in near_miss:
        new_code, mapping = (paraphrase_code(r["code"], rng) if rng.random() < 0.5 else (r["code"], {}))
        add("clean_near_miss", "", f"{rng.choice(CODE_LEADS)} {rename_in_prose(r['text'], mapping)}",
            f"```python\n{new_code}\n```")
    funcs = real_functions(split, random.Random(SPLIT_SEED[split] + 5), max_python=clean_extra * 3 // 4,
                           max_other=clean_extra // 4)
    for f in funcs:
        add("clean_code", "", *make_document(f, rng.choice(LEAD_INS), rng.choice(CLOSINGS)).values())
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=tuple(SPLIT_SEED), default="dev")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--benchmark-dir", type=Path, default=DEFAULT_BENCHMARK_DIR)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    near = near_dedup_set(args.split)
    dec = decontamination_set(args.split, args.benchmark_dir)
    for name, rows in (("near_dedup", near), ("decontamination", dec)):
        with open(args.out / f"{name}-{args.split}.jsonl", "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    print(json.dumps({"split": args.split, "near_dedup_rows": len(near), "decontamination_rows": len(dec)}))


if __name__ == "__main__":
    main(sys.argv[1:])
