"""The tests variants end to end: the (fake) teacher writes problem, solution and tests in one
reply, parsing keeps the tests, validation runs them; the planted failing share is dropped exactly."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest

from support.fake_teacher import planted_test_failure
from tasks.generation.parsing import Pair, parse_reply
from tasks.teacher.config import TeacherConfig
from tasks.teacher.prompts import build_messages, response_format
from tasks.teacher.session import TeacherSession
from tasks.validation.validate import ValidationConfig, Validator


def _replies(url: str, output_format: str, n: int, start: int = 0):
    cfg = TeacherConfig(base_url=url, model="fake-teacher", api_key_env="", concurrency=16, output_format=output_format,
                        retry_base_s=0.01, retry_max_s=0.05)  # fmt: skip
    seeds = pa.table({"seed_index": pa.array(range(start, start + n), pa.int64()),
                      "seed": [f"def scale_{i}(x):\n    return x * {i}\n" for i in range(start, start + n)]})  # fmt: skip

    async def go():
        async with TeacherSession(cfg) as session:
            replies, _ = await session.complete_shard(seeds)
            return replies

    return asyncio.run(go())


@pytest.mark.parametrize("output_format", ["sections_tests", "json_tests"])
def test_teacher_tests_are_parsed_and_the_planted_failures_dropped(fake_teacher, output_format):
    replies = _replies(fake_teacher.base_url, output_format, 24, start=10)
    pairs = [parse_reply(r.content, r.finish_reason, output_format) for r in replies]
    assert all(isinstance(p, Pair) and p.tests for p in pairs), pairs[:2]
    table = pa.table({
        "id": [str(r.request_seed) for r in replies],
        "solution": [p.solution for p in pairs],
        "tests": [p.tests for p in pairs],
    })  # fmt: skip
    with Validator(ValidationConfig(seconds=5.0, workers=2)) as validator:
        out = validator.apply(table)
    planted = {str(r.request_seed) for r in replies if planted_test_failure(r.request_seed)}
    assert 0 < len(planted) < 24
    assert set(out.audit["id"].to_pylist()) == planted
    assert set(out.audit["reason"].to_pylist()) == {"tests_failed"}
    assert out.kept.num_rows == 24 - len(planted)


@pytest.mark.parametrize("output_format", ["sections", "json"])
def test_the_papers_formats_are_unchanged(fake_teacher, output_format):
    """No tests are asked for, none come back, and the prompt is the paper's."""
    replies = _replies(fake_teacher.base_url, output_format, 4)
    pairs = [parse_reply(r.content, r.finish_reason, output_format) for r in replies]
    assert all(isinstance(p, Pair) and p.tests is None for p in pairs)
    assert "[Tests]" not in build_messages("x", output_format)[1]["content"]
    assert '"tests"' not in build_messages("x", output_format)[1]["content"]


def test_the_tests_variants_ask_for_tests():
    sections = build_messages("x = 1", "sections_tests")[1]["content"]
    assert "[Problem Description], [Solution] and [Tests]" in sections and "3. [Tests]:" in sections
    assert '"tests"' in build_messages("x = 1", "json_tests")[1]["content"]
    assert response_format("json_tests")["json_schema"]["schema"]["required"] == ["problem", "solution", "tests"]
    assert "tests" not in response_format("json")["json_schema"]["schema"]["properties"]


@pytest.mark.parametrize(
    ("content", "fmt", "tests"),
    [
        ("[Problem Description]\nP\n[Solution]\nS\n[Tests]\nassert f()\n", "sections_tests", "assert f()"),
        ("[Problem Description]\nP\n[Solution]\nS\n", "sections_tests", None),  # validation: no_tests
        ('{"problem": "P", "solution": "S", "tests": "assert f()"}', "json_tests", "assert f()"),
        ('{"problem": "P", "solution": "S", "tests": 3}', "json_tests", None),
        ('{"problem": "P", "solution": "S", "tests": "assert f()"}', "json", None),  # the paper's JSON: no tests
    ],
)
def test_parsing_of_the_tests_section(content, fmt, tests):
    pair = parse_reply(content, "stop", fmt)
    assert (pair.problem, pair.solution, pair.tests) == ("P", "S", tests)


def test_the_papers_sections_parser_still_keeps_everything_after_solution():
    pair = parse_reply("[Problem Description]\nP\n[Solution]\nS\n[Tests]\nT\n", "stop", "sections")
    assert pair.solution == "S\n[Tests]\nT" and pair.tests is None
