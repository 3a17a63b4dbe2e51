"""Batch input files: the requests a shard would send live, as Batch API JSONL, split at the limits.

Each line is `{"custom_id": KEY, "method": "POST", "url": "/v1/chat/completions", "body": BODY}`
where BODY is the very byte string the live path would post (`TeacherSession.build_request`)
and KEY its content address, the reply cache's key: a batch reply is filed exactly where a
live reply to the same request would be, and a later live or batch run finds it there.

A provider caps a batch by requests (OpenAI: 50,000) and by input bytes (200 MB); requests
are split into chunks that respect both, in the order given.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

CHAT_URL = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class BatchLine:
    key: str  # the request's content address (= custom_id = the reply cache key)
    line: bytes  # the JSONL line, newline included


def batch_line(key: str, body: bytes) -> BatchLine:
    """One input line around the exact request body (spliced, not re-serialised: same bytes, same key)."""
    head = orjson.dumps({"custom_id": key, "method": "POST", "url": CHAT_URL})
    return BatchLine(key, head[:-1] + b',"body":' + body + b"}\n")


def split_at_limits(lines: list[BatchLine], max_requests: int, max_bytes: int) -> list[list[BatchLine]]:
    """Consecutive chunks of at most `max_requests` lines and `max_bytes` bytes each.

    A single line larger than `max_bytes` goes alone (the provider will refuse it, and that
    refusal is counted like any other), rather than being silently left out."""
    chunks: list[list[BatchLine]] = []
    current: list[BatchLine] = []
    size = 0
    for item in lines:
        n = len(item.line)
        if current and (len(current) >= max_requests or size + n > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        chunks.append(current)
    return chunks


def plan_id(keys: list[str], round_no: int) -> str:
    """A local id for a planned batch: its request keys and the retry round, hashed.

    The same requests planned again in the same round (a rerun that lost the plan before
    uploading) get the same id, so the ledger never holds two plans for one submission."""
    digest = hashlib.sha256(f"round={round_no}\n".encode())
    for key in sorted(keys):
        digest.update(key.encode())
    return digest.hexdigest()[:32]


def write_input_file(path: Path, chunk: list[BatchLine]) -> Path:
    """Write the chunk's JSONL atomically (temporary name, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.writelines(item.line for item in chunk)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path
