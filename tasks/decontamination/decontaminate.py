"""Benchmark decontamination: remove samples that contain an evaluation problem.

`decontaminate(table, cfg)` runs every configured matcher (tasks/decontamination/matchers.py) over every
row, so the report shows what each matcher catches, and removes a row when any of them
flags it. The row's audit record names the first matcher (in `cfg.matchers` order) that
flagged it, the benchmark, the item and the matched span. Benchmarks that could not be
loaded are listed by name in the stats; `require_all=True` makes them an error instead.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, field_validator

from tasks.core.errors import UserError
from tasks.core.config import FingerprintedConfig, operational
from tasks.core.schema import AUDIT_SCHEMA
from tasks.decontamination.benchmarks import ALL_BENCHMARKS, BenchmarkFileError, BenchmarkItem, BenchmarkSet, load_benchmarks
from tasks.decontamination.matchers import MATCHERS, Hit, MinhashMatcher, NgramMatcher, SubstringMatcher, Whitelist, words
from tasks.core.stats import StageStats
from tasks.core.step import StepOutput, run_step

STAGE = "decontaminate"
# Matches computed ahead (in a worker process, as each generation shard lands) travel in this column.
CONTAMINATION = "_contamination"
MATCH_CHUNK_ROWS = 50_000  # rows matched per step call in a dataset pass: enough to keep the workers busy
REASON_PREFIX = "contaminated_by_"  # + matcher name: the drop reason in stats and audit

MatcherName = Literal["substring", "ngram", "minhash"]


class DecontaminationConfig(FingerprintedConfig):
    """Which benchmarks, which matchers, and how strict. Defaults suit OSS-Instruct samples."""

    benchmarks: list[str] = Field(default_factory=lambda: list(ALL_BENCHMARKS),
                                  description="registered benchmark names (tasks/decontamination/benchmarks.py)")
    benchmark_dir: str | None = Field(
        default_factory=lambda: os.environ.get("OSSFORGE_BENCHMARK_DIR") or None,
        description="directory with benchmark files, tried first (default: $OSSFORGE_BENCHMARK_DIR)",
    )
    allow_hub: bool = Field(True, description="try the Hugging Face hub for benchmarks not in benchmark_dir")
    hub_timeout_s: float = operational(5.0, gt=0, description="the one reachability probe of the hub")
    require_all: bool = Field(False, description="fail instead of reporting benchmarks that cannot be loaded")
    require_benchmarks: list[str] = operational(
        default_factory=list, description="benchmarks that must load, or ['all']: a missing one is an error, not a partial check"
    )
    matchers: list[MatcherName] = Field(default_factory=lambda: list(MATCHERS))
    # n-gram overlap
    ngram_n: int = Field(13, ge=3)
    ngram_min_count: int = Field(8, ge=1, description="flag when this many distinct n-grams of one item are shared")
    ngram_min_ratio: float = Field(0.5, gt=0, le=1, description="...or this fraction of one item's n-grams")
    ngram_max_items: int = Field(5, ge=1, description="an n-gram in more problems than this is boilerplate, ignored")
    # MinHash near match
    minhash_threshold: float = Field(0.5, gt=0, le=1, description="estimated Jaccard to flag a row")
    minhash_num_perm: int = Field(128, ge=16)
    minhash_code_ngram: int = Field(5, ge=1, description="code-token shingle length for solutions")
    minhash_seed: int = 1
    minhash_min_words: int = Field(10, ge=1, description="distinct content words a problem text needs to be compared")
    minhash_min_code_tokens: int = Field(30, ge=1, description="code tokens a solution needs to be compared")
    minhash_verify_exact: bool = Field(True, description="confirm LSH candidates with the exact Jaccard of shingles")
    # whitelist: strings too trivial to count as contamination
    whitelist: list[str] = Field(default_factory=list, description="benchmark strings never to match")
    min_pattern_chars: int = Field(20, ge=0)
    min_pattern_words: int = Field(6, ge=0)
    min_single_line_words: int = Field(12, ge=0, description="one-line solutions/tests shorter than this are ignored")
    # execution
    workers: int = operational(0, ge=0, description="processes (0 = one per core)")
    parallel_min_rows: int = operational(4000, ge=1, description="below this, match in-process")
    chunk_rows: int = Field(2000, ge=1)

    @field_validator("benchmarks")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in ALL_BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(ALL_BENCHMARKS)}")
        return names

    @field_validator("require_benchmarks")
    @classmethod
    def _known_required(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n != "all" and n not in ALL_BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; known: all, {', '.join(ALL_BENCHMARKS)}")
        return names

    def required_benchmarks(self) -> list[str]:
        """The benchmarks whose absence is an error: every requested one under require_all or 'all'."""
        if self.require_all or "all" in self.require_benchmarks:
            return list(self.benchmarks)
        return list(dict.fromkeys(self.require_benchmarks))

    @field_validator("matchers")
    @classmethod
    def _some(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("at least one matcher is needed")
        return list(dict.fromkeys(names))

    def index_key(self) -> str:
        """The fields that shape the index (not how it is run)."""
        return json.dumps(self.model_dump(exclude={"workers", "parallel_min_rows", "chunk_rows"}), sort_keys=True)


@dataclass
class BenchmarkIndex:
    items: list[BenchmarkItem]
    benchmarks: BenchmarkSet
    matchers: dict  # name -> matcher, in cfg.matchers order

    def match(self, problems: list[str], solutions: list[str]) -> dict[str, list]:
        """Per matcher name, its hit (or None) per row; under NEAR + name, per row, its
        closest unflagged candidate per benchmark (for the report's nearest kept rows)."""
        # ngram and minhash both read the problem as words: split it once.
        shared = [words(p) for p in problems] if {"ngram", "minhash"} <= set(self.matchers) else None
        out: dict[str, list] = {}
        for name, m in self.matchers.items():
            near: list[dict[str, Hit]] = [{} for _ in problems]
            out[name] = m.match(problems, solutions, problem_words=shared, near=near)
            out[NEAR + name] = near
        return out


NEAR = "near:"  # key prefix of the near misses in BenchmarkIndex.match's answer


def build_index(cfg: DecontaminationConfig) -> BenchmarkIndex:
    return _cached_index(cfg.index_key())


@lru_cache(maxsize=4)
def _cached_index(key: str) -> BenchmarkIndex:
    cfg = DecontaminationConfig.model_validate_json(key)
    if cfg.benchmark_dir and not os.path.isdir(cfg.benchmark_dir):
        raise UserError(f"benchmark directory {cfg.benchmark_dir!r} does not exist")
    try:
        loaded = load_benchmarks(cfg.benchmarks, cfg.benchmark_dir, cfg.allow_hub, cfg.hub_timeout_s)
    except BenchmarkFileError as exc:
        raise UserError(str(exc)) from None
    if cfg.require_all and loaded.missing:
        raise UserError("benchmarks not available: " + "; ".join(f"{k}: {v}" for k, v in loaded.missing.items()))
    check_required(cfg, loaded.missing)
    items = loaded.items
    whitelist = Whitelist(frozenset(" ".join(s.split()).lower() for s in cfg.whitelist), cfg.min_pattern_chars,
                          cfg.min_pattern_words, cfg.min_single_line_words)
    builders = {
        "substring": lambda: SubstringMatcher(items, whitelist),
        "ngram": lambda: NgramMatcher(items, whitelist, cfg.ngram_n, cfg.ngram_min_count, cfg.ngram_min_ratio,
                                      cfg.ngram_max_items),
        "minhash": lambda: MinhashMatcher(items, whitelist, cfg.minhash_threshold, cfg.minhash_num_perm,
                                          cfg.minhash_code_ngram, cfg.minhash_seed, cfg.minhash_min_words,
                                          cfg.minhash_min_code_tokens, cfg.minhash_verify_exact),
    }
    return BenchmarkIndex(items, loaded, {name: builders[name]() for name in cfg.matchers})


def check_required(cfg: DecontaminationConfig, missing: dict[str, str]) -> None:
    """UserError when a benchmark the user requires is not checked (not requested, or could not load)."""
    not_requested = [n for n in cfg.required_benchmarks() if n not in cfg.benchmarks]
    if not_requested:
        raise UserError(f"required benchmark(s) {', '.join(not_requested)} are not among the benchmarks checked")
    absent = {n: missing[n] for n in cfg.required_benchmarks() if n in missing}
    if absent:
        raise UserError(
            "required benchmark(s) could not be loaded (give --benchmark-dir with their files): "
            + "; ".join(f"{k}: {v}" for k, v in absent.items())
        )


def require_benchmarks(cfg: DecontaminationConfig) -> None:
    """Load the index now when benchmarks are required, so a missing one fails before any work."""
    if cfg.required_benchmarks():
        build_index(cfg)


# --- running the matchers, in-process or in worker processes ------------------------------

_WORKER_INDEX: BenchmarkIndex | None = None


def _init_worker(index: BenchmarkIndex) -> None:
    global _WORKER_INDEX
    _WORKER_INDEX = index


def _texts(table: pa.Table, column: str) -> list[str]:
    return pc.fill_null(pc.cast(table.column(column), pa.string()), "").to_pylist()


def _match_table(index: BenchmarkIndex, table: pa.Table) -> dict[str, list[Hit | None]]:
    return index.match(_texts(table, "problem"), _texts(table, "solution"))


def _ipc_bytes(table: pa.Table) -> bytes:
    # A pickled slice carries its parent's whole buffers; the IPC format writes only the slice.
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _match_in_worker(payload: bytes) -> dict[str, list[Hit | None]]:
    # Workers get Arrow IPC bytes and make the Python strings themselves, so the parent neither
    # converts nor pickles 2 KB strings one by one.
    return _match_table(_WORKER_INDEX, pa.ipc.open_stream(payload).read_all())


class ContaminationFilter:
    """The decontamination step (tasks/core/step.py) over rows matched ahead: their
    CONTAMINATION column says which rows go and why; the filter counts what each matcher
    caught among the rows it sees."""

    stage = STAGE

    def __init__(self) -> None:
        self._rows_seen = 0
        self.flagged_by: dict[str, Counter] = defaultdict(Counter)  # benchmark -> matcher -> rows it flagged
        self.removed_by: dict[str, Counter] = defaultdict(Counter)  # benchmark -> matcher -> rows it removed
        self.nearest_kept: dict[str, dict[str, dict]] = defaultdict(dict)  # benchmark -> matcher -> closest kept row

    def _found(self, table: pa.Table) -> list[str | None]:
        return table.column(CONTAMINATION).to_pylist()

    def apply(self, table: pa.Table) -> StepOutput:
        """Kept rows (every column) and the audit of the removed ones."""
        found = self._found(table)
        ids = (table.column("id").to_pylist() if "id" in table.column_names
               else [str(self._rows_seen + i) for i in range(table.num_rows)])
        self._rows_seen += table.num_rows
        audit = []
        removed = [False] * len(found)
        for row, record in enumerate(found):
            if record is None:
                continue
            hit = json.loads(record)
            if "benchmark" not in hit:  # kept: only its near misses
                self._note_nearest(ids[row], hit["near"])
                continue
            removed[row] = True
            for benchmark, matcher in hit["flagged"]:
                self.flagged_by[benchmark][matcher] += 1
            self.removed_by[hit["benchmark"]][hit["matcher"]] += 1
            audit.append({
                "id": ids[row], "stage": STAGE, "reason": REASON_PREFIX + hit["matcher"], "benchmark": hit["benchmark"],
                "benchmark_item": hit["benchmark_item"], "matcher": hit["matcher"], "matched_span": hit["matched_span"],
                "problem": _texts(table.slice(row, 1), "problem")[0],
                "solution": _texts(table.slice(row, 1), "solution")[0],
            })
        keep = pa.array([not r for r in removed], type=pa.bool_())
        kept = table.filter(keep) if table.num_rows else table
        return StepOutput(kept, pa.Table.from_pylist(audit, schema=AUDIT_SCHEMA))

    def _note_nearest(self, row_id: str, near: list) -> None:
        for benchmark, matcher, item_id, score, detail in near:
            best = self.nearest_kept[benchmark].get(matcher)
            if best is None or score > best["score"]:
                self.nearest_kept[benchmark][matcher] = {"id": row_id, "benchmark_item": item_id, "score": score,
                                                         "detail": detail}

    def figures(self, index_figures: dict) -> dict:
        """What was checked (`index_figures`, from the index that matched) and what each
        matcher caught (the stage's `extra`), with the kept row each matcher came closest to
        removing, per benchmark (`nearest_kept`)."""
        matchers = index_figures["matchers"]
        return {
            "matchers": matchers,
            "removed": {b: dict(c) for b, c in sorted(self.removed_by.items())},
            "nearest_kept": {b: dict(sorted(m.items())) for b, m in sorted(self.nearest_kept.items())},
            "flagged": {b: dict(c) for b, c in sorted(self.flagged_by.items())},
            "flagged_per_matcher": {m: sum(c[m] for c in self.flagged_by.values()) for m in matchers},
            **{k: v for k, v in index_figures.items() if k != "matchers"},
        }


class Decontaminator(ContaminationFilter):
    """The decontamination step (tasks/core/step.py): one index and one worker pool for as
    many tables as a dataset has.

    `with Decontaminator(cfg) as d: out = run_step(d, table, stats)`, table after table;
    `d.figures()` says what was checked and what each matcher caught, for `stats.extra`.
    """

    stage = STAGE

    def __init__(self, cfg: DecontaminationConfig):
        super().__init__()
        self.cfg = cfg
        started = time.perf_counter()
        self.index = build_index(cfg)
        self.setup_seconds = time.perf_counter() - started  # loading benchmarks, building the index
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "Decontaminator":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def new_stats(self) -> StageStats:
        """The stage's stats before any row: the index's build time, no counts."""
        return StageStats(STAGE, seconds=self.setup_seconds)

    def _run_matchers(self, table: pa.Table) -> dict[str, list[Hit | None]]:
        n, step = table.num_rows, self.cfg.chunk_rows
        table = table.select(["problem", "solution"])
        workers = self.cfg.workers or os.cpu_count() or 1
        if n < self.cfg.parallel_min_rows or workers <= 1:
            parts = [_match_table(self.index, table.slice(i, step)) for i in range(0, n, step)]
        else:
            if self._pool is None:
                # "spawn": the caller may be a Prefect flow with threads running; forking those is
                # unsafe. The index goes to each worker once (initializer), texts once per chunk.
                self._pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                                 initializer=_init_worker, initargs=(self.index,))
            futures = [self._pool.submit(_match_in_worker, _ipc_bytes(table.slice(i, step)))
                       for i in range(0, n, step)]
            parts = [f.result() for f in futures]
        return {key: [hit for part in parts for hit in part[key]] for key in parts[0]} if parts else {}

    def contamination_column(self, table: pa.Table) -> pa.Array:
        """Per row: JSON naming the first hit (benchmark, item, matcher, span) and every
        (benchmark, matcher) that flagged it; for a row no matcher flags, null, or JSON with
        only "near": its closest call per benchmark and matcher (it is kept). Row by row, so
        it can be computed ahead (in a worker, as each generation shard lands) and applied later."""
        for column in ("problem", "solution"):
            if table.num_rows and column not in table.column_names:  # an empty table may have no columns
                raise UserError(f"input has no {column!r} column (columns: {', '.join(table.column_names)})")
        hits = self._run_matchers(table) if table.num_rows else {}
        out: list[str | None] = []
        for row in range(table.num_rows):
            row_hits = [(name, hits[name][row]) for name in self.index.matchers if hits[name][row] is not None]
            if not row_hits:
                near = [[benchmark, name, self.index.items[hit.item].item_id, round(hit.score, 4), hit.span]
                        for name in self.index.matchers for benchmark, hit in hits[NEAR + name][row].items()]
                out.append(json.dumps({"near": near}) if near else None)
                continue
            first = row_hits[0][1]
            item = self.index.items[first.item]
            out.append(json.dumps({
                "benchmark": item.benchmark, "benchmark_item": item.item_id, "matcher": first.matcher,
                "matched_span": first.span,
                "flagged": [[self.index.items[hit.item].benchmark, name] for name, hit in row_hits],
            }))
        return pa.array(out, pa.string())

    def _found(self, table: pa.Table) -> list[str | None]:
        # Rows matched ahead carry their matches; the others are matched now.
        if CONTAMINATION in table.column_names:
            return super()._found(table)
        return self.contamination_column(table).to_pylist()

    def index_figures(self) -> dict:
        """What this index checks: matchers, whitelisted strings, benchmarks loaded and missing."""
        return {
            "matchers": list(self.index.matchers),
            "whitelisted_strings": {name: m.whitelisted for name, m in self.index.matchers.items()},
            **self.index.benchmarks.summary(),
        }

    def figures(self, index_figures: dict | None = None) -> dict:
        return super().figures(index_figures or self.index_figures())


