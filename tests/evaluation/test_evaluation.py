"""Evaluation pieces: benchmark loading, prompts, code extraction, pass@1 arithmetic."""

from __future__ import annotations

import pytest

from tasks.core.errors import UserError
from tasks.evaluation.benchmarks import find_data_file, load_benchmark, mbpp_inputs, parse_benchmarks
from tasks.evaluation.scoring import (
    build_prompt,
    extract_code,
    instruction_and_prefix,
    mbpp_description_and_assertion,
    program_for,
    summarize,
)
from tasks.core.chat_template import format_prompt


def test_parse_benchmarks():
    assert parse_benchmarks("humaneval, HumanEval+,mbpp+,humaneval") == ["humaneval", "humaneval+", "mbpp+"]
    with pytest.raises(UserError, match="unknown benchmark 'mbpp'"):
        parse_benchmarks("mbpp")
    with pytest.raises(UserError):
        parse_benchmarks(" , ")


def test_humaneval_loads_offline_from_the_package():
    problems = load_benchmark("humaneval", limit=2)
    assert [p.task_id for p in problems] == ["HumanEval/0", "HumanEval/1"]
    assert problems[0].entry_point == "has_close_elements" and "def check" in problems[0].test
    assert problems[0].base_inputs is None


def test_plus_benchmarks_load_from_a_directory(shared_benchmarks, tmp_path):
    he = load_benchmark("humaneval+", shared_benchmarks, tmp_path)
    mb = load_benchmark("mbpp+", shared_benchmarks, tmp_path)
    assert (len(he), len(mb)) == (164, 378)
    assert sum(len(p.plus_inputs) for p in mb) == 39_841
    assert {p.dataset for p in he} == {"humaneval"} and {p.dataset for p in mb} == {"mbpp"}
    assert len(he[0].source_sha256) == 64
    # JSON has no tuples: MBPP+ inputs get their Python types back per task.
    assert mb[0].task_id == "Mbpp/2" and mb[0].base_inputs[0] == [(3, 4, 5, 6), (5, 7, 4, 10)]


def test_missing_plus_data_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("OSSFORGE_OFFLINE", "1")
    with pytest.raises(UserError, match="--benchmark-dir"):
        load_benchmark("humaneval+", None, tmp_path / "empty-cache")
    with pytest.raises(UserError, match="does not exist"):
        find_data_file("mbpp+", tmp_path / "nowhere", tmp_path)
    # A directory without the file falls through to the (empty) cache, then to the refusal.
    with pytest.raises(UserError, match="MbppPlus.jsonl.gz"):
        find_data_file("mbpp+", tmp_path, tmp_path)


def test_mbpp_input_types():
    assert mbpp_inputs("Mbpp/2", [[[1, 2], [3]]]) == [[(1, 2), (3,)]]
    assert mbpp_inputs("Mbpp/63", [[[[1, 2], [3, 4]]]]) == [[[(1, 2), (3, 4)]]]
    assert mbpp_inputs("Mbpp/252", [[3]]) == [[complex(3)]]
    assert mbpp_inputs("Mbpp/580", [[[1, [2, 3]]]]) == [((1, (2, 3)),)]
    assert mbpp_inputs("Mbpp/722", [[{"a": [1, 2]}, 5]]) == [[{"a": (1, 2)}, 5]]
    assert mbpp_inputs("Mbpp/3", [[7]]) == [[7]]


def test_prompts_use_the_training_template(shared_benchmarks):
    (he,) = load_benchmark("humaneval", limit=1)
    (mb,) = load_benchmark("mbpp+", shared_benchmarks, limit=1)
    instruction, prefix = instruction_and_prefix(he)
    assert build_prompt(he) == format_prompt(instruction) + prefix
    assert prefix.startswith("```python\nfrom typing import List") and he.prompt.strip() in instruction
    instruction, prefix = instruction_and_prefix(mb)
    assert prefix == "```python\n"
    assert instruction.startswith("Write a function to find the shared elements from the given two lists.")
    assert "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))" in instruction


