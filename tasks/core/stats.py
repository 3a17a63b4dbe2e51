"""Per-stage counts: every row a stage receives is either passed on or dropped with a reason."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class StageStats:
    name: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)  # stage-specific figures (clusters, hits per benchmark, ...)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def merge(self, other: "StageStats") -> "StageStats":
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.dropped.update(other.dropped)
        self.seconds += other.seconds
        return self

    def as_dict(self) -> dict:
        return {
            "in": self.rows_in,
            "out": self.rows_out,
            "dropped": dict(sorted(self.dropped.items())),
            "seconds": round(self.seconds, 3),
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, name: str, data: dict) -> "StageStats":
        return cls(
            name=name,
            rows_in=data.get("in", 0),
            rows_out=data.get("out", 0),
            dropped=Counter(data.get("dropped", {})),
            seconds=data.get("seconds", 0.0),
            extra=data.get("extra", {}),
        )


class timed:
    """`with timed(stats): ...` adds the block's wall time to stats.seconds."""

    def __init__(self, stats: StageStats):
        self.stats = stats

    def __enter__(self):
        self.start = time.perf_counter()
        return self.stats

    def __exit__(self, *exc):
        self.stats.seconds += time.perf_counter() - self.start
        return False
