"""Turning a teacher reply into a (problem, solution) pair, or a counted failure.

Sections mode follows the paper's reference parser: the first line containing
"[problem description]" and the first containing "[solution]" (case-insensitive); the
problem is the lines between them, the solution the lines after. JSON mode expects an
object with non-empty string fields "problem" and "solution".

The tests variants (tasks/teacher/prompts.py) add a third part: "sections_tests" a
"[tests]" marker after "[solution]" (the solution is then the lines between the two),
"json_tests" a string field "tests". A reply without tests is still a pair, with
`tests=None`: validation counts it as no_tests rather than parsing dropping it here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

PROBLEM_MARKER = "[problem description]"
SOLUTION_MARKER = "[solution]"
TESTS_MARKER = "[tests]"

# Failure reasons, as they appear in the manifest.
LENGTH_TRUNCATED = "length_truncated"
NOT_STOPPED = "finish_reason_not_stop"
EMPTY_REPLY = "empty_reply"
MISSING_PROBLEM_MARKER = "missing_problem_marker"
MISSING_SOLUTION_MARKER = "missing_solution_marker"
MISORDERED_MARKERS = "misordered_markers"
EMPTY_PROBLEM = "empty_problem"
EMPTY_SOLUTION = "empty_solution"
INVALID_JSON = "invalid_json"
JSON_MISSING_FIELD = "json_missing_field"


@dataclass(frozen=True)
class Pair:
    problem: str
    solution: str
    tests: str | None = None  # only in the tests variants


@dataclass(frozen=True)
class ParseFailure:
    reason: str


def parse_reply(
    content: str | None,
    finish_reason: str | None,
    output_format: Literal["sections", "json", "sections_tests", "json_tests"] = "sections",
) -> Pair | ParseFailure:
    # A reply cut by max_tokens is never a pair, even when both markers made it in:
    # its solution is unfinished.
    if finish_reason == "length":
        return ParseFailure(LENGTH_TRUNCATED)
    if finish_reason not in (None, "stop"):
        return ParseFailure(NOT_STOPPED)
    if not content or not content.strip():
        return ParseFailure(EMPTY_REPLY)
    if output_format == "json":
        return _parse_json(content)
    if output_format == "json_tests":
        return _parse_json(content, with_tests=True)
    if output_format == "sections_tests":
        return _with_tests_section(content)
    return _parse_sections(content)


def _with_tests_section(content: str) -> Pair | ParseFailure:
    """Sections mode on the text before the first "[tests]" line after "[solution]"; tests after it."""
    lines = content.splitlines()
    solution_at = _first_line_containing(lines, SOLUTION_MARKER)
    tests_at = None
    if solution_at is not None:
        after = _first_line_containing(lines[solution_at + 1 :], TESTS_MARKER)
        tests_at = None if after is None else solution_at + 1 + after
    if tests_at is None:
        return _parse_sections(content)
    pair = _parse_sections("\n".join(lines[:tests_at]))
    if isinstance(pair, ParseFailure):
        return pair
    tests = "\n".join(lines[tests_at + 1 :]).strip()
    return Pair(pair.problem, pair.solution, tests or None)


def _parse_sections(content: str) -> Pair | ParseFailure:
    lines = content.splitlines()
    problem_at = _first_line_containing(lines, PROBLEM_MARKER)
    solution_at = _first_line_containing(lines, SOLUTION_MARKER)
    if problem_at is None:
        return ParseFailure(MISSING_PROBLEM_MARKER)
    if solution_at is None:
        return ParseFailure(MISSING_SOLUTION_MARKER)
    if solution_at < problem_at:
        return ParseFailure(MISORDERED_MARKERS)
    problem = "\n".join(lines[problem_at + 1 : solution_at]).strip()
    solution = "\n".join(lines[solution_at + 1 :]).strip()
    if not problem:
        return ParseFailure(EMPTY_PROBLEM)
    if not solution:
        return ParseFailure(EMPTY_SOLUTION)
    return Pair(problem, solution)


def _first_line_containing(lines: list[str], marker: str) -> int | None:
    for i, line in enumerate(lines):
        if marker in line.lower():
            return i
    return None


# Models often wrap JSON in a ```json fence even when asked not to.
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*)\n\s*```\s*$", re.DOTALL)


def _parse_json(content: str, with_tests: bool = False) -> Pair | ParseFailure:
    fenced = _FENCE.match(content)
    text = fenced.group(1) if fenced else content
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return ParseFailure(INVALID_JSON)
    if not isinstance(obj, dict):
        return ParseFailure(INVALID_JSON)
    problem, solution = obj.get("problem"), obj.get("solution")
    if not isinstance(problem, str) or not isinstance(solution, str):
        return ParseFailure(JSON_MISSING_FIELD)
    problem, solution = problem.strip(), solution.strip()
    if not problem:
        return ParseFailure(EMPTY_PROBLEM)
    if not solution:
        return ParseFailure(EMPTY_SOLUTION)
    tests = obj.get("tests") if with_tests else None
    return Pair(problem, solution, (tests.strip() or None) if isinstance(tests, str) else None)
