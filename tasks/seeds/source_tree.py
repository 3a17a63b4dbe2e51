"""A tree of source files as a corpus: one document per file, language from the extension.

Also the Python standard library as the default corpus (`stdlib`), which needs no download.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.errors import UserError
from tasks.seeds.documents import CorpusOptions, Document, Rejected, Wanted, checked_text, hash64
from tasks.seeds.languages import language_of_path

# Directories never walked into: VCS data, caches, virtual environments, vendored packages.
PRUNED_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", "site-packages", "dist-packages",
               ".venv", "venv", ".tox", ".mypy_cache", ".pytest_cache"}


@dataclass
class CodeTreeCorpus:
    """Source files under a root: language from the extension, one document per file."""

    root: Path
    files: list[str]  # paths relative to root, sorted, as posix strings
    seed_source: str
    opts: CorpusOptions
    description: str = ""
    stats: dict = field(default_factory=lambda: {"files_listed": 0, "documents_read": 0})
    _usable: list[tuple[str, str]] | None = None  # (relpath, lang) of files that passed pass 0
    # Usable documents kept after pass 0 while they fit in opts.cache_bytes, so later passes
    # do not re-read and re-check them (the standard library is ~30 MB of text).
    _cache: dict[str, tuple[str, int]] = field(default_factory=dict)
    _cached_bytes: int = 0

    def documents(self, pass_no: int, wanted: Wanted) -> Iterator[Document | Rejected]:
        if pass_no == 0:
            candidates = self._first_pass_candidates()
        else:
            candidates = [(rel, lang) for rel, lang in (self._usable or []) if wanted(lang)]
        order = sorted(candidates, key=lambda c: hash64(self.opts.random_seed, "order", pass_no, c[0]))
        usable = []
        for rel, lang in order:
            if lang is None:
                yield Rejected("unsupported_extension", rel)
                continue
            if self.opts.languages is not None and lang not in self.opts.languages:
                yield Rejected("language_excluded", rel)
                continue
            if not wanted(lang):
                continue  # its quota is already full: not read, not counted
            if rel in self._cache:
                text, n_lines = self._cache[rel]
                yield Document(rel, text, lang, n_lines, rel, self.opts.repo, self.opts.license)
                continue
            path = self.root / rel
            try:
                size = path.stat().st_size
                if size > self.opts.max_file_bytes:
                    yield Rejected("too_large", rel)
                    continue
                data = path.read_bytes()
            except OSError:
                yield Rejected("unreadable", rel)
                continue
            self.stats["documents_read"] += 1
            text, n_lines, reason = checked_text(data, self.opts)
            if reason:
                yield Rejected(reason, rel)
                continue
            usable.append((rel, lang))
            if pass_no == 0 and self._cached_bytes + len(text) <= self.opts.cache_bytes:
                self._cache[rel] = (text, n_lines)
                self._cached_bytes += len(text)
            yield Document(rel, text, lang, n_lines, rel, self.opts.repo, self.opts.license)
        if pass_no == 0:
            self._usable = sorted(usable)

    def close(self) -> None:
        self._cache.clear()
        self._cached_bytes = 0

    def _first_pass_candidates(self) -> list[tuple[str, str | None]]:
        self.stats["files_listed"] = len(self.files)
        return [(rel, language_of_path(rel)) for rel in self.files]


def walk_sorted(root: Path, prune: Callable[[str, str], bool]) -> list[str]:
    """Every regular file under root as a sorted posix relative path, skipping pruned dirs."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if not prune(rel_dir, d)]
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                out.append(Path(os.path.relpath(full, root)).as_posix())
    return sorted(out)


def default_prune(_rel_dir: str, name: str) -> bool:
    return name in PRUNED_DIRS or name.startswith(".")


def _stdlib_prune(rel_dir: str, name: str) -> bool:
    # Test fixture data (deliberately broken encodings, Python 2 sources, codec tables) and
    # build artefacts are not code anyone wrote to be read; the rest of Lib/ is.
    if default_prune(rel_dir, name) or name == "lib-dynload" or name.startswith("config-"):
        return True
    return name != "metadata" and (name.endswith("data") or re.fullmatch(r"(zip)?data\d+", name) is not None)


def stdlib_corpus(opts: CorpusOptions) -> CodeTreeCorpus:
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise UserError(f"the Python standard library directory {root} does not exist")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    opts.repo = opts.repo or "python/cpython"
    opts.license = opts.license or "PSF-2.0"
    return CodeTreeCorpus(root, walk_sorted(root, _stdlib_prune), f"python-stdlib-{version}", opts,
                          description=f"Python {version} standard library at {root}")


def relative_posix(path: Path, root: Path) -> str:
    """path relative to root as a posix string; the whole path when it is not under root."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
