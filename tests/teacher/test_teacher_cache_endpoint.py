"""The request cache is per endpoint (issue 14): another server answering to the same model
name is not served this one's replies, unless the user names a scope the replicas share.
An old cache (written before endpoints were recorded) keeps resuming for the endpoint that
opens it."""

from __future__ import annotations

import asyncio
import sqlite3

import pyarrow as pa
import pytest

from support.fake_teacher import FakeTeacher, FakeTeacherClient
from tasks.teacher.cache import endpoint_scope
from tasks.teacher.config import TeacherConfig
from tasks.teacher.session import TeacherSession

# The cache's table as it was before endpoints were recorded (commit 168d8a0 and earlier).
OLD_SCHEMA = """
CREATE TABLE replies (
    key TEXT NOT NULL UNIQUE, model TEXT NOT NULL, content TEXT, finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, system_fingerprint TEXT,
    max_tokens INTEGER NOT NULL, request_seed INTEGER NOT NULL, received_at_us INTEGER NOT NULL
)
"""
OLD_COLUMNS = ("key, model, content, finish_reason, prompt_tokens, completion_tokens, system_fingerprint, "
               "max_tokens, request_seed, received_at_us")


def seeds_table(n: int) -> pa.Table:
    return pa.table({"seed_index": pa.array(range(n), pa.int64()), "seed": [f"v_{i} = {i} * 3\n" for i in range(n)]})


def run(url: str, cache, n: int = 12, **overrides):
    cfg = TeacherConfig(base_url=url, model="fake-teacher", api_key_env="", **overrides)

    async def go():
        async with TeacherSession(cfg, cache_path=cache) as session:
            replies, stats = await session.complete_shard(seeds_table(n))
            return replies, stats

    return asyncio.run(go())


@pytest.fixture
def other_teacher():
    server = FakeTeacher()
    url = server.start_in_thread()
    yield FakeTeacherClient(url, server)
    server.stop_thread()


def test_another_endpoint_is_not_served_this_ones_replies(fake_teacher, other_teacher, tmp_path):
    cache = tmp_path / "requests.sqlite"
    first, _ = run(fake_teacher.base_url, cache)
    assert fake_teacher.stats()["requests"] == 12

    other, stats = run(other_teacher.base_url, cache)
    assert other_teacher.stats()["requests"] == 12 and stats.extra["cache_hits"] == 0  # before: 0 sent, 12 hits
    assert [r.key for r in other] == [r.key for r in first]  # the request's address is the same; the filing differs

    _, again = run(fake_teacher.base_url, cache)  # each endpoint keeps resuming from its own replies
    assert again.extra["cache_hits"] == 12 and fake_teacher.stats()["requests"] == 12


def test_replicas_share_replies_under_a_named_scope(fake_teacher, other_teacher, tmp_path):
    cache = tmp_path / "requests.sqlite"
    run(fake_teacher.base_url, cache, cache_scope="fake-teacher-replicas")
    _, stats = run(other_teacher.base_url, cache, cache_scope="fake-teacher-replicas")
    assert stats.extra["cache_hits"] == 12 and other_teacher.stats()["requests"] == 0


def test_an_old_cache_still_resumes_for_its_endpoint(fake_teacher, other_teacher, tmp_path):
    new = tmp_path / "new.sqlite"
    first, _ = run(fake_teacher.base_url, new)
    old = tmp_path / "old.sqlite"  # the same replies in the old layout
    with sqlite3.connect(old) as db:
        db.execute(OLD_SCHEMA)
        db.executemany(f"INSERT INTO replies ({OLD_COLUMNS}) VALUES ({','.join('?' * 10)})",
                       sqlite3.connect(new).execute(f"SELECT {OLD_COLUMNS} FROM replies").fetchall())
    fake_teacher.reset()

    resumed, stats = run(fake_teacher.base_url, old)  # the first opener adopts the old rows
    assert stats.extra["cache_hits"] == 12 and fake_teacher.stats()["requests"] == 0
    assert [r.content for r in resumed] == [r.content for r in first]
    _, other = run(other_teacher.base_url, old)
    assert other.extra["cache_hits"] == 0 and other_teacher.stats()["requests"] == 12
    with sqlite3.connect(old) as db:
        scopes = dict(db.execute("SELECT endpoint, count(*) FROM replies GROUP BY endpoint").fetchall())
    assert scopes == {endpoint_scope(fake_teacher.base_url): 12, endpoint_scope(other_teacher.base_url): 12}


def test_the_filed_endpoint_carries_no_credentials():
    assert endpoint_scope("https://user:sk-secret@api.example.com:8443/v1/?key=sk-x") == "https://api.example.com:8443/v1"
