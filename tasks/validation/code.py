"""The code inside a teacher's Markdown: fenced blocks joined, or the whole text when unfenced."""

from __future__ import annotations

import re

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)
# Fence tags that name each language; an untagged fence counts for any language.
LANGUAGE_TAGS = {
    "python": {"python", "py", "python3"},
}


def extract_code(text: str | None, lang: str = "python") -> str:
    """The blocks fenced as `lang` (else the untagged ones), joined; the text itself if it has no fence.

    A solution often explains itself around one code block; tests come as one or more
    blocks. Blocks in another language (a shell line showing how to run it) are left out.
    """
    if not text:
        return ""
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    if not blocks:
        return text.strip("\n") + "\n"
    tags = LANGUAGE_TAGS.get(lang, {lang})
    chosen = [body for tag, body in blocks if tag in tags] or [body for tag, body in blocks if not tag]
    return "\n\n".join(b.strip("\n") for b in chosen) + "\n" if chosen else ""
