"""Batch mode survives kill -9: a rerun re-attaches to its batches and submits nothing twice.

The shard runs in its own process (tests/support/batch_shards.py) against the fake Batch
API served by this process, which outlives the kill and counts every request it processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.batch_shards import run_shard, teacher_config, write_seed_file
from tasks.teacher.batch_api import BatchApi
from tasks.teacher.batch_ledger import BatchLedger
from tasks.teacher.batch_requests import batch_line, plan_id, write_input_file
from tasks.teacher.cache import endpoint_scope
from tasks.teacher.session import TeacherSession

REPO = Path(__file__).resolve().parents[2]


def shard_process(url: str, work: Path, n: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    return subprocess.Popen(
        [sys.executable, "-m", "support.batch_shards", url, str(work), str(n), "batch", *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def test_kill_9_while_batches_run_then_rerun(tmp_path, fake_teacher):
    fake_teacher.configure(batch_delay_s=2.0)
    work = tmp_path / "w"
    first = shard_process(fake_teacher.base_url, work, 30, "batch_max_requests=10")
    try:
        wait_for(lambda: fake_teacher.stats()["batch"].get("batches_created", 0) == 3 or first.poll() is not None)
        assert first.poll() is None, first.communicate()
        first.send_signal(signal.SIGKILL)  # three batches in flight, none finished
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert fake_teacher.stats()["batch"].get("lines_processed", 0) == 0  # killed before any result existed

    rerun = shard_process(fake_teacher.base_url, work, 30, "batch_max_requests=10")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    extra = summary["teacher"]["extra"]
    stats = fake_teacher.stats()
    assert stats["batch"]["batches_created"] == 3  # no new batch for requests already submitted
    assert extra["batches_created"] == 0 and extra["batches_reattached"] == 3
    assert stats["batch"]["batch_requests_received"] == 30 and stats["unique_requests"] == 30
    assert stats["repeats"] == 0 and stats["by_outcome"] == {"batch_200": 30}  # nothing sent twice, nothing live
    assert summary["pairs"] == 30 and extra["batch_replies"] == 30


def test_batch_created_but_id_never_recorded_is_found_not_recreated(tmp_path, fake_teacher):
    """A kill between `batches.create` and the ledger recording its id: the rerun finds the batch
    by its input file on the provider's list instead of creating a second one."""
    seeds = write_seed_file(tmp_path / "seeds.parquet", 8)
    cfg = teacher_config(fake_teacher.base_url, "batch")
    work = tmp_path / "w"
    cache_path = work / ".cache" / "requests.sqlite"

    async def submit_without_recording() -> None:
        import pyarrow.parquet as pq

        table = pq.read_table(seeds)
        async with TeacherSession(cfg, cache_path=cache_path) as session:
            lines = [batch_line(r.key, r.body) for r in (
                session.build_request(i, s)
                for i, s in zip(table.column("seed_index").to_pylist(), table.column("seed").to_pylist())
            )]
            ledger = BatchLedger(cache_path.with_name("batches.sqlite"), session.cache.scope)
            local_id = plan_id([line.key for line in lines], 0)
            path = write_input_file(cache_path.parent / "batch-inputs" / f"{local_id}.jsonl", lines)
            ledger.plan(local_id, 0, str(path), [line.key for line in lines])
            async with BatchApi(cfg) as api:
                file_id = await api.upload(path)
                ledger.uploaded(local_id, file_id)
                await api.create(file_id, local_id)  # ... and the process dies before ledger.submitted
            ledger.close()

    asyncio.run(submit_without_recording())
    assert fake_teacher.stats()["batch"]["batches_created"] == 1
    result = asyncio.run(run_shard(cfg, work, seeds))
    stats = fake_teacher.stats()
    assert stats["batch"]["batches_created"] == 1 and stats["repeats"] == 0
    assert result["pairs"] == 8 and result["teacher"]["extra"]["batches_reattached"] == 1
    ledger = BatchLedger(cache_path.with_name("batches.sqlite"), endpoint_scope(fake_teacher.base_url))
    assert ledger.counts() == {"ingested": 1}
    ledger.close()


def test_reattached_batch_files_every_reply_even_other_shards(tmp_path, fake_teacher):
    """A re-attached batch may hold requests of shards not running now (the seeds were re-cut):
    its replies are filed from the batch's own input file, so no one has to buy them again."""
    import pyarrow.parquet as pq

    seeds = write_seed_file(tmp_path / "seeds.parquet", 8)
    cfg = teacher_config(fake_teacher.base_url, "batch")
    work = tmp_path / "w"
    cache_path = work / ".cache" / "requests.sqlite"
    fake_teacher.configure(batch_delay_s=1.5)  # long enough to kill the first run before its batch ends
    first = shard_process(fake_teacher.base_url, work, 8)
    try:
        wait_for(lambda: fake_teacher.stats()["batch"].get("batches_created", 0) == 1 or first.poll() is not None)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    # The rerun's shard holds only the first half of those seeds.
    half = tmp_path / "half.parquet"
    pq.write_table(pq.read_table(work / "seeds" / "shard-00000.parquet").slice(0, 4), half)
    result = asyncio.run(run_shard(cfg, work, half, "half"))
    assert result["pairs"] == 4 and result["teacher"]["extra"]["batches_reattached"] == 1
    from tasks.teacher.cache import RequestCache

    cache = RequestCache(cache_path, scope=endpoint_scope(fake_teacher.base_url))
    try:
        assert len(cache) == 8  # the other half's replies too, under their own keys
    finally:
        asyncio.run(cache.aclose())
    rest = asyncio.run(run_shard(cfg, work, work / "seeds" / "shard-00000.parquet", "all"))
    assert rest["teacher"]["extra"]["cache_hits"] == 8 and fake_teacher.stats()["batch"]["batches_created"] == 1
