"""Validation: planted passing and failing pairs end exactly as planted, each drop with its reason."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tasks.core.errors import UserError
from tasks.core.schema import AUDIT_SCHEMA
from tasks.core.stats import StageStats
from tasks.core.step import run_step
from tasks.sandbox import isolation
from tasks.validation.code import extract_code
from tasks.validation.validate import STATUS, ValidationConfig, Validator, validation_summary

CFG = ValidationConfig(seconds=3.0, workers=2, unverified="drop")

ADD = "```python\ndef add(a, b):\n    return a + b\n```\n\nThis adds two numbers."
# name -> (solution, tests, lang, expected status or drop reason)
PAIRS = {
    "passes_asserts": (ADD, "```python\nassert add(1, 2) == 3\nassert add(-1, 1) == 0\n```", "python", "passed"),
    "passes_functions": (ADD, "def test_add():\n    assert add(2, 2) == 4\n\ndef test_zero():\n    assert add(0, 0) == 0\n",
                         "python", "passed"),
    "passes_unittest": (ADD, "import unittest\nclass T(unittest.TestCase):\n    def test_it(self):\n"
                             "        self.assertEqual(add(1, 1), 2)\n", "Python", "passed"),
    "wrong_answer": (ADD, "assert add(1, 2) == 4, 'add is wrong'\n", "python", "tests_failed"),
    "failing_test_function": (ADD, "def test_add():\n    assert add(2, 2) == 5\n", "python", "tests_failed"),
    "failing_unittest": (ADD, "import unittest\nclass T(unittest.TestCase):\n    def test_it(self):\n"
                              "        self.assertEqual(add(1, 1), 3)\n", "python", "tests_failed"),
    "crashes": ("def add(a, b):\n    return a / 0\n", "assert add(1, 2) == 3\n", "python", "runtime_error"),
    "syntax": ("def add(a, b:\n    return a + b\n", "assert add(1, 2) == 3\n", "python", "syntax_error"),
    "hangs": ("def add(a, b):\n    while True:\n        pass\n", "assert add(1, 2) == 3\n", "python", "timeout"),
    "exits_early": (ADD, "import sys\nsys.exit(0)\nassert add(1, 2) == 4\n", "python", "crash"),
    "forges_a_pass": (ADD, "import os\nfor fd in range(64):\n    try:\n        os.write(fd, b'{\"passed\": true}')\n"
                           "    except Exception:\n        pass\nassert add(1, 2) == 4\n", "python", "forged_result"),
    "no_tests": (ADD, "", "python", "no_tests"),
    "prose_only_tests": (ADD, "Run it and check the output.", "python", "syntax_error"),
    "swift": ("func main() {}", "assert(true)", "swift", "no_runner"),  # no runner for Swift anywhere
}  # fmt: skip


def _table(names=None) -> pa.Table:
    names = names or list(PAIRS)
    return pa.table({
        "id": names,
        "problem": [f"problem {n}" for n in names],
        "solution": [PAIRS[n][0] for n in names],
        "tests": [PAIRS[n][1] for n in names],
        "lang": [PAIRS[n][2] for n in names],
    })  # fmt: skip


def test_planted_pairs_end_as_planted_with_one_reason_each():
    stats = StageStats("validate")
    with Validator(CFG) as validator:
        out = run_step(validator, _table(), stats)
        summary = validation_summary(validator)
    kept = dict(zip(out.kept["id"].to_pylist(), out.kept[STATUS].to_pylist()))
    assert kept == {n: "passed" for n, p in PAIRS.items() if p[3] == "passed"}
    reasons = dict(zip(out.audit["id"].to_pylist(), out.audit["reason"].to_pylist()))
    assert reasons == {n: p[3] for n, p in PAIRS.items() if p[3] != "passed"}
    assert out.audit.schema == AUDIT_SCHEMA and set(out.audit["stage"].to_pylist()) == {"validate"}
    assert stats.rows_in == len(PAIRS) and stats.rows_out == 3 and stats.dropped["tests_failed"] == 3
    assert all(s > 0 for s in out.kept["validation_seconds"].to_pylist())
    assert summary["isolation"] == "bwrap"
    assert summary["by_language"]["swift"] == {"no_runner": 1}
    assert summary["pass_rate"]["python"] == round(3 / 12, 4)  # no_tests rows never ran


def test_the_audit_says_what_failed_and_where():
    with Validator(CFG) as validator:
        out = validator.apply(_table(["wrong_answer", "crashes", "failing_test_function"]))
    detail = dict(zip(out.audit["id"].to_pylist(), out.audit["detail"].to_pylist()))
    assert detail["wrong_answer"] == "add is wrong at <tests>:1"
    assert "ZeroDivisionError" in detail["crashes"] and "<solution>:2" in detail["crashes"]
    assert detail["failing_test_function"].startswith("test_add: AssertionError")


def test_stderr_of_a_failure_is_excerpted():
    tests = "import sys\nprint('debugging add', file=sys.stderr)\nassert add(1, 2) == 4\n"
    with Validator(CFG) as validator:
        out = validator.apply(pa.table({"solution": [ADD], "tests": [tests]}))
    assert "stderr: debugging add" in out.audit["detail"][0].as_py()


def test_unverified_languages_are_kept_when_the_policy_says_so():
    assert ValidationConfig().unverified == "keep"  # the default: marked and counted, not lost
    with Validator(CFG.model_copy(update={"unverified": "keep"})) as validator:
        out = validator.apply(_table(["swift", "passes_asserts"]))
    assert out.kept[STATUS].to_pylist() == ["unverified", "passed"]
    assert out.kept["validation_seconds"].to_pylist()[0] is None
    assert out.audit.num_rows == 0


def test_limits_are_part_of_the_fingerprint_workers_are_not():
    base = ValidationConfig()
    assert base.content_fingerprint() != base.model_copy(update={"seconds": 5.0}).content_fingerprint()
    assert base.content_fingerprint() == base.model_copy(update={"workers": 7}).content_fingerprint()


def test_without_bubblewrap_validation_refuses_unless_weak_is_accepted(monkeypatch, tmp_path):
    monkeypatch.setattr(isolation, "bwrap_problem", lambda: "bubblewrap (bwrap) is not installed")
    with Validator(CFG) as validator, pytest.raises(UserError, match="accept-weak-sandbox"):
        validator.apply(_table(["passes_asserts"]))
    weak = CFG.model_copy(update={"accept_weak_sandbox": True})
    with Validator(weak) as validator:
        out = validator.apply(_table(["passes_asserts", "wrong_answer"]))
        assert validation_summary(validator)["isolation"] == "weak"
    assert out.kept["id"].to_pylist() == ["passes_asserts"]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("def f():\n    pass", "def f():\n    pass\n"),
        ("Here:\n```python\nx = 1\n```\nand\n```py\ny = 2\n```\nRun:\n```bash\npython x.py\n```", "x = 1\n\ny = 2\n"),
        ("```\nz = 3\n```", "z = 3\n"),
        ("```bash\nls\n```", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_markdown_fences_are_stripped(text, code):
    assert extract_code(text) == code


def test_the_prefect_task_validates_staged_files(prefect_server, tmp_path):
    import pyarrow.parquet as pq
    from prefect import flow

    from tasks.validation.step import validate_task

    src = tmp_path / "pairs.parquet"
    pq.write_table(_table(["passes_asserts", "wrong_answer", "no_tests"]), src)

    @flow
    def run():
        return validate_task([str(src)], CFG, tmp_path / "validated")

    staged = run()
    assert staged.stats.rows_in == 3 and staged.stats.rows_out == 1
    assert dict(staged.stats.dropped) == {"tests_failed": 1, "no_tests": 1}
    assert staged.stats.extra["isolation"] == "bwrap"
    assert pq.read_table(staged.files[0])["id"].to_pylist() == ["passes_asserts"]
    assert sorted(staged.audit["reason"].to_pylist()) == ["no_tests", "tests_failed"]
