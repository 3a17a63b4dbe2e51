"""Generation streams: a seed shard goes to the teacher as soon as it is staged, while
sampling goes on, and each landed shard is cleaned per row in a worker process."""

from __future__ import annotations

import asyncio
import time

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.schema import SEED_SCHEMA
from tasks.core.parquet_io import write_parquet_atomic


def seed_file(path, start: int, n: int) -> str:
    rows = [{"seed_index": start + i, "seed": f"def f{start + i}(x):\n    return x * {start + i}", "lang": "python",
             "seed_start_line": 1, "seed_end_line": 2} for i in range(n)]
    return str(write_parquet_atomic(pa.Table.from_pylist(rows, schema=SEED_SCHEMA), path))


def test_a_shard_goes_to_the_teacher_before_sampling_ends_and_is_cleaned_as_it_lands(
    prefect_server, fake_teacher, tmp_path
):
    from prefect import flow

    from tasks.dedup.exact import PAIR_DIGEST
    from tasks.dedup.near import MINHASH, NearDedupConfig
    from tasks.generation.shard_prep import PrepSettings
    from tasks.generation.step import generate_all
    from tasks.seeds.step import END_OF_SEEDS
    from tasks.teacher.session import TeacherConfig

    fake_teacher.configure(latency=0.05)
    teacher = TeacherConfig(base_url=fake_teacher.base_url, model="fake-teacher", api_key_env="", concurrency=8)
    settings = PrepSettings(near_dedup=NearDedupConfig(workers=1))

    @flow
    async def streaming() -> tuple[int, list[dict]]:
        shards: asyncio.Queue = asyncio.Queue()
        await shards.put(seed_file(tmp_path / "seeds" / "shard-00000.parquet", 0, 6))
        async def collect() -> list[dict]:
            return [s async for s in generate_all(
                shards, teacher, tmp_path / "work", tmp_path / "cache.sqlite", parallel=2, settings=settings,
                prep_workers=1,
            )]

        generation = asyncio.ensure_future(collect())
        # "Sampling" has not finished: the first shard must reach the teacher anyway.
        deadline = time.monotonic() + 120
        while fake_teacher.stats()["requests"] < 6 and time.monotonic() < deadline and not generation.done():
            await asyncio.sleep(0.05)
        sent_before_end = fake_teacher.stats()["requests"]
        await shards.put(seed_file(tmp_path / "seeds" / "shard-00001.parquet", 6, 4))
        await shards.put(END_OF_SEEDS)
        return sent_before_end, await generation

    sent_before_end, summaries = asyncio.run(streaming())
    assert sent_before_end >= 6
    assert [s["shard"] for s in summaries] == ["shard-00000", "shard-00001"]  # seed order
    for s in summaries:
        prepared = pq.read_table(s["prepared_path"])
        pairs = pq.read_table(s["pairs_path"])
        assert prepared["id"].to_pylist() == pairs["id"].to_pylist()
        assert {PAIR_DIGEST, MINHASH} <= set(prepared.column_names)
        assert set(s["prep_cpu_seconds"]) == {"exact_dedup", "near_dedup"}


def test_seed_shards_stream_from_a_child_process_in_order_with_their_counts(tmp_path):
    from tasks.seeds.sampling import SeedConfig
    from tasks.seeds.stream import SeedShardStream

    async def read(stream: SeedShardStream) -> list[str]:
        return [path async for path in stream]

    stream = SeedShardStream(SeedConfig(num_seeds=50), tmp_path / "seeds", 20)
    paths = asyncio.run(read(stream))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    indexes = [i for p in paths for i in pq.read_table(p)["seed_index"].to_pylist()]
    assert indexes == list(range(50))
    assert stream.stats["out"] == 50 and stream.stats["in"] == 50 + sum(stream.stats["dropped"].values())


def test_a_sampling_error_in_the_child_is_the_same_one_line_user_error(tmp_path):
    import pytest

    from tasks.core.errors import UserError
    from tasks.seeds.sampling import SeedConfig
    from tasks.seeds.stream import SeedShardStream

    empty = tmp_path / "empty"
    empty.mkdir()

    async def read() -> list[str]:
        return [p async for p in SeedShardStream(SeedConfig(num_seeds=5, source=str(empty)), tmp_path / "seeds", 5)]

    with pytest.raises(UserError, match="no usable snippets|no .*files|nothing"):
        asyncio.run(read())
