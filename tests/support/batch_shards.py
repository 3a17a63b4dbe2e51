"""Helpers for batch-mode tests and the batch benchmark: seed files and one generation shard.

`python -m support.batch_shards URL WORK N MODE [k=v ...]` runs one shard in its own process
(the kill -9 test kills it while its batches are in flight) and prints its summary as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.schema import SEED_SCHEMA
from tasks.generation.shard import generate_shard
from tasks.teacher.config import TeacherConfig
from tasks.teacher.session import TeacherSession


def seeds_table(n: int, start: int = 0) -> pa.Table:
    rows = [
        {"seed_index": i, "seed": f"def f_{i}(x):\n    return x * {i % 7} + {i}\n", "lang": "python",
         "seed_source": "test", "seed_path": f"f_{i}.py", "seed_repo": None, "seed_license": "mit",
         "seed_start_line": 1, "seed_end_line": 2}
        for i in range(start, start + n)
    ]
    return pa.Table.from_pylist(rows, schema=SEED_SCHEMA)


def write_seed_file(path: Path, n: int, start: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(seeds_table(n, start), path)
    return path


def teacher_config(url: str, mode: str = "live", **overrides) -> TeacherConfig:
    """A fast test config: short polls, small batches unless overridden."""
    base = dict(base_url=url, model="fake-teacher", api_key_env="", teacher_mode=mode, concurrency=64,
                batch_poll_s=0.02, batch_poll_max_s=0.1, retry_base_s=0.01, retry_max_s=0.05,
                price_per_mtok_in=1.0, price_per_mtok_out=2.0)
    return TeacherConfig(**{**base, **overrides})


async def run_shard(cfg: TeacherConfig, work: Path, seeds_path: Path, name: str = "shard-00000",
                    ledger_path: Path | None = None) -> dict:
    """One generation shard through a fresh session; returns its summary (+ the pairs table).

    ledger_path: the run's spend ledger (tasks/teacher/ledger.py): the budget is then the run's."""
    async with TeacherSession(cfg, cache_path=work / ".cache" / "requests.sqlite", ledger_path=ledger_path) as session:
        summary = await generate_shard(
            seeds_path, session, cfg,
            pairs_path=work / "pairs" / f"{name}.parquet", failures_path=work / "failures" / f"{name}.parquet",
        )
    summary["pairs_table"] = pq.read_table(summary["pairs_path"])
    summary["failures_table"] = pq.read_table(summary["failures_path"])
    return summary


def _coerce(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def main(argv: list[str]) -> None:
    url, work, n, mode, *extra = argv
    overrides = {k: _coerce(v) for k, v in (item.split("=", 1) for item in extra)}
    work = Path(work)
    seeds = write_seed_file(work / "seeds" / "shard-00000.parquet", int(n)) if not (
        work / "seeds" / "shard-00000.parquet").exists() else work / "seeds" / "shard-00000.parquet"
    summary = asyncio.run(run_shard(teacher_config(url, mode, **overrides), work, seeds))
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_table")}, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
