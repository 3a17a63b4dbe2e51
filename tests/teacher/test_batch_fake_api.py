"""The fake Batch API speaks what the real `openai` SDK expects: files, batches, list, cancel,
results out of order, and results the ingest reads back by custom_id."""

from __future__ import annotations

import asyncio

import openai

from support.batch_shards import seeds_table, teacher_config
from tasks.teacher.batch_ingest import read_results
from tasks.teacher.batch_requests import batch_line, split_at_limits
from tasks.teacher.session import TeacherSession


def input_jsonl(cfg, n: int) -> tuple[list[str], bytes]:
    session = TeacherSession(cfg)  # builds requests; opens nothing
    table = seeds_table(n)
    lines = [batch_line(r.key, r.body) for r in (
        session.build_request(i, s) for i, s in zip(table.column("seed_index").to_pylist(), table.column("seed").to_pylist())
    )]
    return [line.key for line in lines], b"".join(line.line for line in lines)


async def until(client, batch_id: str, statuses: set[str]):
    for _ in range(400):
        batch = await client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        await asyncio.sleep(0.02)
    raise TimeoutError(batch.status)


def test_sdk_round_trip_out_of_order_list_and_cancel(fake_teacher):
    fake_teacher.configure(batch_delay_s=0.2)
    cfg = teacher_config(fake_teacher.base_url, "batch")
    keys, payload = input_jsonl(cfg, 40)

    async def scenario():
        async with openai.AsyncOpenAI(base_url=fake_teacher.base_url, api_key="k") as client:
            upload = await client.files.create(file=("in.jsonl", payload), purpose="batch")
            assert upload.bytes == len(payload) and upload.purpose == "batch"
            done = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                               completion_window="24h", metadata={"ossforge_local_id": "a"})
            done = await until(client, done.id, {"completed"})
            output = (await client.files.content(done.output_file_id)).content
            assert done.request_counts.completed == 40 and done.error_file_id is None

            second = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                 completion_window="24h")
            await until(client, second.id, {"in_progress"})
            await client.batches.cancel(second.id)
            cancelled = await until(client, second.id, {"cancelled"})
            listed = [b.id async for b in await client.batches.list(limit=1)]  # pages of one, newest first
            errors = (await client.files.content(cancelled.error_file_id)).content if cancelled.error_file_id else b""
            return output, listed, cancelled, errors, second.id, done.id

    output, listed, cancelled, errors, second_id, first_id = asyncio.run(scenario())
    order = [line.split(b'"custom_id":"')[1][:64].decode() for line in output.splitlines()]
    assert sorted(order) == sorted(keys) and order != keys  # every request, not in input order
    results = read_results(set(keys), output, b"", "completed")
    assert len(results.replies) == 40 and not results.failures
    assert listed == [second_id, first_id]
    assert cancelled.request_counts.completed < 40  # cancelled part way
    cancelled_lines = read_results(set(keys), b"", errors, "cancelled").failures
    assert set(cancelled_lines.values()) == {"batch_cancelled"}
    assert len(cancelled_lines) == 40 - cancelled.request_counts.completed


def test_split_at_limits_respects_requests_and_bytes():
    lines = [batch_line(f"k{i}", b'{"x":"' + b"a" * 90 + b'"}') for i in range(10)]
    size = len(lines[0].line)
    chunks = split_at_limits(lines, max_requests=4, max_bytes=10_000)
    assert [len(c) for c in chunks] == [4, 4, 2]
    chunks = split_at_limits(lines, max_requests=100, max_bytes=3 * size)
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert [item.key for chunk in chunks for item in chunk] == [item.key for item in lines]  # order kept
    assert split_at_limits(lines[:1], max_requests=1, max_bytes=10) == [lines[:1]]  # too big alone: sent, refused, counted


def test_every_submitted_request_is_accounted_for():
    import orjson

    def line(key, status=200, body=None, error=None):
        response = None if error else {"status_code": status, "body": body}
        return orjson.dumps({"custom_id": key, "response": response, "error": error})

    ok = {"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}], "usage": {}}
    output = b"\n".join([line("b", body=ok), line("stranger", body=ok), line("c", 200, {"choices": []})])
    errors = b"\n".join([line("d", 429, {"error": {"message": "slow down"}}),
                         line("e", 400, {"error": {"code": "context_length_exceeded", "message": ""}}),
                         line("f", error={"code": "batch_expired", "message": "window"})])
    results = read_results({"a", "b", "c", "d", "e", "f"}, output, errors, "expired")
    assert set(results.replies) == {"b"} and results.unexpected == 1
    assert results.failures == {"a": "batch_expired", "c": "malformed_body", "d": "http_429",
                                "e": "http_400_context_length", "f": "batch_expired"}
    assert read_results({"a"}, b"", b"", "completed").failures == {"a": "batch_missing_result"}
