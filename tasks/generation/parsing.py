"""Turning a teacher reply into a (problem, solution) pair, or a counted failure.

Sections mode follows the paper's reference parser: the first line containing
"[problem description]" and the first containing "[solution]" (case-insensitive); the
problem is the lines between them, the solution the lines after. JSON mode expects an
object with non-empty string fields "problem" and "solution".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

PROBLEM_MARKER = "[problem description]"
SOLUTION_MARKER = "[solution]"

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


@dataclass(frozen=True)
class ParseFailure:
    reason: str


def parse_reply(
    content: str | None, finish_reason: str | None, output_format: Literal["sections", "json"] = "sections"
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
    return _parse_sections(content)


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


def _parse_json(content: str) -> Pair | ParseFailure:
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
    return Pair(problem, solution)
