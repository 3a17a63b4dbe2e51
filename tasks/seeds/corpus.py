"""Code corpora that seed snippets are drawn from: a source tree, JSONL/Parquet files, or a hub dataset.

A corpus hands out documents pass by pass, in a deterministic shuffled order, and reports every
document it rejects (binary, not UTF-8, too large, generated...) as a `Rejected` item with its
reason, so the seed stage can count it. Snippet sampling itself lives in tasks/seeds/sampling.py.

This module turns a --seed-source string into one of the corpora:
- tasks/seeds/source_tree.py: a directory or file of source code, and the Python stdlib;
- tasks/seeds/table_files.py: JSONL / Parquet files, one document per row;
- tasks/seeds/hub.py: a Hugging Face hub dataset, streamed.
What they share (documents, rejections, options, the checks) is in tasks/seeds/documents.py,
the language table in tasks/seeds/languages.py.

Randomness is hash-based (xxh3 of the random seed, the pass and a stable document key)
rather than a stateful RNG: the same corpus and seed give the same order on every machine and
every Python/NumPy version, and a document's place does not depend on what was read before it.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from tasks.core.errors import UserError
from tasks.seeds.documents import CorpusOptions
from tasks.seeds.hub import PACKAGED_BUILDERS, HubCorpus
from tasks.seeds.languages import language_of_path
from tasks.seeds.source_tree import CodeTreeCorpus, default_prune, relative_posix, stdlib_corpus, walk_sorted
from tasks.seeds.table_files import TableCorpus, is_table_file

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def open_corpus(source: str, opts: CorpusOptions):
    """The corpus a --seed-source string names; UserError with one line when it names nothing."""
    source = source.strip()
    if source == "stdlib":
        return stdlib_corpus(opts)
    if source.startswith("hf:"):
        dataset_id = source[3:].strip()
        if dataset_id in PACKAGED_BUILDERS:
            if not opts.hf_data_files:
                raise UserError(f"{source!r} streams local files: set hf_data_files")
            return HubCorpus(dataset_id, opts)
        if not HUB_ID.fullmatch(dataset_id):
            raise UserError(f"{source!r} is not a Hugging Face dataset id (expected hf:OWNER/NAME)")
        return HubCorpus(dataset_id, opts)
    path = Path(source).expanduser()
    if path.is_dir():
        return _directory_corpus(source, path, opts)
    if path.is_file():
        if is_table_file(path):
            return TableCorpus(path.parent, [path], source, opts, description=f"table file {path}")
        return CodeTreeCorpus(path.parent, [path.name], source, opts, description=f"file {path}")
    if glob.has_magic(source):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise UserError(f"seed source glob {source!r} matches no files")
        root = _glob_root(source)
        if all(is_table_file(p) for p in files):
            return TableCorpus(root, files, source, opts, description=f"{len(files)} table file(s) matching {source}")
        rels = sorted(relative_posix(p, root) for p in files)
        return CodeTreeCorpus(root, rels, source, opts, description=f"{len(files)} file(s) matching {source}")
    if HUB_ID.fullmatch(source) and not source.startswith((".", "/", "~")):
        return HubCorpus(source, opts)
    raise UserError(
        f"unknown seed source {source!r}: not 'stdlib', an existing directory or file, a glob that "
        "matches files, or a Hugging Face dataset id (hf:OWNER/NAME)"
    )


def _directory_corpus(source: str, path: Path, opts: CorpusOptions):
    files = walk_sorted(path, default_prune)
    # A directory of JSONL/Parquet files (and no source code) is a table corpus.
    if files and not any(language_of_path(f) for f in files) and any(is_table_file(f) for f in files):
        tables = [path / f for f in files if is_table_file(f)]
        return TableCorpus(path, tables, source, opts, description=f"{len(tables)} table file(s) under {path}")
    return CodeTreeCorpus(path, files, source, opts, description=f"source tree {path}")


def _glob_root(pattern: str) -> Path:
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")

