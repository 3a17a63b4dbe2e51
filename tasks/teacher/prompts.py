"""The OSS-Instruct prompts, exactly as the Magicoder paper sends them, plus a JSON mode.

The system prompt and the user prompt template are the paper's own text (reference repo
ise-uiuc/magicoder: SYSTEM in src/magicoder/generate_data.py, data/prompt.txt); they are
part of the method, so they are constants, not options. The JSON mode keeps the paper's
wording and asks for a JSON object with "problem" and "solution" instead of two marked
sections; servers that support structured output also get a `response_format` for it.
"""

from __future__ import annotations

from typing import Literal

OutputFormat = Literal["sections", "json"]
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

PAIR_JSON_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "problem": {"type": "string"},
        "solution": {"type": "string"},
    },
    "required": ["problem", "solution"],
    "additionalProperties": False,
}


def user_prompt(snippet: str, output_format: OutputFormat = "sections") -> str:
    # str.replace, not str.format: a snippet may itself contain "{...}" and the template
    # has exactly one placeholder, so the result equals the paper's `template.format(code=...)`.
    template = JSON_USER_PROMPT_TEMPLATE if output_format == "json" else USER_PROMPT_TEMPLATE
    return template.replace("{code}", snippet, 1)


def build_messages(snippet: str, output_format: OutputFormat = "sections") -> list[dict]:
    if output_format not in ("sections", "json"):
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
    if output_format != "json" or kind == "none":
        return None
    if kind == "json_object":
        return {"type": "json_object", "schema": PAIR_JSON_SCHEMA}
    if kind == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "oss_instruct_pair", "strict": True, "schema": PAIR_JSON_SCHEMA},
        }
    raise ValueError(f"unknown response_format kind {kind!r}")
