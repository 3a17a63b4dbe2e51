"""`ossforge teacher serve|stop`: the embedded llama.cpp teacher (SmolLM2-135M-Instruct, offline)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import typer

from tasks.teacher.local_defaults import LOCAL_TEACHER_HOST, LOCAL_TEACHER_PORT

STATE_DIR = Path(".ossforge")
PID_FILE = STATE_DIR / "teacher.pid"
LOG_FILE = STATE_DIR / "teacher.log"


def serve(
    host: str = typer.Option(LOCAL_TEACHER_HOST, help="address to bind (loopback by default)"),
    port: int = typer.Option(LOCAL_TEACHER_PORT, help="TCP port"),
    detach: bool = typer.Option(False, help="start in the background and return once it answers"),
) -> None:
    """Serve SmolLM2-135M-Instruct over the OpenAI chat-completions protocol with llama.cpp."""
    from tasks.teacher import local_server as local_teacher

    url = local_teacher.base_url(host, port)
    if local_teacher.is_serving(url):
        typer.echo(f"local teacher already answering at {url}")
        return
    if detach:
        STATE_DIR.mkdir(exist_ok=True)
        proc = local_teacher.start(host, port, log_path=LOG_FILE)
        PID_FILE.write_text(str(proc.pid))
        typer.echo(f"local teacher answering at {url} (model {local_teacher.LOCAL_TEACHER_MODEL}, log {LOG_FILE})")
        return
    import subprocess

    typer.echo(f"serving {local_teacher.LOCAL_TEACHER_MODEL} at {url} (Ctrl-C to stop)")
    raise typer.Exit(subprocess.call(local_teacher.server_command(host, port)))


def stop() -> None:
    """Stop a teacher started with `serve --detach`."""
    if not PID_FILE.exists():
        typer.echo("no detached local teacher recorded")
        return
    pid = int(PID_FILE.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(50):
            os.killpg(pid, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        pass
    PID_FILE.unlink(missing_ok=True)
    typer.echo("local teacher stopped")


def add_commands(teacher_app: typer.Typer) -> None:
    teacher_app.command("serve", short_help="Serve SmolLM2-135M-Instruct with llama.cpp (OpenAI API).")(serve)
    teacher_app.command("stop")(stop)
