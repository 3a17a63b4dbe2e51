"""The near-dedup index learns only published rows (issue 14).

Before: near-dedup persisted the signatures of every row it kept, before decontamination
ran, so a later version dropped rows as near-duplicates of rows that were never published."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow

from tasks.core.sources import StagedRows
from tasks.core.stats import StageStats
from tasks.core.schema import AUDIT_SCHEMA
from tasks.decontamination.decontaminate import DecontaminationConfig
from tasks.decontamination.step import decontaminate_task
from tasks.dedup.near import REASON_PUBLISHED, NearDedupConfig, load_signatures
from tasks.dedup.step import near_dedup_clusters_task, near_dedup_signatures_task, persist_published_signatures_task
from tasks.core.parquet_io import write_parquet_atomic

from dedup.test_near_dedup import MEAN, planted_rows, table


@flow(name="refresh-cleaning-tail")
def cleaning_tail(staged: str, work: str, near: NearDedupConfig, decontamination: DecontaminationConfig) -> dict:
    """The end of flows/refresh.py's body: near-dedup, decontamination, publish, index."""
    work_dir = Path(work)
    rows = StagedRows([staged], StageStats("exact_dedup", rows_in=pq.read_metadata(staged).num_rows,
                                           rows_out=pq.read_metadata(staged).num_rows), AUDIT_SCHEMA.empty_table())
    signatures = near_dedup_signatures_task(rows, near)
    deduped = near_dedup_clusters_task(rows, signatures, near, work_dir / "near_deduped", persist=False)
    clean = decontaminate_task(deduped, decontamination, work_dir / "clean")
    published = clean.files  # what publish_task writes out, row for row
    persist_published_signatures_task(signatures, published, near)
    return {
        "near_dedup_kept": [i for f in deduped.files for i in pq.read_table(f, columns=["id"])["id"].to_pylist()],
        "near_dedup_audit": dict(zip(deduped.audit["id"].to_pylist(), deduped.audit["reason"].to_pylist())),
        "published": [i for f in published for i in pq.read_table(f, columns=["id"])["id"].to_pylist()],
    }


def test_a_row_decontamination_removed_is_not_in_the_index(prefect_server, tmp_path):
    # A benchmark that holds the MEAN problem: version 1's mean-a is contaminated.
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "HumanEval.jsonl").write_text(json.dumps({
        "task_id": "HumanEval/900", "prompt": f'def run(path):\n    """{MEAN[0]}\n    """\n',
        "canonical_solution": MEAN[1].split("\n", 1)[1] + "\n", "test": "", "entry_point": "run",
    }) + "\n")
    decontamination = DecontaminationConfig(benchmarks=["humaneval"], benchmark_dir=str(bench), allow_hub=False)
    near = NearDedupConfig(workers=1, index_dir=str(tmp_path / "index"))
    rows = planted_rows()  # mean-a, longest-a, count-a | mean-b, longest-b (near-copies of the a's)

    v1 = tmp_path / "v1"
    write_parquet_atomic(table(rows[:3]), v1 / "exact" / "part-00000.parquet")
    first = cleaning_tail(str(v1 / "exact" / "part-00000.parquet"), str(v1), near.model_copy(update={"version": "0001"}),
                          decontamination)
    assert sorted(first["near_dedup_kept"]) == ["count-a", "longest-a", "mean-a"]
    assert sorted(first["published"]) == ["count-a", "longest-a"]  # mean-a is a benchmark problem
    index_ids, _ = load_signatures(near.index_dir, near)
    assert sorted(index_ids) == ["count-a", "longest-a"]

    # Version 2: mean-b is a near-copy of a row never published; longest-b of a published one.
    v2 = tmp_path / "v2"
    write_parquet_atomic(table(rows[3:]), v2 / "exact" / "part-00000.parquet")
    second = cleaning_tail(str(v2 / "exact" / "part-00000.parquet"), str(v2), near.model_copy(update={"version": "0002"}),
                           decontamination)
    assert second["near_dedup_audit"] == {"longest-b": REASON_PUBLISHED}
    assert second["near_dedup_kept"] == ["mean-b"]  # before: dropped as a near-copy of the unpublished mean-a
