"""The one step contract: a stage that drops rows returns the kept rows and an audit of the rest.

In the spirit of datatrove's filters: a step takes a table and returns `StepOutput(kept,
audit)`, where `audit` has one row per dropped row (AUDIT_SCHEMA) and its `reason` says why.
`run_step` is the only place that counts: rows in, rows out, drops by reason, taken from
the audit itself, so "every row a stage receives is either passed on or dropped with a
reason" holds by construction and no flow edits a stage's counts.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from tasks.core.schema import AUDIT_SCHEMA
from tasks.core.stats import StageStats


class AccountingError(RuntimeError):
    """A step's kept rows plus its audit do not add up to its input: a bug, never a user error."""


@dataclass(frozen=True)
class StepOutput:
    kept: pa.Table
    audit: pa.Table  # AUDIT_SCHEMA, one row per dropped row


class RowStep(Protocol):
    """What every dropping stage implements."""

    stage: str  # the name in manifests, audits and the UI

    def apply(self, table: pa.Table) -> StepOutput: ...


def empty_audit() -> pa.Table:
    return AUDIT_SCHEMA.empty_table()


def audit_rows(table: pa.Table, mask, stage: str, reasons, **columns) -> pa.Table:
    """Audit rows for `table`'s rows where `mask` is true.

    `reasons` is one string for all of them or a list aligned with the masked rows;
    `columns` fills further audit columns (duplicate_of, benchmark, ...) the same way.
    Text columns the audit keeps (problem, solution, id) are copied when the table has them.
    """
    mask = pa.array(mask, type=pa.bool_())
    dropped = table.filter(mask)
    n = dropped.num_rows
    if n == 0:
        return empty_audit()

    def column(name: str, value):
        if value is None and name in dropped.column_names:
            return dropped[name].cast(pa.string())
        if isinstance(value, str) or value is None:
            return pa.array([value] * n, type=pa.string())
        return pa.array(list(value), type=pa.string())

    values = {"stage": stage, "reason": reasons, **columns}
    arrays = [column(f.name, values.get(f.name)) for f in AUDIT_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=AUDIT_SCHEMA)


def drop_counts(audit: pa.Table) -> Counter:
    if audit.num_rows == 0:
        return Counter()
    counts = pc.value_counts(audit["reason"]).to_pylist()
    return Counter({c["values"]: c["counts"] for c in counts})


def run_step(step: RowStep, table: pa.Table, stats: StageStats) -> StepOutput:
    """Apply `step` to `table`, count what it did into `stats`, and check the balance."""
    started = time.perf_counter()
    out = step.apply(table)
    stats.seconds += time.perf_counter() - started
    if out.kept.num_rows + out.audit.num_rows != table.num_rows:
        raise AccountingError(
            f"{step.stage}: {table.num_rows} rows in, {out.kept.num_rows} kept + {out.audit.num_rows} audited"
        )
    stats.rows_in += table.num_rows
    stats.rows_out += out.kept.num_rows
    stats.dropped.update(drop_counts(out.audit))
    return out
