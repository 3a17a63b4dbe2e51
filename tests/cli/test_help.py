"""`ossforge ... --help` reads at 80 columns: every option name whole, no line wider than the terminal.

Each command's help is rendered by the real console entry point in its own process with
COLUMNS=80, as a user's terminal would ask for it. (Rich's option table once shrank the
name column until it cut `--teacher-base-url` to `--teacher-base-u…`.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from ossforge.cli import app

REPO = Path(__file__).resolve().parents[2]
WIDTH = 80


# typer builds its commands on its own copy of click (typer._click), so they are recognised
# by what they have, not by click's classes.
def _is_group(command) -> bool:
    return hasattr(command, "commands")


def _commands(group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every command of the CLI, the root and groups included, with the words that reach it."""
    found = [(path, group)]
    if _is_group(group):
        for name, sub in sorted(group.commands.items()):
            found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _help(path: tuple[str, ...]) -> str:
    env = {**os.environ, "COLUMNS": str(WIDTH), "LINES": "50"}
    env.pop("TERMINAL_WIDTH", None)  # typer's own override would hide what COLUMNS does
    result = subprocess.run(
        [sys.executable, "-m", "ossforge.cli", *path, "--help"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _whole(name: str, text: str) -> bool:
    """`name` appears with neither more of a name nor an ellipsis right after it."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-]|…)", text) is not None


def test_the_cli_has_the_commands_it_documents():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"refresh", "dedup", "decontaminate", "train", "evaluate", "teacher serve", "teacher stop"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "ossforge" for p, _ in COMMANDS])
def test_help_at_80_columns_shows_every_option_name_whole(path, command):
    text = _help(path)
    params = command.get_params(command.context_class(command))  # with the --help that click adds
    names = [
        opt
        for param in params
        if param.param_type_name == "option" and not param.hidden
        for opt in (*param.opts, *param.secondary_opts)
    ]
    assert "--help" in names
    cut = [name for name in names if not _whole(name, text)]
    assert not cut, f"option names cut or missing in `ossforge {' '.join(path)} --help`: {cut}\n{text}"
    wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not wide, f"lines wider than {WIDTH} columns: {wide}"
    assert "…" not in text  # nothing elided, option names, types or help text


GROUPS = [(p, c) for p, c in COMMANDS if _is_group(c)]


@pytest.mark.parametrize("path,group", GROUPS, ids=[" ".join(p) or "ossforge" for p, _ in GROUPS])
def test_group_help_lists_each_command_with_its_whole_summary(path, group):
    text = _help(path)
    for name, sub in group.commands.items():
        summary = sub.get_short_help_str(limit=10_000)
        assert re.search(rf"^  {re.escape(name)}\s+{re.escape(summary)}$", text, re.M), (name, summary, text)
