"""Seed snippets, the way the Magicoder paper draws them, with every rejection counted.

A seed is 1-15 consecutive lines (length uniform in [min_lines, max_lines]) from a uniformly
random start line of a document. Documents come from a corpus (tasks/seeds/corpus.py) in a
deterministic shuffled order, one snippet per document per pass; when the corpus has fewer
documents than seeds wanted, further passes draw new snippets from the same documents until
the target (or every per-language quota) is met or the corpus stops yielding new snippets.

Differences from the paper's reference (ise-uiuc/magicoder generate_data.py), on purpose:
- the start line is drawn so the snippet fits (the reference draws it over all lines and
  truncates at the end of the file, which makes short snippets near file ends likelier);
- binary, non-UTF-8, oversized, minified/generated documents and empty, long-line and
  duplicate snippets are dropped and counted (the reference keeps everything);
- the random draws are xxh3 hashes of (random_seed, pass, document key), not a stateful RNG,
  so the same seeds come out on any machine, Python or NumPy version.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Optional

import pyarrow as pa
import xxhash
from pydantic import BaseModel, model_validator

from tasks.core.errors import UserError
from tasks.core.config import FingerprintedConfig, operational
from tasks.core.schema import SEED_SCHEMA
from tasks.seeds.corpus import open_corpus
from tasks.seeds.documents import CorpusOptions, Document, hash128
from tasks.seeds.languages import canonical_language
from tasks.core.stats import StageStats, timed

log = logging.getLogger(__name__)

# The paper's per-language seed counts (80K seeds in all).
PAPER_QUOTAS = {"python": 40000, "cpp": 5000, "java": 5000, "typescript": 5000, "shell": 5000,
                "csharp": 5000, "rust": 5000, "php": 5000, "swift": 5000}

ALL = "all"  # the quota key when no per-language quotas are set
_MASK64 = (1 << 64) - 1


class SeedConfig(FingerprintedConfig):
    """Where seeds come from and how they are drawn. Invalid settings raise a one-line UserError."""

    source: str = "stdlib"  # "stdlib" | directory | glob | .jsonl/.parquet file(s) | "hf:<dataset id>"
    num_seeds: Optional[int] = None  # total seeds wanted; with quotas it is their sum
    random_seed: int = 976  # the paper's
    min_lines: int = 1
    max_lines: int = 15
    max_file_bytes: int = 1_000_000  # larger documents: dropped "too_large"
    max_line_length: int = 500  # a snippet with a longer line: dropped "long_line"
    max_mean_line_length: int = 100  # a document with longer lines on average: "minified_or_generated"
    languages: Optional[list[str]] = None  # keep only these (canonical names, see tasks/seeds/languages.py)
    quotas: Optional[dict[str, int]] = None  # seeds per language; the paper: PAPER_QUOTAS
    content_column: str = "content"
    language_column: str = "lang"
    path_column: str = "path"
    repo_column: str = "repo"
    license_column: str = "license"
    hf_split: str = "train"
    hf_name: Optional[str] = None  # hub dataset configuration
    hf_data_dir: Optional[str] = None  # hub dataset sub-directory, e.g. "python" for starcoderdata
    hf_data_files: Optional[str | list[str]] = None  # data_files for load_dataset (with hf:json, hf:parquet...)
    shuffle_buffer: int = 5000  # documents held to shuffle JSONL/Parquet/hub sources
    cache_bytes: int = operational(256 << 20, description='source-tree text kept in memory between passes (0: re-read every pass)')
    max_idle_passes: int = 10  # stop after this many passes in a row that found no new snippet
    max_passes: Optional[int] = None  # hard cap on passes over the corpus (None: until exhausted)
    license: Optional[str] = None  # license recorded for sources without a license column
    repo: Optional[str] = None  # repository recorded for sources without a repo column

    @model_validator(mode="after")
    def _check(self) -> "SeedConfig":
        # UserError (not ValueError) so pydantic lets it through as the one-line message it is.
        if not str(self.source).strip():
            raise UserError("seed source is empty")
        if self.min_lines < 1 or self.max_lines < self.min_lines:
            raise UserError(f"snippet lines must satisfy 1 <= min_lines <= max_lines, got {self.min_lines}..{self.max_lines}")
        for name in ("max_file_bytes", "max_line_length", "max_mean_line_length", "shuffle_buffer", "max_idle_passes"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cache_bytes < 0:
            raise UserError(f"cache_bytes must be 0 or more, got {self.cache_bytes}")
        if self.max_passes is not None and self.max_passes < 1:
            raise UserError(f"max_passes must be at least 1, got {self.max_passes}")
        if self.languages is not None:
            langs = [canonical_language(lang) for lang in self.languages]
            if not langs or None in langs:
                raise UserError(f"languages must be a non-empty list of names, got {self.languages!r}")
            self.languages = list(dict.fromkeys(langs))
        if self.quotas is not None:
            quotas: dict[str, int] = {}
            for lang, count in self.quotas.items():
                key = canonical_language(lang)
                if key is None or isinstance(count, bool) or not isinstance(count, int) or count < 1:
                    raise UserError(f"bad quota {lang!r}={count!r}: each quota needs a language and a count >= 1")
                if key in quotas:
                    raise UserError(f"quota for {key!r} given twice")
                if self.languages is not None and key not in self.languages:
                    raise UserError(f"quota for {key!r} but languages is restricted to {', '.join(self.languages)}")
                quotas[key] = count
            if not quotas:
                raise UserError("quotas is empty: give at least one LANG=COUNT or leave quotas out")
            self.quotas = quotas
            self.num_seeds = sum(quotas.values())  # quotas decide the total
        if self.num_seeds is None or self.num_seeds < 1:
            raise UserError(f"num_seeds must be at least 1, got {self.num_seeds}")
        return self

    def corpus_options(self) -> CorpusOptions:
        explicit = self.model_fields_set
        optional_columns = ("language_column", "path_column", "repo_column", "license_column")
        langs = self.languages if self.languages is not None else (list(self.quotas) if self.quotas else None)
        return CorpusOptions(
            random_seed=self.random_seed,
            min_lines=self.min_lines,
            max_file_bytes=self.max_file_bytes,
            max_mean_line_length=self.max_mean_line_length,
            languages=frozenset(langs) if langs is not None else None,
            content_column=self.content_column,
            language_column=self.language_column,
            path_column=self.path_column,
            repo_column=self.repo_column,
            license_column=self.license_column,
            required_columns=frozenset(getattr(self, c) for c in optional_columns if c in explicit),
            hf_split=self.hf_split,
            hf_name=self.hf_name,
            hf_data_dir=self.hf_data_dir,
            hf_data_files=self.hf_data_files,
            shuffle_buffer=self.shuffle_buffer,
            cache_bytes=self.cache_bytes,
            license=self.license,
            repo=self.repo,
        )


def draw_window(n_lines: int, cfg: SeedConfig, pass_no: int, key: str) -> tuple[int, int]:
    """(start, length) of the snippet a document gives in a pass: length uniform, start so it fits."""
    h = hash128(cfg.random_seed, "snippet", pass_no, key)
    length = min(cfg.min_lines + (h & _MASK64) % (cfg.max_lines - cfg.min_lines + 1), n_lines)
    start = (h >> 64) % (n_lines - length + 1)
    return start, length


def windows(n_lines: int, cfg: SeedConfig) -> list[tuple[int, int]]:
    """Every distinct (start, length) a document of n_lines can give, in a fixed order."""
    top = min(cfg.max_lines, n_lines)
    return [(start, length) for length in range(min(cfg.min_lines, top), top + 1) for start in range(n_lines - length + 1)]


def window_count(n_lines: int, cfg: SeedConfig) -> int:
    top = min(cfg.max_lines, n_lines)
    return sum(n_lines - length + 1 for length in range(min(cfg.min_lines, top), top + 1))


class SmallDocuments:
    """Which windows short documents have given, so they are drawn without replacement.

    A short document has only a handful of distinct snippets, and the capped length makes
    the whole-document snippet its likeliest draw: drawing with replacement would stall long
    before it is exhausted. For documents with at most MAX_WINDOWS windows, a window drawn
    before is swapped for an undrawn one (chosen by hash), and an exhausted document is
    retired, so a small corpus ends exactly when it has nothing new to give. The first draw
    of every document is the plain draw. Memory: one small int per short document drawn,
    for at most MAX_TRACKED documents (beyond that, plain draws).
    """

    MAX_WINDOWS = 256
    MAX_TRACKED = 1_000_000

    def __init__(self, cfg: SeedConfig):
        self.cfg = cfg
        self.drawn: dict[str, int] = {}  # document key -> bitmask over windows()

    def exhausted(self, key: str, n_lines: int) -> bool:
        mask = self.drawn.get(key)
        return mask is not None and mask == (1 << window_count(n_lines, self.cfg)) - 1

    def draw(self, key: str, n_lines: int, pass_no: int) -> tuple[tuple[int, int], bool]:
        """(window, new_tracked): the window to cut, and whether it is a short document's new window."""
        window = draw_window(n_lines, self.cfg, pass_no, key)
        mask = self.drawn.get(key)
        if mask is None and (len(self.drawn) >= self.MAX_TRACKED or window_count(n_lines, self.cfg) > self.MAX_WINDOWS):
            return window, False  # a long document: plain draws, in practice never exhausted
        mask = mask or 0
        all_windows = windows(n_lines, self.cfg)
        index = all_windows.index(window)
        if mask >> index & 1:
            free = [i for i in range(len(all_windows)) if not mask >> i & 1]
            index = free[hash128(self.cfg.random_seed, "redraw", pass_no, key) % len(free)]
            window = all_windows[index]
        self.drawn[key] = mask | 1 << index
        return window, True