def test_mbpp_description_and_assertion():
    description, assertion = mbpp_description_and_assertion('"""\nWrite a function\nto add\nassert add(1, 2) == 3\n"""\n')
    assert description == "Write a function to add."
    assert assertion == "assert add(1, 2) == 3"


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
        ("```python\ndef f():\n    return 1", "def f():\n    return 1"),  # cut off by the token budget
        ("```\nprint(1)\n```\n```python\ndef f(): pass\n```", "def f(): pass\n"),  # the block defining f
        ("```text\nnotes\n```\n```python\nx = 1\n```", "x = 1\n"),  # the Python block
        ("def f():\n    return 2\n", "def f():\n    return 2"),  # no fence: the raw reply
    ],
)
def test_extract_code(reply, expected):
    assert extract_code(reply, "f") == expected


def test_program_for_continuation_and_full_function(shared_benchmarks):
    (he,) = load_benchmark("humaneval", limit=1)
    body = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```\ntext"
    program = program_for(he, body)
    assert program.startswith(he.prompt.strip()) and program.rstrip().endswith("numbers[i + 1:])")
    full = "\nI rewrote it:\n```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    # The response prefix opened a block the model closed at once; the block that defines the
    # entry point wins.
    assert program_for(he, "```" + full) == "def has_close_elements(numbers, threshold):\n    return False\n"
    (mb,) = load_benchmark("mbpp+", shared_benchmarks, limit=1)
    assert program_for(mb, "def similar_elements(a, b):\n    return ()\n```") == "def similar_elements(a, b):\n    return ()\n"


def test_summarize_pass_at_1():
    rows = [
        {"benchmark": "humaneval", "passed_base": True, "passed_plus": None, "error": None},
        {"benchmark": "humaneval", "passed_base": False, "passed_plus": None, "error": "timeout"},
        {"benchmark": "mbpp+", "passed_base": True, "passed_plus": False, "error": "wrong_answer"},
        {"benchmark": "mbpp+", "passed_base": True, "passed_plus": True, "error": None},
        {"benchmark": "mbpp+", "passed_base": False, "passed_plus": False, "error": "wrong_answer"},
        {"benchmark": "mbpp+", "passed_base": False, "passed_plus": False, "error": "syntax_error"},
    ]
    summary = summarize(rows)
    assert summary["humaneval"] == {"problems": 2, "pass@1": 0.5, "passed": 1, "errors": {"timeout": 1}}
    assert summary["mbpp+"]["pass@1"] == 0.5 and summary["mbpp+"]["plus_pass@1"] == 0.25
    assert summary["mbpp+"]["errors"] == {"wrong_answer": 2, "syntax_error": 1}


def test_a_model_answering_with_the_canonical_solution_scores_full_marks(shared_benchmarks, tmp_path):
    """The path completion -> extraction -> sandbox loses nothing: canonical answers, written
    the way a model continues each prompt's response prefix, all pass."""
    from tasks.evaluation.scoring import ScoreConfig, score_programs

    problems = []
    completions = []
    for name in ("humaneval", "humaneval+", "mbpp+"):
        for p in load_benchmark(name, shared_benchmarks, tmp_path, limit=6):
            problems.append(p)
            # HumanEval: the body continues the prompt; MBPP+: the whole solution. Then the fence closes.
            completions.append(p.canonical_solution.lstrip("\n") + "\n```\nThis solves it.")
    programs = [program_for(p, c) for p, c in zip(problems, completions)]
    rows = score_programs(problems, programs, ScoreConfig(cache_dir=tmp_path))
    summary = summarize(rows)
    assert summary["humaneval"]["pass@1"] == 1.0
    assert summary["humaneval+"]["plus_pass@1"] == 1.0 and summary["mbpp+"]["plus_pass@1"] == 1.0
