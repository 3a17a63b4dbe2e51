"""`ossforge teacher ...`: teacher servers on loopback.

- `ossforge teacher serve|stop`: the embedded llama.cpp teacher of the demo.

The fake teacher of the tests and benchmarks is not part of the product: it lives in
tests/support/fake_teacher.py (`python -m tests.support.fake_teacher`).
"""

from __future__ import annotations

import typer

teacher_app = typer.Typer(help="The embedded llama.cpp teacher on loopback (the demo's).", no_args_is_help=True)


# `ossforge teacher serve|stop`: the embedded llama.cpp teacher, in its own module.
from ossforge.commands.local_teacher import add_commands as _add_local_teacher_commands  # noqa: E402

_add_local_teacher_commands(teacher_app)


def register(app: typer.Typer) -> None:
    app.add_typer(teacher_app, name="teacher")
