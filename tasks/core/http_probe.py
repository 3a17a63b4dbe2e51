"""One question asked of local servers before we rely on them: does this URL answer 200?"""

from __future__ import annotations

import urllib.request


def answers_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except Exception:  # refused, timed out, not HTTP: all mean "not serving"
        return False
