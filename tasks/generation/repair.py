"""The validation repair round: a pair whose solution failed its own tests goes back to the
teacher once, with the error, through the run's TeacherSession (cached, limited, budgeted,
counted); the corrected pair is validated again like any other, and passes or stays dropped.

Only failures a corrected reply can fix are sent (REPAIRABLE); a forged result, a missing
test or a language with no runner is not the teacher's to fix. A row whose repair request
fails at the teacher or does not parse keeps its first verdict. The round is shard by shard,
right after the shard's validation, so it overlaps later shards' generation like the rest.

Counts: the validation stage's drops are the FINAL verdicts (a recovered row is not a drop),
so the run's seed accounting still balances; `extra.repair` says how many were attempted,
recovered, still failing, and lost at the teacher or in parsing. The repair requests' tokens
and cost are added to the shard's teacher usage (the manifest's `usage`), and counted in
`extra.repair_requests` of the teacher stage.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.core.parquet_io import write_parquet_atomic
from tasks.core.stats import StageStats
from tasks.generation.parsing import ParseFailure, parse_reply
from tasks.teacher.prompts import repair_messages
from tasks.validation.validate import STAGE

REPAIRABLE = ("tests_failed", "runtime_error", "syntax_error", "timeout")
ERROR_CHARS = 1500  # of the failure detail sent back: the message and the end of stderr


def repairable_failures(summary: dict) -> pa.Table:
    """The shard's pairs that failed validation for a reason a corrected reply can fix, with
    their failure detail (empty when there are none)."""
    audit = pq.read_table(summary["validate_audit_path"], columns=["id", "reason", "detail"])
    audit = audit.filter(pc.is_in(audit["reason"], pa.array(REPAIRABLE)))
    if audit.num_rows == 0:
        return audit
    pairs = pq.read_table(summary["pairs_path"])
    return pairs.join(audit, "id", join_type="inner").sort_by("seed_index")


def repair_requests(failed: pa.Table, output_format: str) -> tuple[list[int], list[list[dict]]]:
    rows = failed.select(["seed_index", "seed", "problem", "solution", "tests", "detail"]).to_pylist()
    return [r["seed_index"] for r in rows], [
        repair_messages(r["seed"], r["problem"], r["solution"], r["tests"] or "", (r["detail"] or "")[-ERROR_CHARS:],
                        output_format)  # fmt: skip
        for r in rows
    ]


def repaired_pairs(failed: pa.Table, replies, output_format: str) -> tuple[pa.Table, Counter]:
    """The failed rows with the corrected problem, solution and tests of each reply that
    parses (same id, seed and request metadata: the row is the same seed's pair), and the
    reasons the others were not repaired."""
    lost: Counter = Counter()
    keep, problems, solutions, tests = [], [], [], []
    for i, reply in enumerate(replies):
        parsed = None if reply.error else parse_reply(reply.content, reply.finish_reason, output_format)
        if parsed is None or isinstance(parsed, ParseFailure):
            lost[f"teacher:{reply.error}" if reply.error else f"parse:{parsed.reason}"] += 1
            continue
        keep.append(i)
        problems.append(parsed.problem)
        solutions.append(parsed.solution)
        tests.append(parsed.tests)
    table = failed.take(pa.array(keep, pa.int64())).drop_columns(["reason", "detail"])
    for name, values in (("problem", problems), ("solution", solutions), ("tests", tests)):
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), pa.array(values, pa.string()))
    return table, lost


def merged_validation(first: dict, second: dict | None, revalidated_first_reasons: Counter, attempted: int,
                      lost: Counter) -> dict:  # fmt: skip
    """The shard's validation counts after the round: the first-attempt drops of the rows
    that were validated again are replaced by their second verdicts. by_language and
    pass_rate stay the first attempt's; `repair` holds the round's own figures."""
    stats = StageStats.from_dict(STAGE, first)
    recovered = still_failing = 0
    if second is not None:
        stats.dropped.subtract(revalidated_first_reasons)
        stats.dropped = Counter({reason: n for reason, n in stats.dropped.items() if n > 0})
        stats.rows_out += second["out"]
        stats.dropped.update(second["dropped"])
        recovered, still_failing = second["out"], second["in"] - second["out"]
    stats.extra = {**stats.extra, "repair": {
        "attempted": attempted, "recovered": recovered, "still_failing": still_failing,
        "not_repaired": dict(sorted(lost.items())),
        "by_language_after_repair": (second or {}).get("extra", {}).get("by_language", {}),
    }}
    return stats.as_dict()


def merged_audit(first_path: str, second_path: str | None, repaired_ids: set[str], out_path: Path) -> str:
    """The first audit without the rows that were validated again, plus their second verdicts."""
    first = pq.read_table(first_path)
    if repaired_ids:
        first = first.filter(pc.invert(pc.is_in(first["id"], pa.array(sorted(repaired_ids), pa.string()))))
    tables = [first] + ([pq.read_table(second_path)] if second_path else [])
    return str(write_parquet_atomic(pa.concat_tables(tables), out_path))


def merged_prepared(first_path: str, second_path: str, out_path: Path) -> str:
    """The shard's prepared rows with the recovered ones, in seed order."""
    table = pa.concat_tables([pq.read_table(first_path), pq.read_table(second_path)]).sort_by("seed_index")
    return str(write_parquet_atomic(table, out_path))


def fold_usage(teacher: dict, repair: dict) -> dict:
    """The shard's teacher figures with the repair requests' usage added (numbers only)."""
    extra = dict(teacher.get("extra", {}))
    for key, value in repair.get("extra", {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(extra.get(key, 0), (int, float)):
            extra[key] = round(extra.get(key, 0) + value, 6)
    extra["repair_requests"] = repair["in"]
    return {**teacher, "extra": extra}
