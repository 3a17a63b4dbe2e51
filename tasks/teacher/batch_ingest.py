"""Reading a finished batch: output and error files -> a reply or a failure reason per request.

Results come back in any order, so they are matched by `custom_id` (the request's cache
key). Every submitted request must be accounted for: one that appears in neither file is
`batch_missing_result`. A reply is classified exactly like a live HTTP reply
(`retry.classify_reply`), so a batch 429 or 500 is the same `http_429` / `http_500`, a 400
the same final `http_400...`. Line-level errors name the batch's fate: `batch_expired`
(the 24 h window ran out first), `batch_cancelled`, `batch_failed` (the batch as a whole).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import orjson

from tasks.teacher.retry import classify_reply
from tasks.teacher.transport import HttpReply

# Reasons worth a new batch (or a live send): the request itself was fine.
RETRYABLE_PREFIXES = ("batch_", "malformed_body", "http_429", "http_408", "http_409", "http_5")


def retryable(reason: str) -> bool:
    return reason.startswith(RETRYABLE_PREFIXES) and reason != "http_429_insufficient_quota"


@dataclass
class BatchResults:
    replies: dict[str, dict] = field(default_factory=dict)  # key -> chat.completion body
    failures: dict[str, str] = field(default_factory=dict)  # key -> reason
    unexpected: int = 0  # lines whose custom_id was not submitted in this batch (ignored, counted)


def _line_error_reason(error: dict) -> str:
    code = str(error.get("code") or error.get("type") or "error").lower()
    code = re.sub(r"[^a-z0-9_]+", "_", code).strip("_")
    return code if code.startswith("batch_") else f"batch_{code}"


def read_results(submitted: set[str], output: bytes, errors: bytes, batch_status: str) -> BatchResults:
    """Match both files' lines to the submitted keys; whatever is left gets a reason from the batch's status."""
    results = BatchResults()
    for raw in (*output.splitlines(), *errors.splitlines()):
        if not raw.strip():
            continue
        line = orjson.loads(raw)
        key = line.get("custom_id")
        if key not in submitted or key in results.replies:
            results.unexpected += key not in submitted
            continue
        if line.get("error"):
            results.failures.setdefault(key, _line_error_reason(line["error"]))
            continue
        response = line.get("response") or {}
        verdict = classify_reply(HttpReply(int(response.get("status_code") or 0), {}, orjson.dumps(response.get("body"))))
        if verdict.action == "ok":
            results.replies[key] = verdict.data
            results.failures.pop(key, None)
        else:
            results.failures.setdefault(key, verdict.reason)
    # A batch that failed, was cancelled or expired may list nothing for some requests.
    missing = "batch_missing_result" if batch_status == "completed" else f"batch_{batch_status}"
    for key in submitted:
        if key not in results.replies and key not in results.failures:
            results.failures[key] = missing
    return results
