"""The instruction-tuning template, shared by training and evaluation so their prompts match.

Magicoder's template: a system line, the instruction, then the response directly after
"@@ Response\n". Training masks the loss to the response + EOS; evaluation asks the model
to continue after the same prefix.
"""

SYSTEM = (
    "You are an exceptionally intelligent coding assistant that consistently delivers accurate "
    "and reliable responses to user instructions."
)
PROMPT_TEMPLATE = SYSTEM + "\n\n@@ Instruction\n{instruction}\n\n@@ Response\n"

# The dataset columns the template is filled from.
INSTRUCTION_COLUMN = "problem"
RESPONSE_COLUMN = "solution"


def format_prompt(instruction: str) -> str:
    return PROMPT_TEMPLATE.format(instruction=instruction)
