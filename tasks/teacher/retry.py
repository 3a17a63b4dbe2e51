"""What to do with one HTTP outcome: use it, retry it, fail the item, or stop the run.

- 200 with a well-formed body: use it.
- 429 (Retry-After / retry-after-ms honoured), 408, 409, 5xx, timeouts, connection resets
  and malformed 200 bodies: transient, retry with exponential backoff and jitter.
- 400 (context length or otherwise), 403, 404, 413, 422 and other 4xx: the same request
  would fail again; the item fails now, with the reason recorded.
- 401, and 429 `insufficient_quota`: nothing will succeed until a person acts; stop the run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal, Mapping

import orjson

from tasks.teacher.transport import HttpReply

Action = Literal["ok", "retry", "fail", "auth", "quota"]

_CONTEXT_HINTS = ("context_length", "context length", "maximum context", "context size", "too many tokens")


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str = ""  # "http_429", "timeout", "http_404", ... (names the manifest shows)
    retry_after_s: float | None = None
    data: dict | None = None  # the parsed body, for "ok"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait: retry-after-ms (OpenAI), else Retry-After (seconds or a date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import datetime, timezone

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def _error_fields(body: bytes) -> tuple[str, str]:
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return "", body[:500].decode("utf-8", "replace")
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or ""), str(error.get("message") or "")
    return "", str(error or "")


def classify_reply(reply: HttpReply) -> Verdict:
    status = reply.status
    if 200 <= status < 300:
        try:
            data = orjson.loads(reply.body)
            choice = data["choices"][0]
            choice["message"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            return Verdict("retry", "malformed_body")
        return Verdict("ok", data=data)
    if status == 401:
        return Verdict("auth", "http_401")
    if status == 429:
        code, _ = _error_fields(reply.body)
        if code == "insufficient_quota":
            return Verdict("quota", "http_429_insufficient_quota")
        return Verdict("retry", "http_429", retry_after_s=retry_after_seconds(reply.headers))
    if status in (408, 409) or status >= 500:
        return Verdict("retry", f"http_{status}", retry_after_s=retry_after_seconds(reply.headers))
    if status == 400:
        code, message = _error_fields(reply.body)
        text = f"{code} {message}".lower()
        if any(hint in text for hint in _CONTEXT_HINTS):
            return Verdict("fail", "http_400_context_length")
        return Verdict("fail", "http_400")
    return Verdict("fail", f"http_{status}")


def backoff_delay(attempt: int, base_s: float, cap_s: float, retry_after_s: float | None = None) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts from 1).

    With a server-given wait: that, plus up to 10% jitter so a crowd of retries spreads
    out. Otherwise exponential with "equal jitter": half the step fixed, half random.
    """
    if retry_after_s is not None:
        return retry_after_s * random.uniform(1.0, 1.1)  # honoured even above cap_s: the server knows
    step = min(cap_s, base_s * (2 ** (attempt - 1)))
    return step / 2 + random.uniform(0, step / 2)
