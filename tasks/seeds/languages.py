"""Language names: the one table from a canonical name to file extensions, and the aliases
that language columns and dataset directories use for the same languages."""

from __future__ import annotations

import os

# The one table from canonical (lowercase) language name to file extensions.
LANGUAGE_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "python": (".py", ".pyw"),
    "c": (".c", ".h"),
    "cpp": (".cc", ".cpp", ".cxx", ".c++", ".hh", ".hpp", ".hxx", ".h++", ".ipp", ".inl"),
    "java": (".java",),
    "javascript": (".js", ".mjs", ".cjs", ".jsx"),
    "typescript": (".ts", ".tsx", ".mts", ".cts"),
    "go": (".go",),
    "rust": (".rs",),
    "shell": (".sh", ".bash", ".zsh", ".ksh"),
    "php": (".php",),
    "csharp": (".cs",),
    "swift": (".swift",),
    "ruby": (".rb",),
    "kotlin": (".kt", ".kts"),
    "scala": (".scala",),
    "lua": (".lua",),
    "perl": (".pl", ".pm"),
}
EXTENSION_LANGUAGE: dict[str, str] = {ext: lang for lang, exts in LANGUAGE_EXTENSIONS.items() for ext in exts}

# Other spellings of the canonical names, as language columns and dataset dirs write them
# (the-stack: "C++", "C#"; starcoderdata: "c-sharp"; GitHub linguist: "Shell").
LANGUAGE_ALIASES: dict[str, str] = {
    "py": "python", "python3": "python",
    "c++": "cpp", "cplusplus": "cpp", "cxx": "cpp",
    "c#": "csharp", "c-sharp": "csharp", "cs": "csharp",
    "js": "javascript", "node": "javascript",
    "ts": "typescript",
    "golang": "go",
    "rs": "rust",
    "sh": "shell", "bash": "shell", "zsh": "shell",
    "rb": "ruby",
    "kt": "kotlin",
}
UNKNOWN_LANGUAGE = "unknown"


def canonical_language(name: str | None) -> str | None:
    if name is None:
        return None
    key = str(name).strip().lower()
    if not key:
        return None
    return LANGUAGE_ALIASES.get(key, key.replace(" ", "-"))


def language_of_path(path: str | None) -> str | None:
    if not path:
        return None
    return EXTENSION_LANGUAGE.get(os.path.splitext(str(path))[1].lower())
