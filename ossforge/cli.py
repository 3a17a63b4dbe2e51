"""The `ossforge` console script.

Each sub-command lives in its own module under ossforge/commands/ and registers itself on
the app; heavy imports (prefect, torch) happen inside the commands so `--help` is instant.
A UserError anywhere becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from ossforge.errors import UserError

app = typer.Typer(
    name="ossforge",
    help="OSS-Instruct data factory: seeds -> teacher -> dedup -> decontamination -> shards -> training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    from ossforge.commands import decontaminate, dedup, evaluate, refresh, teacher, train

    for module in (refresh, teacher, dedup, decontaminate, train, evaluate):
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, standalone_mode=False)
    except UserError as exc:
        print(f"ossforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ossforge: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer/click exits (--help, usage errors)
        return exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            print("ossforge: aborted", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