def cut_snippet(text: str, start: int, length: int) -> str:
    """Lines [start, start+length) of a "\\n"-normalised text, each with its own line ending."""
    parts = text.split("\n", start + length)
    body = "\n".join(parts[start : start + length])
    terminated = len(parts) > start + length  # the last line taken had a "\n" after it
    return body + "\n" if terminated else body


class SeedSampler:
    """Iterate to get Arrow tables of SEED_SCHEMA; `stats` fills in as it goes."""

    def __init__(self, cfg: SeedConfig, batch_size: int = 1000):
        if batch_size < 1:
            raise UserError("seed batch size must be at least 1")
        self.cfg = cfg
        self.batch_size = batch_size
        self.stats = StageStats("seeds")
        with timed(self.stats):
            self.corpus = open_corpus(cfg.source, cfg.corpus_options())  # unknown source fails here, eagerly

    def __iter__(self) -> Iterator[pa.Table]:
        cfg, stats, corpus = self.cfg, self.stats, self.corpus
        target = dict(cfg.quotas) if cfg.quotas else {ALL: cfg.num_seeds}
        made: Counter = Counter()
        per_lang: Counter = Counter()
        seen: set[int] = set()  # 8-byte hashes of kept snippets: the only state that grows with seeds
        # (SmallDocuments grows with the number of short documents, not seeds, and is capped)
        rows = _empty_columns()
        index = 0
        passes = drawn = usable = idle = 0
        small = SmallDocuments(cfg)

        def wanted(lang: str) -> bool:
            bucket = lang if cfg.quotas else ALL
            return made[bucket] < target.get(bucket, 0)

        def done() -> bool:
            return all(made[k] >= v for k, v in target.items())

        clock = time.perf_counter()  # time spent here, not in the consumer between batches
        pass_no = 0
        while not done() and (cfg.max_passes is None or pass_no < cfg.max_passes):
            gained = fresh = live = 0
            for item in corpus.documents(pass_no, wanted):
                if not isinstance(item, Document):
                    if pass_no == 0:  # a rejected document is counted once, when first met
                        stats.rows_in += 1
                        stats.drop(item.reason)
                    continue
                if not wanted(item.lang):
                    continue
                usable += pass_no == 0
                n_lines = item.n_lines
                if small.exhausted(item.key, n_lines):
                    continue  # every snippet it has was drawn already: nothing left to count
                live += 1
                drawn += 1
                stats.rows_in += 1
                (start, length), new_window = small.draw(item.key, n_lines, pass_no)
                fresh += new_window
                snippet = cut_snippet(item.text, start, length)
                reason = self._snippet_problem(snippet, seen)
                if reason:
                    stats.drop(reason)
                    continue
                stats.rows_out += 1
                made[item.lang if cfg.quotas else ALL] += 1
                per_lang[item.lang] += 1
                gained += 1
                _append(rows, index, snippet, item, corpus.seed_source, start, length)
                index += 1
                if len(rows["seed_index"]) >= self.batch_size:
                    table, rows = _to_table(rows), _empty_columns()
                    stats.seconds += time.perf_counter() - clock
                    yield table
                    clock = time.perf_counter()
                if done():
                    break
            passes = pass_no + 1
            if done() or live == 0:
                break
            # A pass that drew a window a short document had not given yet is progress even
            # without a new seed: short documents are finite, so this still terminates.
            idle = 0 if gained or fresh else idle + 1
            if idle >= cfg.max_idle_passes:
                break
            pass_no += 1
        stats.seconds += time.perf_counter() - clock
        getattr(corpus, "close", lambda: None)()
        if rows["seed_index"]:
            yield _to_table(rows)
        if stats.rows_out == 0:
            summary = ", ".join(f"{r} {n}" for r, n in stats.dropped.most_common()) or "nothing dropped"
            raise UserError(f"seed source {cfg.source!r} gave no usable snippets (dropped: {summary})")
        shortfall = {k: v - made[k] for k, v in target.items() if made[k] < v}
        stats.extra.update(
            {
                "source": cfg.source,
                "seed_source": corpus.seed_source,
                "corpus": corpus.description,
                **corpus.stats,
                "documents_usable": usable,
                "passes": passes,
                "snippets_drawn": drawn,
                "seeds_per_lang": dict(sorted(per_lang.items())),
                "quotas": dict(cfg.quotas) if cfg.quotas else None,
                "shortfall": shortfall,
            }
        )
        if shortfall:
            log.warning("seed corpus %s could not fill: %s (after %d passes)", cfg.source, shortfall, passes)

    def _snippet_problem(self, snippet: str, seen: set[int]) -> str | None:
        stripped = snippet.strip()
        if not stripped:
            return "empty_snippet"
        if any(len(line) > self.cfg.max_line_length for line in snippet.split("\n")):
            return "long_line"
        digest = xxhash.xxh3_64_intdigest(stripped.encode("utf-8"))
        if digest in seen:
            return "duplicate_snippet"
        seen.add(digest)
        return None


