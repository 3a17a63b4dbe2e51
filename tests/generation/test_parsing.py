import json

import pytest

from tasks.generation.parsing import (
    EMPTY_PROBLEM, EMPTY_REPLY, EMPTY_SOLUTION, INVALID_JSON, JSON_MISSING_FIELD, LENGTH_TRUNCATED,
    MISORDERED_MARKERS, MISSING_PROBLEM_MARKER, MISSING_SOLUTION_MARKER, NOT_STOPPED, Pair, ParseFailure,
    parse_reply,
)

GOOD = """Here you go.
[Problem Description]
Write a function `add(a, b)`.

It returns the sum.
[Solution]
```python
def add(a, b):
    return a + b
```
"""


def test_sections_pair_follows_the_papers_rule():
    pair = parse_reply(GOOD, "stop")
    assert pair == Pair("Write a function `add(a, b)`.\n\nIt returns the sum.",
                        "```python\ndef add(a, b):\n    return a + b\n```")


def test_markers_are_case_insensitive_and_may_carry_decoration():
    reply = "### [PROBLEM DESCRIPTION]:\nP\n**[solution]**\nS"
    assert parse_reply(reply, "stop") == Pair("P", "S")


def test_first_marker_wins():
    reply = "[Problem Description]\nP\n[Solution]\nS1\n[Solution]\nS2"
    assert parse_reply(reply, "stop") == Pair("P", "S1\n[Solution]\nS2")


@pytest.mark.parametrize(
    "content, finish, reason",
    [
        (GOOD, "length", LENGTH_TRUNCATED),
        (GOOD, "content_filter", NOT_STOPPED),
        ("   \n", "stop", EMPTY_REPLY),
        (None, "stop", EMPTY_REPLY),
        ("no markers at all", "stop", MISSING_PROBLEM_MARKER),
        ("[Problem Description]\nP only", "stop", MISSING_SOLUTION_MARKER),
        ("[Solution]\nS\n[Problem Description]\nP", "stop", MISORDERED_MARKERS),
        ("[Problem Description]\n  \n[Solution]\nS", "stop", EMPTY_PROBLEM),
        ("[Problem Description]\nP\n[Solution]\n\n", "stop", EMPTY_SOLUTION),
    ],
)
def test_every_sections_failure_has_its_reason(content, finish, reason):
    assert parse_reply(content, finish) == ParseFailure(reason)


def test_json_mode_pair_and_fenced_json():
    obj = {"problem": " P ", "solution": "S"}
    assert parse_reply(json.dumps(obj), "stop", "json") == Pair("P", "S")
    assert parse_reply("```json\n" + json.dumps(obj) + "\n```", "stop", "json") == Pair("P", "S")


@pytest.mark.parametrize(
    "content, reason",
    [
        ('{"problem": "P", "solution": ', INVALID_JSON),
        ("[1, 2]", INVALID_JSON),
        ('{"problem": "P"}', JSON_MISSING_FIELD),
        ('{"problem": 3, "solution": "S"}', JSON_MISSING_FIELD),
        ('{"problem": "", "solution": "S"}', EMPTY_PROBLEM),
        ('{"problem": "P", "solution": "  "}', EMPTY_SOLUTION),
    ],
)
def test_every_json_failure_has_its_reason(content, reason):
    assert parse_reply(content, "stop", "json") == ParseFailure(reason)


def test_json_truncated_by_length_is_length_not_invalid_json():
    assert parse_reply('{"problem": "P", "sol', "length", "json") == ParseFailure(LENGTH_TRUNCATED)
