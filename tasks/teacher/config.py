"""How to call the teacher: `TeacherConfig` and the price table its budget falls back on.

The config holds the *name* of where the API key is (an environment variable or a Prefect
Secret block), never the key itself: it travels as flow parameters and into manifests.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlparse

from pydantic import ConfigDict, Field, field_validator

from tasks.core.config import FingerprintedConfig, operational
from tasks.core.errors import UserError

# USD per million tokens (input, output), standard tier, from OpenAI's pricing page
# (https://platform.openai.com/docs/pricing, and the model pages under
# https://platform.openai.com/docs/models/<name>, which list each snapshot's price).
# A config's price_per_mtok_in/out (`--price-in/--price-out`), when set, wins. A model in
# neither has no known price: a cost budget for it is refused (TeacherConfig.check_priced).
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-3.5-turbo-1106": (1.00, 2.00),
    "gpt-3.5-turbo-0125": (0.50, 1.50),
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}

# Dated snapshots whose documented price is their family's (same pages as above). Only
# these: a date suffix alone proves nothing (gpt-4o-2024-05-13 costs $5/$15, not gpt-4o's
# $2.50/$10), so an unlisted snapshot has no known price rather than a guessed one.
DATED_SNAPSHOTS: dict[str, str] = {
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini",  # the snapshot gpt-4o-mini points to
    "gpt-4o-2024-08-06": "gpt-4o",
    "gpt-4o-2024-11-20": "gpt-4o",
    "gpt-4.1-2025-04-14": "gpt-4.1",
    "gpt-4.1-mini-2025-04-14": "gpt-4.1-mini",
}


def table_price(model: str) -> tuple[tuple[float, float], str] | None:
    """The built-in price of `model` and where it came from ("table:NAME" / "family:NAME"), or None."""
    if model in PRICES_PER_MTOK:
        return PRICES_PER_MTOK[model], f"table:{model}"
    family = DATED_SNAPSHOTS.get(model)
    if family is not None:
        return PRICES_PER_MTOK[family], f"family:{family}"
    return None


_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class TeacherConfig(FingerprintedConfig):
    """How to call the teacher. Holds the *name* of where the key is, never the key."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = operational(description="the OpenAI-compatible endpoint (where, not what: the model names the teacher)")
    model: str
    api_key_env: str = operational("OPENAI_API_KEY", description="environment variable holding the API key ('' for none)")
    api_key_secret_block: str | None = operational(None, description="Prefect Secret block holding the key (wins over env)")
    output_format: Literal["sections", "json", "sections_tests", "json_tests"] = "sections"
    json_response_format: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema", description="response_format sent in JSON mode (json_object: llama.cpp; none: not supported)"
    )
    temperature: float = 0.0
    top_p: float = 1.0
    seed_offset: int = Field(976, description="request seed = seed_offset + seed_index (the paper: 976 + index)")
    context_size: int = 8192
    max_tokens_cap: int = 2500
    concurrency: int = operational(256, ge=1, description="requests in flight at once, per process")
    rpm: int | None = operational(None, ge=1, description="requests per window (provider's RPM)")
    tpm: int | None = operational(None, ge=1, description="tokens per window: prompt + max_tokens, as providers count")
    rate_window_s: float = operational(60.0, gt=0, description="the providers' window; only tests shrink it")
    max_retries: int = operational(8, ge=0)
    retry_base_s: float = operational(0.5, ge=0, description="first backoff step; doubles per retry")
    retry_max_s: float = operational(60.0, ge=0, description="longest backoff step (Retry-After is honoured beyond it)")
    request_timeout_s: float = operational(600.0, gt=0)
    transport: Literal["aiohttp", "openai"] = operational("aiohttp")
    price_per_mtok_in: float | None = operational(None, ge=0, description="USD per 1M prompt tokens (default: built-in table)")
    price_per_mtok_out: float | None = operational(None, ge=0, description="USD per 1M completion tokens")
    max_cost_usd: float | None = operational(None, gt=0)
    max_total_tokens: int | None = operational(None, gt=0)
    cache_scope: str | None = operational(
        None, description="file cached replies under this name, not the endpoint URL: replicas serving one model share replies"
    )
    # ---- batch mode (tasks/teacher/batch_*.py): the same requests through the provider's Batch API.
    # Operational: a reply is the same whichever way it was bought (same request, same cache key).
    teacher_mode: Literal["live", "batch"] = operational(
        "live", description="live: chat completions now; batch: the Batch API (cheaper, results within its window)"
    )
    batch_fallback: Literal["live", "none"] = operational(
        "live", description="requests a batch could not answer after batch_retries new batches: send live, or drop counted"
    )
    batch_retries: int = operational(1, ge=0, description="new batches for requests that expired or failed in one")
    batch_discount: float = operational(
        0.5, ge=0, le=1, description="fraction off the live price for batch requests (OpenAI: 0.5)"
    )
    batch_max_requests: int = operational(50_000, ge=1, description="requests per batch (OpenAI's limit: 50,000)")
    batch_max_bytes: int = operational(
        200_000_000, ge=1024, description="bytes of JSONL input per batch (OpenAI's limit: 200 MB)"
    )
    batch_poll_s: float = operational(10.0, gt=0, description="first wait between polls of a batch; doubles each poll")
    batch_poll_max_s: float = operational(300.0, gt=0, description="longest wait between polls")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"teacher base URL must be http(s)://host[:port]/..., got {value!r}")
        return value.rstrip("/")

    def price_sources(self) -> dict:
        """Each price and where it came from: "flag" (config/CLI), "table:MODEL", "family:MODEL" or None (unknown)."""
        found = table_price(self.model)
        (table_in, table_out), table_source = found if found else ((None, None), None)
        price_in, source_in = (self.price_per_mtok_in, "flag") if self.price_per_mtok_in is not None else (table_in, table_source)
        price_out, source_out = (self.price_per_mtok_out, "flag") if self.price_per_mtok_out is not None else (table_out, table_source)
        if self.teacher_mode == "batch":
            # Every reply of a batch-mode run is priced as a batch reply (budget, stats, manifest);
            # the few sent live as a fallback are re-priced in the shard's stats (batch_run.py).
            factor = 1.0 - self.batch_discount
            price_in = None if price_in is None else price_in * factor
            price_out = None if price_out is None else price_out * factor
            mark = f"+batch_discount:{self.batch_discount:g}"
            source_in = None if source_in is None else source_in + mark
            source_out = None if source_out is None else source_out + mark
        return {"in": price_in, "out": price_out, "source_in": source_in, "source_out": source_out}

    def live_prices(self) -> tuple[float, float]:
        """USD per 1M tokens (in, out) at the live price, whatever the mode (0 when unknown)."""
        found = self.model_copy(update={"teacher_mode": "live"}).price_sources()
        return (found["in"] or 0.0, found["out"] or 0.0)

    def batch_prices(self) -> tuple[float, float]:
        """USD per 1M tokens (in, out) at the batch price, whatever the mode (0 when unknown)."""
        found = self.model_copy(update={"teacher_mode": "batch"}).price_sources()
        return (found["in"] or 0.0, found["out"] or 0.0)

    def prices(self) -> tuple[float, float]:
        """USD per 1M tokens (in, out); an unknown price counts 0 (check_priced refuses a cost budget then)."""
        found = self.price_sources()
        return (found["in"] or 0.0, found["out"] or 0.0)

    def check_priced(self) -> None:
        """A cost budget needs both prices: without one it could never fire, so refuse (UserError)."""
        if self.max_cost_usd is None:
            return
        found = self.price_sources()
        missing = [flag for flag, key in (("--price-in", "in"), ("--price-out", "out")) if found[key] is None]
        if missing:
            raise UserError(
                f"--max-cost needs the teacher's prices, and {self.model!r} has no known price: "
                f"give {' and '.join(missing)} (USD per 1M tokens)"
            )

    def is_loopback(self) -> bool:
        return (urlparse(self.base_url).hostname or "") in _LOOPBACK_HOSTS
