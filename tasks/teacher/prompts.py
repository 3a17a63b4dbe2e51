"""The OSS-Instruct prompts, exactly as the Magicoder paper sends them, plus a JSON mode.

The system prompt and the user prompt template are the paper's own text (reference repo
ise-uiuc/magicoder: SYSTEM in src/magicoder/generate_data.py, data/prompt.txt); they are
part of the method, so they are constants, not options. The JSON mode keeps the paper's
wording and asks for a JSON object with "problem" and "solution" instead of two marked
sections; servers that support structured output also get a `response_format` for it.

The tests variants ("sections_tests", "json_tests") are not the paper's: they ask, in the
same reply, for tests of the solution too (as SelfCodeAlign does), so the validation stage
(tasks/validation) can run each solution against its own tests in the sandbox.
"""

from __future__ import annotations

from typing import Literal

from tasks.sandbox.runners import all_tests_guidelines

OutputFormat = Literal["sections", "json", "sections_tests", "json_tests"]
WITH_TESTS = ("sections_tests", "json_tests")
ResponseFormatKind = Literal["json_schema", "json_object", "none"]

SYSTEM_PROMPT = (
    "You are exceptionally skilled at crafting high-quality programming problems and offering precise solutions."
)

# data/prompt.txt of the reference repo, byte for byte ({code} is the seed snippet).
USER_PROMPT_TEMPLATE = """Please gain inspiration from the following random code snippet to create a high-quality programming problem. Present your output in two distinct sections: [Problem Description] and [Solution].

Code snippet for inspiration:
```
{code}
```

Guidelines for each section:

1. [Problem Description]: This should be **completely self-contained**, providing all the contextual information one needs to understand and solve the problem. Assume common programming knowledge, but ensure that any specific context, variables, or code snippets pertinent to this problem are explicitly included.

2. [Solution]: Offer a comprehensive, **correct** solution that accurately addresses the [Problem Description] you provided."""

# The same guidelines, asking for one JSON object instead of two marked sections.
JSON_USER_PROMPT_TEMPLATE = """Please gain inspiration from the following random code snippet to create a high-quality programming problem. Present your output as a single JSON object with two string fields: "problem" and "solution".

Code snippet for inspiration:
```
{code}
```

Guidelines for each field:

1. "problem": This should be **completely self-contained**, providing all the contextual information one needs to understand and solve the problem. Assume common programming knowledge, but ensure that any specific context, variables, or code snippets pertinent to this problem are explicitly included.

2. "solution": Offer a comprehensive, **correct** solution that accurately addresses the "problem" you provided."""

# What the tests must look like so a runner can run them (tasks/sandbox/runners.py): in the
# solution's language, whichever the teacher picks for the seed, one line per language.
_TESTS_GUIDELINE = (
    "Tests that check the solution, written in the solution's language, in a code block tagged with that "
    "language. They run with no input and no network; they must all pass for a correct solution and should "
    "fail for a wrong one. By language: " + " ".join(all_tests_guidelines())
)

# The paper's prompt with a third section, [Tests] (the tests variant).
TESTS_USER_PROMPT_TEMPLATE = USER_PROMPT_TEMPLATE.replace(
    "two distinct sections: [Problem Description] and [Solution].",
    "three distinct sections: [Problem Description], [Solution] and [Tests].",
) + f"\n\n3. [Tests]: {_TESTS_GUIDELINE}"

JSON_TESTS_USER_PROMPT_TEMPLATE = JSON_USER_PROMPT_TEMPLATE.replace(
    'two string fields: "problem" and "solution".', 'three string fields: "problem", "solution" and "tests".'
) + f'\n\n3. "tests": {_TESTS_GUIDELINE}'

PAIR_JSON_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "problem": {"type": "string"},
        "solution": {"type": "string"},
    },
    "required": ["problem", "solution"],
    "additionalProperties": False,
}


PAIR_WITH_TESTS_JSON_SCHEMA: dict = {
    **PAIR_JSON_SCHEMA,
    "properties": {**PAIR_JSON_SCHEMA["properties"], "tests": {"type": "string"}},
    "required": ["problem", "solution", "tests"],
}

_TEMPLATES = {
    "sections": USER_PROMPT_TEMPLATE,
    "json": JSON_USER_PROMPT_TEMPLATE,
    "sections_tests": TESTS_USER_PROMPT_TEMPLATE,
    "json_tests": JSON_TESTS_USER_PROMPT_TEMPLATE,
}


def user_prompt(snippet: str, output_format: OutputFormat = "sections") -> str:
    # str.replace, not str.format: a snippet may itself contain "{...}" and the template
    # has exactly one placeholder, so the result equals the paper's `template.format(code=...)`.
    template = _TEMPLATES.get(output_format, USER_PROMPT_TEMPLATE)
    return template.replace("{code}", snippet, 1)


def build_messages(snippet: str, output_format: OutputFormat = "sections") -> list[dict]:
    if output_format not in _TEMPLATES:
        raise ValueError(f"unknown output format {output_format!r}")
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt(snippet, output_format)},
    ]


def response_format(output_format: OutputFormat, kind: ResponseFormatKind = "json_schema") -> dict | None:
    """The `response_format` request field for structured output, or None.

    Sections mode sends none (free text, as the paper). JSON mode sends, by `kind`:
    "json_schema" (OpenAI, vLLM), "json_object" with the schema inline (llama.cpp's
    server constrains its grammar with it), or "none" for servers that reject the field.
    """
    if output_format not in ("json", "json_tests") or kind == "none":
        return None
    schema = PAIR_WITH_TESTS_JSON_SCHEMA if output_format == "json_tests" else PAIR_JSON_SCHEMA
    if kind == "json_object":
        return {"type": "json_object", "schema": schema}
    if kind == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "oss_instruct_pair", "strict": True, "schema": schema},
        }
    raise ValueError(f"unknown response_format kind {kind!r}")


# The validation repair round (not the paper's): a pair whose solution failed its own tests
# goes back to the teacher once, with the error, for a corrected reply in the same format.
REPAIR_LEAD = "The solution to the programming problem below fails its own tests when run."
_REPAIR_FORMAT = {
    "sections_tests": "three distinct sections: [Problem Description], [Solution] and [Tests]",
    "json_tests": 'a single JSON object with three string fields: "problem", "solution" and "tests"',
}


def repair_messages(snippet: str, problem: str, solution: str, tests: str, error: str,
                    output_format: OutputFormat) -> list[dict]:  # fmt: skip
    """The repair request for one failed pair: the seed it came from, the pair, the error."""
    if output_format not in _REPAIR_FORMAT:
        raise ValueError(f"output format {output_format!r} has no tests to repair")
    user = (
        f"{REPAIR_LEAD} Fix the solution (or the tests, where they are what is wrong) and present the whole "
        f"corrected pair as {_REPAIR_FORMAT[output_format]}.\n\n"
        f"Code snippet for inspiration:\n```\n{snippet}\n```\n\n"
        f"[Problem Description]\n{problem}\n\n[Solution]\n{solution}\n\n[Tests]\n{tests}\n\n[Error]\n{error}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
