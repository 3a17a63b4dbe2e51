"""The paper's prompts, byte for byte, and the paper's max_tokens rule."""

from __future__ import annotations

import hashlib

import pytest

from tasks.teacher.prompts import (
    JSON_USER_PROMPT_TEMPLATE,
    PAIR_JSON_SCHEMA,
    SYSTEM_PROMPT,
    USER_PROMPT_TEMPLATE,
    build_messages,
    response_format,
)
from tasks.teacher.tokens import FALLBACK_ENCODING, derive_max_tokens, token_counter

# data/prompt.txt of ise-uiuc/magicoder (709 characters, no trailing newline).
PAPER_USER_PROMPT = (
    "Please gain inspiration from the following random code snippet to create a high-quality programming "
    "problem. Present your output in two distinct sections: [Problem Description] and [Solution].\n"
    "\n"
    "Code snippet for inspiration:\n"
    "```\n"
    "{code}\n"
    "```\n"
    "\n"
    "Guidelines for each section:\n"
    "\n"
    "1. [Problem Description]: This should be **completely self-contained**, providing all the contextual "
    "information one needs to understand and solve the problem. Assume common programming knowledge, but "
    "ensure that any specific context, variables, or code snippets pertinent to this problem are explicitly "
    "included.\n"
    "\n"
    "2. [Solution]: Offer a comprehensive, **correct** solution that accurately addresses the [Problem "
    "Description] you provided."
)
PAPER_SYSTEM_PROMPT = (
    "You are exceptionally skilled at crafting high-quality programming problems and offering precise solutions."
)


def test_system_prompt_is_the_papers():
    assert SYSTEM_PROMPT == PAPER_SYSTEM_PROMPT


def test_user_prompt_template_is_the_papers_byte_for_byte():
    assert USER_PROMPT_TEMPLATE == PAPER_USER_PROMPT
    assert len(USER_PROMPT_TEMPLATE) == 709
    assert hashlib.sha256(USER_PROMPT_TEMPLATE.encode()).hexdigest() == (
        "37119e47070be2fdb7269955ede52eba207e3594b36f9a62133086b6f18fb083"
    )


def test_build_messages_sections_equals_papers_format():
    snippet = "def add(a, b):\n    return a + b"
    messages = build_messages(snippet, "sections")
    assert messages == [
        {"role": "system", "content": PAPER_SYSTEM_PROMPT},
        {"role": "user", "content": PAPER_USER_PROMPT.format(code=snippet)},
    ]


def test_snippet_braces_are_kept_verbatim():
    # str.format would choke on (or substitute) braces inside real code.
    snippet = 'print(f"{name!r}")\nd = {"code": "{code}"}'
    user = build_messages(snippet)[1]["content"]
    assert "```\n" + snippet + "\n```" in user
    assert user.count("{code}") == 1  # the snippet's own text, not the placeholder


def test_json_mode_asks_for_problem_and_solution():
    messages = build_messages("x = 1", "json")
    assert messages[0]["content"] == PAPER_SYSTEM_PROMPT
    user = messages[1]["content"]
    assert user == JSON_USER_PROMPT_TEMPLATE.replace("{code}", "x = 1")
    assert '"problem"' in user and '"solution"' in user and "JSON object" in user
    assert "```\nx = 1\n```" in user


def test_response_format_shapes():
    assert response_format("sections") is None
    schema = response_format("json")
    assert schema["type"] == "json_schema"
    assert schema["json_schema"]["schema"] == PAIR_JSON_SCHEMA
    assert PAIR_JSON_SCHEMA["required"] == ["problem", "solution"]
    assert response_format("json", "json_object") == {"type": "json_object", "schema": PAIR_JSON_SCHEMA}
    assert response_format("json", "none") is None
    with pytest.raises(ValueError):
        build_messages("x", "yaml")  # type: ignore[arg-type]


def test_max_tokens_rule_is_the_papers():
    assert derive_max_tokens(100, 8192, 2500) == 2500
    assert derive_max_tokens(5682, 8192, 2500) == 2500  # 8192 - 5682 - 10 = 2500 exactly
    assert derive_max_tokens(6000, 8192, 2500) == 8192 - 6000 - 10
    assert derive_max_tokens(8182, 8192, 2500) == 0  # nothing fits: not sent


def test_token_counter_falls_back_offline_and_says_so():
    counter = token_counter("a-model-tiktoken-does-not-know")
    assert counter.encoding_name == FALLBACK_ENCODING and counter.fallback
    assert counter.count("hello world") == 2
    # Special-token text inside a snippet is counted as text, never an error.
    assert counter.count("<|endoftext|>") > 1


def test_tests_variants_ask_for_tests_in_the_solutions_language_with_every_runners_form():
    """A C++ seed may get a C++ answer: the prompt asks for tests in the solution's language and
    says, for every language a runner can check, what form they take."""
    from tasks.sandbox.runners import all_tests_guidelines
    from tasks.teacher.prompts import build_messages

    for fmt in ("sections_tests", "json_tests"):
        user = build_messages("int x = 1;", fmt)[1]["content"]
        assert "in the solution's language" in user
        assert all(guideline in user for guideline in all_tests_guidelines())
    assert "tests" not in build_messages("int x = 1;", "sections")[1]["content"].lower()
