"""`ossforge teacher ...`: teacher servers on loopback.

- `ossforge teacher fake`: the fake OpenAI-compatible teacher used by tests and benchmarks
  (deterministic replies, optional latency and fault injection, counters at /stats).
- `ossforge teacher serve`: the embedded llama.cpp teacher (added by the lead; register it
  on `teacher_app` below, next to `fake`).
"""

from __future__ import annotations

import typer

teacher_app = typer.Typer(help="Teacher servers on loopback (fake for tests; llama.cpp for the demo).", no_args_is_help=True)


@teacher_app.command("fake")
def fake(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8001, help="TCP port."),
    latency: float = typer.Option(0.0, help="Seconds before each reply."),
    api_key_env: str = typer.Option(
        "", help="Require `Authorization: Bearer $VAR` with the key read from this environment variable."
    ),
    models: str = typer.Option("", help="Comma-separated model names; others get 404 (default: accept any)."),
    context_size: int = typer.Option(0, help="Reject prompt + max_tokens above this with 400 (0: no check)."),
    rate_429: float = typer.Option(0.0, help="Fraction of attempts answered 429 with Retry-After."),
    retry_after: float = typer.Option(0.2, help="Seconds sent in Retry-After / retry-after-ms."),
    rate_500: float = typer.Option(0.0, help="Fraction of attempts answered 500."),
    rate_504: float = typer.Option(0.0, help="Fraction of attempts answered 504 after --gateway-delay."),
    gateway_delay: float = typer.Option(0.5, help="Seconds before a 504."),
    rate_reset: float = typer.Option(0.0, help="Fraction of attempts whose connection is reset."),
    rate_truncated: float = typer.Option(0.0, help="Fraction of attempts answered with a truncated JSON body."),
    rate_length: float = typer.Option(0.0, help="Fraction of requests answered with finish_reason=length."),
    reply_chars: int = typer.Option(0, help="Pad solutions to about this many characters."),
) -> None:
    """Run the fake teacher until Ctrl-C."""
    import os

    from ossforge.errors import UserError
    from ossforge.fake_teacher import FakeTeacherOptions, serve

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env {api_key_env}: that environment variable is not set")
    options = FakeTeacherOptions(
        latency=latency,
        api_key=api_key,
        models=[m.strip() for m in models.split(",") if m.strip()] or None,
        context_size=context_size or None,
        rate_429=rate_429,
        retry_after_s=retry_after,
        rate_500=rate_500,
        rate_504=rate_504,
        gateway_delay_s=gateway_delay,
        rate_reset=rate_reset,
        rate_truncated=rate_truncated,
        rate_length=rate_length,
        reply_chars=reply_chars,
    )
    try:
        serve(options, host=host, port=port)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


# `ossforge teacher serve|stop`: the embedded llama.cpp teacher, in its own module.
from ossforge.commands.local_teacher import add_commands as _add_local_teacher_commands  # noqa: E402

_add_local_teacher_commands(teacher_app)


def register(app: typer.Typer) -> None:
    app.add_typer(teacher_app, name="teacher")