def _empty_columns() -> dict[str, list]:
    return {name: [] for name in SEED_SCHEMA.names}


def _append(rows: dict, index: int, snippet: str, doc: Document, seed_source: str, start: int, length: int) -> None:
    rows["seed_index"].append(index)
    rows["seed"].append(snippet)
    rows["lang"].append(doc.lang)
    rows["seed_source"].append(seed_source)
    rows["seed_path"].append(doc.path)
    rows["seed_repo"].append(doc.repo)
    rows["seed_license"].append(doc.license)
    rows["seed_start_line"].append(start + 1)
    rows["seed_end_line"].append(start + length)


def _to_table(rows: dict) -> pa.Table:
    return pa.table(rows, schema=SEED_SCHEMA)


def sample_seeds(cfg: SeedConfig, batch_size: int = 1000) -> tuple[Iterator[pa.Table], StageStats]:
    """Stream seed tables (seed_index 0..N-1 in sampling order) and the "seeds" StageStats.

    The source is opened eagerly, so an unknown source or a missing column raises UserError
    here; an empty corpus raises UserError from the iterator. The stats are complete once the
    iterator is exhausted: rows_in = rejected documents + snippets drawn = rows_out + dropped.
    """
    sampler = SeedSampler(cfg, batch_size)
    return iter(sampler), sampler.stats
