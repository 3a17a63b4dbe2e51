"""The one step contract: every dropping stage returns kept rows + an audit row per drop,
and run_step alone counts, from the audit."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pytest

from tasks.core.schema import AUDIT_SCHEMA
from tasks.core.stats import StageStats
from tasks.core.step import AccountingError, StepOutput, audit_rows, run_step


def pairs(texts: list[tuple[str, str]], prefix: str = "r") -> pa.Table:
    return pa.table({
        "id": [f"{prefix}{i}" for i in range(len(texts))],
        "seed_index": list(range(len(texts))),
        "problem": [p for p, _ in texts],
        "solution": [s for _, s in texts],
    })


class DropOdd:
    stage = "drop_odd"

    def apply(self, table: pa.Table) -> StepOutput:
        odd = [i % 2 == 1 for i in range(table.num_rows)]
        kept = table.filter(pa.array([not o for o in odd]))
        return StepOutput(kept, audit_rows(table, odd, self.stage, "odd"))


class LosesARow:
    stage = "leaky"

    def apply(self, table: pa.Table) -> StepOutput:
        return StepOutput(table.slice(1), AUDIT_SCHEMA.empty_table())


def test_run_step_counts_from_the_audit_and_accumulates_over_tables():
    stats = StageStats("drop_odd")
    step = DropOdd()
    first = run_step(step, pairs([("a", "b")] * 5), stats)
    run_step(step, pairs([("c", "d")] * 4), stats)
    assert (stats.rows_in, stats.rows_out, dict(stats.dropped)) == (9, 5, {"odd": 4})
    assert first.audit.schema == AUDIT_SCHEMA
    assert first.audit["id"].to_pylist() == ["r1", "r3"] and set(first.audit["stage"].to_pylist()) == {"drop_odd"}
    assert first.audit["problem"].to_pylist() == ["a", "a"]  # the dropped rows' text travels with the audit


def test_a_step_whose_rows_do_not_add_up_is_refused_before_counting():
    stats = StageStats("leaky")
    with pytest.raises(AccountingError, match="3 rows in, 2 kept \\+ 0 audited"):
        run_step(LosesARow(), pairs([("a", "b")] * 3), stats)
    assert stats.rows_in == 0 and stats.rows_out == 0


def _check_step(step, tables: list[pa.Table]) -> tuple[StageStats, list[StepOutput]]:
    """Contract checks any dropping stage must pass; returns its stats and outputs."""
    stats = StageStats(step.stage)
    outputs = [run_step(step, t, stats) for t in tables]
    for table, out in zip(tables, outputs):
        assert out.audit.schema == AUDIT_SCHEMA
        assert out.kept.num_rows + out.audit.num_rows == table.num_rows
        assert set(out.audit["stage"].to_pylist()) <= {step.stage}
        assert out.audit["reason"].null_count == 0
    assert stats.rows_in == sum(t.num_rows for t in tables)
    assert stats.rows_in == stats.rows_out + stats.dropped_total
    return stats, outputs


def test_exact_dedup_is_a_step_with_memory_across_tables():
    from tasks.dedup.exact import ExactDeduper

    first = pairs([("p1", "s1"), ("p2", "s2"), ("p1 ", "s1\n")], "a")
    second = pairs([("p2", "s2"), ("p3", "s3")], "b")
    stats, (one, two) = _check_step(ExactDeduper(), [first, second])
    assert one.kept["id"].to_pylist() == ["a0", "a1"] and two.kept["id"].to_pylist() == ["b1"]
    assert two.audit.to_pylist()[0]["duplicate_of"] == "a1"
    assert dict(stats.dropped) == {"exact_duplicate": 2}


def test_near_dedup_plan_is_a_step_over_the_rows_in_order():
    from tasks.dedup.near import NearDedupConfig, TableSource, plan_near_dedup

    body = " ".join(f"word{i}" for i in range(60))
    table = pairs([(body, "x = 1"), ("something else entirely " * 5, "y = 2"), (body + " extra", "x = 1")])
    plan = plan_near_dedup(TableSource(table), NearDedupConfig(workers=1))
    stats = plan.new_stats()
    step = plan.step()
    outs = [run_step(step, table.slice(0, 2), stats), run_step(step, table.slice(2), stats)]
    assert [o.kept.num_rows for o in outs] == [2, 0]
    assert outs[1].audit.to_pylist()[0]["duplicate_of"] == "r0"
    assert (stats.rows_in, stats.rows_out, dict(stats.dropped)) == (3, 2, {"near_duplicate": 1})
    assert stats.extra["candidate_pairs"] >= 1  # the plan's figures ride along
    with pytest.raises(Exception, match="changed"):
        run_step(step, table.slice(0, 1), stats)  # more rows than were planned


def test_seed_exclusion_is_a_step_counted_in_the_seeds_stage(tmp_path):
    from tasks.publish.versions import VersionStore
    from tasks.seeds.exclusion import SeedExcluder
    from tasks.seeds.stream import chained

    seeds = pa.table({"seed_index": [0, 1, 2], "lang": ["python"] * 3, "seed": ["a = 1", "b = 2", "c = 3"]})
    store = VersionStore(tmp_path)
    store.path("0001").mkdir(parents=True)
    store.record_seeds("0001", [seeds.slice(1, 1)])
    stats, (out,) = _check_step(SeedExcluder([tmp_path / "versions" / "0001" / "seed_digests.parquet"]), [seeds])
    assert out.kept["seed"].to_pylist() == ["a = 1", "c = 3"]
    assert dict(stats.dropped) == {SeedExcluder.REASON: 1}

    sampling = StageStats("seeds", rows_in=10, rows_out=3, seconds=1.0)
    sampling.drop("too_short", 7)
    both = chained(sampling, stats)
    assert (both.rows_in, both.rows_out, dict(both.dropped)) == (10, 2, {"too_short": 7, SeedExcluder.REASON: 1})
    with pytest.raises(AccountingError):
        chained(sampling, StageStats("seeds", rows_in=2, rows_out=2))


def test_decontamination_is_a_step(shared_benchmarks):
    from tasks.decontamination.decontaminate import DecontaminationConfig, Decontaminator

    with gzip.open(shared_benchmarks / "HumanEval.jsonl.gz", "rt") as fh:
        he = [json.loads(line) for line in fh]
    clean = [(f"Sum the first {i} squares of a list of sensor readings, skipping gaps.", f"def f{i}(): pass")
             for i in range(6)]
    table = pairs(clean[:3] + [("Implement it.", he[3]["prompt"] + he[3]["canonical_solution"])] + clean[3:])
    cfg = DecontaminationConfig(benchmark_dir=str(shared_benchmarks), allow_hub=False, benchmarks=["humaneval"])
    with Decontaminator(cfg) as step:
        stats, outs = _check_step(step, [table.slice(0, 4), table.slice(4)])
        figures = step.figures()
    assert outs[0].audit.to_pylist()[0]["id"] == "r3" and outs[1].audit.num_rows == 0
    assert stats.rows_out == 6 and sum(stats.dropped.values()) == 1
    assert figures["removed"]["humaneval"]


def test_apply_to_files_stages_kept_rows_and_replaces_stale_parts(tmp_path):
    import pyarrow.parquet as pq

    from tasks.core.sources import apply_to_files

    (tmp_path / "out").mkdir()
    pq.write_table(pairs([("z", "z")]), tmp_path / "out" / "part-00009.parquet")  # an earlier run's leftover
    stats = StageStats("drop_odd")
    staged = apply_to_files(DropOdd(), [pairs([("a", "b")] * 3), pairs([("c", "d")] * 2)], tmp_path / "out", stats)
    assert [pq.read_metadata(f).num_rows for f in staged.files] == [2, 1]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    assert staged.rows == 3 and staged.audit.num_rows == 2 and stats.dropped == {"odd": 2}
