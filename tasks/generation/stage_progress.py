"""Prefect progress artifacts for the stages that stream shard by shard.

A refresh overlaps its stages: while the teacher answers shard 40, shard 39 is being
validated and signed and shard 38 exact-deduped. One progress artifact per stage (stable
keys, so the UI shows one evolving history per stage) makes that overlap visible: each
reads "shards finished of shards expected", and the expected total grows if sampling
yields more shards than the seed count promised.
"""

from __future__ import annotations

import time

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

# Stage -> (artifact key, description). The generation key predates the others: kept as is.
STAGES = {
    "generation": ("refresh-progress", "Generation shards answered by the teacher"),
    "cleaning": ("refresh-cleaning-progress", "Shards validated, signed and matched (clean-shard)"),
    "exact_dedup": ("refresh-dedup-progress", "Shards exact-deduped in seed order"),
}


class ShardProgress:
    """`await progress.start()`, then `await progress.advance()` as each shard finishes.

    The artifact is updated at most every UPDATE_EVERY_S (and at 100%): each update is an API
    call made on the event loop that holds the teacher's requests in flight."""

    UPDATE_EVERY_S = 2.0

    def __init__(self, stage: str, expected_shards: int | None = None):
        self.key, self.description = STAGES[stage]
        self.expected = expected_shards or 0
        self.done = 0
        self._id = None
        self._updated = 0.0

    async def start(self) -> ShardProgress:
        self._id = await acreate_progress_artifact(0.0, key=self.key, description=self.description)
        return self

    def expect_at_least(self, shards: int) -> None:
        self.expected = max(self.expected, shards)

    async def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        finished = self.done >= self.expected
        if self._id is not None and (finished or now - self._updated >= self.UPDATE_EVERY_S):
            self._updated = now
            await aupdate_progress_artifact(self._id, 100.0 * self.done / max(1, self.expected, self.done))

    async def finish(self) -> None:
        """Every shard is through (sampling may have made fewer than expected): show 100%."""
        self.expected = self.done
        if self._id is not None:
            await aupdate_progress_artifact(self._id, 100.0)
