"""The fake teacher's Batch API: /v1/files and /v1/batches as OpenAI serves them, on loopback.

Mounted by `FakeTeacher.app()`, so every fake teacher also answers batches, with the same
replies its chat endpoint would give (same content, same usage, same refusals) and the
same request counters: a request answered in a batch and then sent live counts as a
repeat, so tests can assert that nothing was sent twice, whichever way.

- `POST /v1/files` (multipart, purpose=batch), `GET /v1/files/{id}`, `GET /v1/files/{id}/content`
- `POST /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, `GET /v1/batches`
  (newest first, `limit` / `after` cursor)

A batch goes validating -> in_progress (requests finish in four steps over
`batch_delay_s`, so `request_counts` moves) -> completed, or expired when a fraction
`batch_expire_rate` of its requests is drawn to run out of window (drawn from a hash of the
request and how many batches it was in before, so a retry can succeed), or cancelled.
Output and error lines are written in a shuffled order, as the providers promise nothing
about order. `batch_stats()` counts files, batches created, lines processed and expired.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from itertools import count

import orjson
from aiohttp import web

_ids = count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}{random.randrange(16**8):08x}"


def _json(payload: dict, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


class FakeBatchApi:
    def __init__(self, teacher) -> None:
        self.teacher = teacher  # the FakeTeacher: options, counters, reply logic, key check
        self.files: dict[str, dict] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_attempts: Counter = Counter()  # request key -> batches it was processed in
        self.stats: Counter = Counter()
        self._tasks: set[asyncio.Task] = set()
        # The teacher's reply helpers, from whichever module copy it was loaded as (support.* / tests.support.*).
        helpers = sys.modules[type(teacher).__module__]
        self._completion, self._unit = helpers._completion, helpers._unit

    def mount(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}", self._file)
        app.router.add_get("/v1/files/{file_id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{batch_id}", self._retrieve)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._cancel)

    def batch_stats(self) -> dict:
        return {**self.stats, "batch_statuses": dict(Counter(b["status"] for b in self.batches.values()))}

    # ------------------------------------------------------------------ files
    def _store(self, content: bytes, filename: str, purpose: str) -> dict:
        file = {"id": _new_id("file"), "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None}
        self.files[file["id"]] = file
        self.contents[file["id"]] = content
        return file

    async def _upload(self, request: web.Request) -> web.Response:
        denied = self.teacher._check_key(request)
        if denied is not None:
            return denied
        form = await request.post()
        upload = form.get("file")
        if upload is None or not hasattr(upload, "file"):
            return _json({"error": {"message": "file is required", "type": "invalid_request_error"}}, 400)
        self.stats["files_uploaded"] += 1
        return _json(self._store(upload.file.read(), upload.filename, str(form.get("purpose", ""))))

    async def _file(self, request: web.Request) -> web.Response:
        file = self.files.get(request.match_info["file_id"])
        return _json(file) if file else _json({"error": {"message": "No such file"}}, 404)

    async def _content(self, request: web.Request) -> web.Response:
        denied = self.teacher._check_key(request)
        if denied is not None:
            return denied
        content = self.contents.get(request.match_info["file_id"])
        if content is None:
            return _json({"error": {"message": "No such file"}}, 404)
        self.stats["files_downloaded"] += 1
        return web.Response(body=content, content_type="application/octet-stream")

    # ------------------------------------------------------------------ batches
    async def _create(self, request: web.Request) -> web.Response:
        denied = self.teacher._check_key(request)
        if denied is not None:
            return denied
        body = await request.json()
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return _json({"error": {"message": f"No such file: {file_id}", "type": "invalid_request_error"}}, 400)
        lines = self.contents[file_id].splitlines()
        now = int(time.time())
        batch = {
            "id": _new_id("batch"), "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
            "input_file_id": file_id, "completion_window": body.get("completion_window", "24h"),
            "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
            "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        self.batches[batch["id"]] = batch
        self.stats["batches_created"] += 1
        self.stats["batch_requests_received"] += len(lines)
        task = asyncio.ensure_future(self._process(batch, lines))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return _json(batch)

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        self.stats["batch_retrieves"] += 1
        return _json(batch) if batch else _json({"error": {"message": "No such batch"}}, 404)

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _json({"error": {"message": "No such batch"}}, 404)
        if batch["status"] in ("validating", "in_progress", "finalizing"):
            batch["status"] = "cancelling"
            batch["cancelling_at"] = int(time.time())
        return _json(batch)

    async def _list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", 20))
        ordered = list(reversed(self.batches.values()))  # newest first
        after = request.query.get("after")
        if after:
            ids = [b["id"] for b in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        page = ordered[:limit]
        return _json({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                      "last_id": page[-1]["id"] if page else None, "has_more": len(ordered) > limit})

    # ------------------------------------------------------------------ processing
    async def _process(self, batch: dict, lines: list[bytes]) -> None:
        opts = self.teacher.options
        await asyncio.sleep(0)
        batch["status"], batch["in_progress_at"] = "in_progress", int(time.time())
        outputs, errors = [], []
        steps = 4
        per_step = -(-len(lines) // steps) if lines else 0
        for step in range(steps):
            await asyncio.sleep(opts.batch_delay_s / steps)
            for raw in lines[step * per_step : (step + 1) * per_step]:
                if batch["status"] == "cancelling":
                    errors.append(self._line_error(orjson.loads(raw)["custom_id"], "batch_cancelled"))
                    continue
                good, line = self._answer_line(orjson.loads(raw))
                (outputs if good else errors).append(line)  # non-200 answers go to the error file too
                batch["request_counts"]["completed" if good else "failed"] += 1
        self._finish(batch, outputs, errors)

    def _line_error(self, custom_id: str, code: str) -> bytes:
        self.stats[f"lines_{code}"] += 1
        message = "This request could not be executed before the completion window expired." if code == "batch_expired" \
            else "The batch was cancelled before this request ran."
        return orjson.dumps({"id": _new_id("batch_req"), "custom_id": custom_id, "response": None,
                             "error": {"code": code, "message": message}})

    def _answer_line(self, line: dict) -> tuple[bool | None, bytes]:
        """(True: 200 output line, False: error-status output line, None: error-file line), the JSONL line."""
        teacher, opts = self.teacher, self.teacher.options
        body, custom_id = line["body"], line["custom_id"]
        key_probe = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        attempt = self.batch_attempts[key_probe]
        self.batch_attempts[key_probe] += 1
        if self._unit(opts.fault_salt, key_probe, "batch-expire", attempt) < opts.batch_expire_rate:
            return None, self._line_error(custom_id, "batch_expired")
        c = teacher.counters
        c.requests += 1
        seen = teacher._record_arrival(body, body["messages"], time.monotonic() - c.started)
        self.stats["lines_processed"] += 1
        refused = teacher._refusal_status(body["model"], seen)
        if refused is not None:
            status, payload = refused
        else:
            content, finish_reason = teacher._reply_content(body, body["messages"], seen.key)
            completion_tokens = max(1, len(content) // 4)
            payload = self._completion(seen, body["model"], content, finish_reason, completion_tokens)
            status = 200
            c.by_outcome["batch_200"] += 1
            c.completed.add(seen.key)
            c.prompt_tokens += seen.prompt_tokens
            c.completion_tokens += completion_tokens
        out = {"id": _new_id("batch_req"), "custom_id": custom_id, "error": None,
               "response": {"status_code": status, "request_id": _new_id("req"), "body": payload}}
        return status == 200, orjson.dumps(out)

    def _finish(self, batch: dict, outputs: list[bytes], errors: list[bytes]) -> None:
        shuffle = random.Random(batch["id"])  # results come back in no particular order
        shuffle.shuffle(outputs)
        shuffle.shuffle(errors)
        if outputs:
            batch["output_file_id"] = self._store(b"\n".join(outputs) + b"\n", f"{batch['id']}_output.jsonl",
                                                  "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._store(b"\n".join(errors) + b"\n", f"{batch['id']}_error.jsonl",
                                                 "batch_output")["id"]
        now = int(time.time())
        if batch["status"] == "cancelling":
            batch["status"], batch["cancelled_at"] = "cancelled", now
        elif any(b'"batch_expired"' in line for line in errors):
            batch["status"], batch["expired_at"] = "expired", now
        else:
            batch["status"], batch["completed_at"] = "completed", now
        self.stats[f"batches_{batch['status']}"] += 1