# --- one table at a time ---------------------------------------------------------------


def decontaminate(table: pa.Table, cfg: DecontaminationConfig | None = None
                  ) -> tuple[pa.Table, pa.Table, StageStats]:
    """(kept rows with all their columns, audit rows of removed ones, stats)."""
    with Decontaminator(cfg or DecontaminationConfig()) as step:
        stats = step.new_stats()
        out = run_step(step, table, stats)
        stats.extra = step.figures()
        return out.kept, out.audit, stats


def decontamination_report_markdown(stats: StageStats | dict) -> str:
    """A summary for the Prefect artifact: what was checked, what was missing, what was removed."""
    data = stats.as_dict() if isinstance(stats, StageStats) else stats
    extra = data.get("extra", {})
    matchers = extra.get("matchers", list(MATCHERS))
    lines = [
        f"# Benchmark decontamination: {data['in'] - data['out']} of {data['in']} rows removed",
        "",
        f"Matchers: {', '.join(matchers)}. A row is removed when any matcher flags it; it is "
        "attributed to the first matcher in this order.",
        "",
        "| benchmark | items | source | " + " | ".join(f"removed ({m})" for m in matchers) + " | flagged by each |",
        "| --- | ---: | --- | " + " | ".join("---:" for _ in matchers) + " | --- |",
    ]
    removed, flagged = extra.get("removed", {}), extra.get("flagged", {})
    for name, info in extra.get("loaded", {}).items():
        counts = " | ".join(str(removed.get(name, {}).get(m, 0)) for m in matchers)
        each = ", ".join(f"{m}: {n}" for m, n in flagged.get(name, {}).items()) or "-"
        lines.append(f"| {name} | {info['items']} | `{info['source']}` | {counts} | {each} |")
    nearest = extra.get("nearest_kept", {})
    if nearest:
        lines += ["", "Kept rows that came closest to removal (per benchmark and matcher; score: the matcher's "
                  "measure, flagged from its threshold up):", "",
                  "| benchmark | matcher | row | nearest item | score | detail |", "| --- | --- | --- | --- | ---: | --- |"]
        for name, per_matcher in nearest.items():
            for matcher, near in per_matcher.items():
                detail = str(near["detail"]).replace("|", "\\|")
                lines.append(f"| {name} | {matcher} | `{near['id']}` | {near['benchmark_item']} | {near['score']} | {detail} |")
    missing = extra.get("missing_reasons", {})
    lines.append("")
    if missing:
        lines.append(f"**Not checked ({len(missing)} benchmark(s) could not be loaded):**")
        lines.append("")
        lines += [f"- `{name}`: {why}" for name, why in missing.items()]
    else:
        lines.append("All requested benchmarks were loaded.")
    lines += ["", f"Whitelisted (trivial) benchmark strings ignored: {extra.get('whitelisted_strings', {})}.",
              f"Time: {data.get('seconds', 0)} s."]
    return "\n".join(lines)
