"""The `ossforge` console script.

Each sub-command lives in its own module under ossforge/commands/ and registers itself on
the app; heavy imports (prefect, torch) happen inside the commands so `--help` is instant.
A UserError anywhere becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from tasks.core.errors import UserError

app = typer.Typer(
    name="ossforge",
    help="OSS-Instruct data factory: seeds -> teacher -> dedup -> decontamination -> shards -> training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Click's plain help layout, not rich's panels: rich's option table shrinks the option
    # column to make room for help text, and at 80 columns it cut our own option names
    # (`--teacher-base-u…`). Click wraps the help text and never cuts a name.
    rich_markup_mode=None,
)


def _register_commands() -> None:
    from ossforge.commands import benchmarks, decontaminate, dedup, evaluate, refresh, teacher, train, validate

    for module in (refresh, teacher, validate, dedup, decontaminate, benchmarks, train, evaluate):
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    # Standalone mode lets click report usage errors (exit 2) the usual way; our own
    # UserErrors come through as exceptions and become one line.
    try:
        app(args=argv, prog_name="ossforge")
    except UserError as exc:
        print(f"ossforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ossforge: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
