"""Configs own their meaning: each field says whether it changes the output.

A field declared with `operational(...)` changes how fast or where a run goes (workers,
concurrency, cache paths, rate limits, prices); every other field changes what the run
produces. `content_fingerprint()` hashes only the latter, recursing into nested configs, so
adding a field to a config decides its place in the fingerprint where the field is defined.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, Field

_OPERATIONAL_KEY = "operational"


def operational(default: Any = ..., **kwargs) -> Any:
    """A pydantic `Field` that does not change the output (excluded from the fingerprint)."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[_OPERATIONAL_KEY] = True
    if "default_factory" in kwargs:
        return Field(json_schema_extra=extra, **kwargs)
    return Field(default, json_schema_extra=extra, **kwargs)


def is_operational(model: type[BaseModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(_OPERATIONAL_KEY))


class FingerprintedConfig(BaseModel):
    """Base of every config model whose output is fingerprinted."""

    @classmethod
    def operational_fields(cls) -> set[str]:
        return {name for name in cls.model_fields if is_operational(cls, name)}

    def output_fields(self) -> dict:
        """The JSON-ready fields that change the output, nested configs filtered the same way."""
        data = {}
        for name in type(self).model_fields:
            if is_operational(type(self), name):
                continue
            value = getattr(self, name)
            if isinstance(value, FingerprintedConfig):
                data[name] = value.output_fields()
            else:
                data[name] = self.model_dump(mode="json", include={name})[name]
        return data

    def content_fingerprint(self) -> str:
        """16 hex digits that change exactly when an output-changing field does."""
        return hashlib.sha256(json.dumps(self.output_fields(), sort_keys=True).encode()).hexdigest()[:16]
