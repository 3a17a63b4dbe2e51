"""Which staged teacher failures a plain rerun sends again.

A shard whose pairs and failures are staged is normally not run again (its cached task
result is reused, and the reply cache would answer every success anyway). But a seed that
failed at the teacher for a passing reason (retries exhausted on 429/5xx/timeouts/resets,
the budget spent) may well get a reply next time: a rerun must try it again, and only
such seeds are sent (successes come from the reply cache). Failures that would repeat
(the prompt does not fit, 400/404) make no shard run again.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

# Reasons that say "not this time" rather than "never" (see docs/teacher.md's table).
PASSING_SUFFIX = "_retries_exhausted"
PASSING_REASONS = frozenset({"budget_exhausted"})


def is_passing(reason: str) -> bool:
    return reason.endswith(PASSING_SUFFIX) or reason in PASSING_REASONS


def retryable_failure_ids(failures_path: str | Path) -> set[str]:
    """Ids of the staged rows that failed at the teacher for a passing reason."""
    path = Path(failures_path)
    if not path.exists():
        return set()
    table = pq.read_table(path, columns=["id", "stage", "reason"])
    teacher = table.filter(pc.equal(table["stage"], "teacher"))
    return {rid for rid, reason in zip(teacher["id"].to_pylist(), teacher["reason"].to_pylist()) if is_passing(reason)}


def recovered(before: set[str], failures_path: str | Path) -> int:
    """How many of `before` (earlier teacher failures) did not fail at the teacher this time."""
    if not before:
        return 0
    table = pq.read_table(failures_path, columns=["id", "stage"])
    still = set(table.filter(pc.equal(table["stage"], "teacher"))["id"].to_pylist())
    return len(before - still)
