"""The code inside a teacher's Markdown: fenced blocks joined, or the whole text when unfenced."""

from __future__ import annotations

import re

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)
# Fence tags that name each language; an untagged fence counts for any language.
LANGUAGE_TAGS = {
    "python": {"python", "py", "python3"},
    "c": {"c"},
    "cpp": {"cpp", "c++", "cc", "cxx"},
    "javascript": {"javascript", "js", "node", "nodejs"},
    "rust": {"rust", "rs"},
    "java": {"java"},
    "shell": {"bash", "sh", "shell", "zsh"},
}
_TAG_LANGUAGE = {tag: lang for lang, tags in LANGUAGE_TAGS.items() for tag in tags}


def fenced_language(text: str | None) -> str | None:
    """The language the first tagged code block of `text` names, when it is one of LANGUAGE_TAGS'.

    A pair's `lang` is its seed's language; the teacher may answer a C++ seed in Python.
    The solution's own fence is the better witness of what to run it as.
    """
    for tag, _ in _FENCE.findall(text or ""):
        if tag:
            return _TAG_LANGUAGE.get(tag.lower())
    return None


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
