"""The wire format between the host, the zygote and its workers: framed JSON, never pickle.

A frame is a 12-byte header (JSON length, blob length; big-endian), a JSON object, and an
optional opaque blob (the canonical outputs of an oracle job, which the host stores as
bytes and never loads). Whatever arrives from inside the sandbox is parsed against a fixed
shape here; anything else is a `ChannelError`, which the caller turns into a failed
result with a reason, never into a crash.

Standard library only: the zygote imports this module inside the sandbox.
"""

from __future__ import annotations

import json
import math
import struct

HEADER = struct.Struct(">IQ")
MAX_JSON_BYTES = 4 << 20  # a result is a verdict plus short excerpts, never megabytes
MAX_TEXT = 2000  # longest error detail / stderr excerpt kept
MAX_KIND = 64


class ChannelError(Exception):
    """Bytes from the sandbox that are not exactly one well-formed frame."""


def encode_frame(obj: dict, blob: bytes = b"") -> bytes:
    data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    return HEADER.pack(len(data), len(blob)) + data + blob


def decode_frame(data: bytes, max_blob: int = 0) -> tuple[dict, bytes]:
    """Exactly one frame and nothing after it (a second frame means a forged write)."""
    if len(data) < HEADER.size:
        raise ChannelError(f"truncated frame ({len(data)} bytes)")
    json_len, blob_len = HEADER.unpack_from(data)
    if json_len > MAX_JSON_BYTES or blob_len > max_blob:
        raise ChannelError(f"frame sizes out of bounds (json {json_len}, blob {blob_len})")
    end = HEADER.size + json_len + blob_len
    if len(data) != end:
        raise ChannelError(f"frame of {end} bytes but {len(data)} arrived")
    return parse_json_object(data[HEADER.size : HEADER.size + json_len]), data[HEADER.size + json_len : end]


def parse_json_object(raw: bytes) -> dict:
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ChannelError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ChannelError(f"expected an object, got {type(obj).__name__}")
    return obj


def _no_constants(name):
    raise ValueError(f"{name} is not allowed")


# --- the shape of a result ---------------------------------------------------------------


def _text(value, field: str, limit: int = MAX_TEXT, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ChannelError(f"{field}: expected a string, got {type(value).__name__}")
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _kind(value, field: str) -> str | None:
    text = _text(value, field, limit=10_000)
    if text is not None and (len(text) > MAX_KIND or not text.replace("_", "").isalnum()):
        raise ChannelError(f"{field}: not an error kind")
    return text


def _flag(value, field: str) -> bool:
    if not isinstance(value, bool):
        raise ChannelError(f"{field}: expected true/false, got {type(value).__name__}")
    return value


def _count(value, field: str, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ChannelError(f"{field}: expected a count")
    return value


def _seconds(value, field: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ChannelError(f"{field}: expected seconds")
    return float(value)


def _names(value, field: str) -> list[str]:
    if not isinstance(value, list) or len(value) > 64:
        raise ChannelError(f"{field}: expected a list of names")
    return [_kind(v, field) for v in value]


def _group(value, field: str) -> dict:
    if not isinstance(value, dict) or set(value) - {"passed", "error", "detail", "index"}:
        raise ChannelError(f"{field}: malformed group")
    return {
        "passed": _flag(value.get("passed"), f"{field}.passed"),
        "error": _kind(value.get("error"), f"{field}.error"),
        "detail": _text(value.get("detail"), f"{field}.detail"),
        "index": _count(value.get("index"), f"{field}.index"),
    }


def _groups(value, field: str) -> dict:
    if not isinstance(value, dict) or len(value) > 16:
        raise ChannelError(f"{field}: malformed groups")
    return {_kind(k, field): _group(v, f"{field}.{k}") for k, v in value.items()}


def _input_seconds(value, field: str) -> dict:
    if not isinstance(value, dict) or len(value) > 16:
        raise ChannelError(f"{field}: malformed timings")
    out = {}
    for k, v in value.items():
        if not isinstance(v, list):
            raise ChannelError(f"{field}.{k}: expected a list")
        out[_kind(k, field)] = [_seconds(s, f"{field}.{k}") for s in v]
    return out


def _exit_code(value, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -255 <= value <= 255:
        raise ChannelError(f"{field}: expected an exit status")
    return value


# field -> checker; a result may hold only these.
_RESULT_FIELDS = {
    "passed": _flag,
    "error": _kind,
    "detail": _text,
    "stderr": _text,
    "tests_run": _count,
    "guards": _names,
    "seconds": _seconds,
    "exit_code": _exit_code,
    "groups": _groups,
    "input_seconds": _input_seconds,
}


def checked_result(obj) -> dict:
    """A result dict with only known fields of the right types, or ChannelError."""
    if not isinstance(obj, dict):
        raise ChannelError(f"result: expected an object, got {type(obj).__name__}")
    unknown = set(obj) - set(_RESULT_FIELDS)
    if unknown:
        raise ChannelError(f"result: unknown fields {sorted(unknown)[:5]}")
    out = {name: check(obj[name], name) for name, check in _RESULT_FIELDS.items() if name in obj}
    out.setdefault("error", None)
    return out
