"""Progress of running batches: the terminal (the `tasks.core.progress` channel, a log line
per change) and, inside a Prefect run, one progress artifact per batch (requests completed
of total) that the UI shows while the flow sits in Running for hours."""

from __future__ import annotations

import logging
import sys

from tasks.core import progress as progress_channel

log = logging.getLogger("ossforge.teacher.batch")
PROGRESS_COUNTER = "batch requests"
_declared = 0  # requests of every batch watched in this process: the terminal bar's total


def _in_prefect_run() -> bool:
    if "prefect" not in sys.modules:  # a process that never imported Prefect runs no flow (and need not pay ~1 s to)
        return False
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None
    except Exception:
        return False


class BatchProgress:
    """One batch's progress: `await update(completed, failed, total, status)` after every poll."""

    def __init__(self, batch_id: str, total: int):
        self.batch_id = batch_id
        self.total = total
        self.shown = (0, 0, "")
        self._artifact = None
        global _declared
        _declared += total
        progress_channel.report(PROGRESS_COUNTER, 0, total=_declared)

    async def update(self, completed: int, failed: int, status: str) -> None:
        if (completed, failed, status) == self.shown:
            return
        advance = (completed + failed) - (self.shown[0] + self.shown[1])
        self.shown = (completed, failed, status)
        progress_channel.report(PROGRESS_COUNTER, max(0, advance))
        log.info("batch %s: %s, %d of %d requests done (%d failed)", self.batch_id, status, completed + failed,
                 self.total, failed)
        if _in_prefect_run():
            await self._artifact_update(100.0 * (completed + failed) / max(1, self.total))

    async def _artifact_update(self, percent: float) -> None:
        from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

        try:
            if self._artifact is None:
                self._artifact = await acreate_progress_artifact(
                    percent, description=f"teacher batch {self.batch_id}: requests completed of {self.total}"
                )
            else:
                await aupdate_progress_artifact(self._artifact, percent)
        except Exception as exc:  # the UI's view must never stop the batch
            log.warning("batch %s: progress artifact not updated: %s", self.batch_id, type(exc).__name__)
