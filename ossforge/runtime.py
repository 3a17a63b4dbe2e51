"""Running flows from the CLI: finding the Prefect API, and a terminal progress bar."""

from __future__ import annotations

import asyncio
import os
import sys

from tasks.core.http_probe import answers_ok

DEFAULT_LOCAL_API = "http://127.0.0.1:4200/api"


def _answers(api_url: str) -> bool:
    return answers_ok(f"{api_url.rstrip('/')}/health")


def ensure_prefect_api() -> str | None:
    """Point Prefect at a running server and return its UI address.

    Uses PREFECT_API_URL when set (it must answer), else a local server on 127.0.0.1:4200
    when one is up. With neither, Prefect's ephemeral mode runs the flow but keeps no history,
    so we say so.
    """
    api = os.environ.get("PREFECT_API_URL")
    if api:
        if not _answers(api) and "api.prefect.cloud" not in api:
            from tasks.core.errors import UserError

            raise UserError(f"the Prefect API at {api} does not answer (start it with `make server`)")
    elif _answers(DEFAULT_LOCAL_API):
        api = DEFAULT_LOCAL_API
        os.environ["PREFECT_API_URL"] = api
    else:
        print(
            "ossforge: no Prefect server found; running in ephemeral mode (no UI history). "
            "Start one with `make server` or set PREFECT_API_URL.",
            file=sys.stderr,
        )
        return None
    _apply_api_url(api)
    return api.removesuffix("/api").rstrip("/") + "/runs"


def _apply_api_url(api: str) -> None:
    # Prefect reads its settings once at import; make sure a URL found later is used.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ctx = temporary_settings(updates={PREFECT_API_URL: api})
    ctx.__enter__()  # held for the life of this CLI process


def run_refresh(config, progress: bool = True) -> dict:
    from flows.refresh import refresh_flow

    with _progress_bar(enabled=progress and sys.stderr.isatty()):
        return asyncio.run(refresh_flow(config))


class _progress_bar:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        if not self.enabled:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from tasks.core import progress

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
        )
        self.tasks: dict[str, int] = {}

        def on_report(what: str, advance: int, total: int | None) -> None:
            if what not in self.tasks:
                self.tasks[what] = self.bar.add_task(what, total=total)
            elif total is not None:
                self.bar.update(self.tasks[what], total=total)
            if advance:
                self.bar.advance(self.tasks[what], advance)

        progress.listen(on_report)
        self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            from tasks.core import progress

            self.bar.stop()
            progress.clear()
        return False
