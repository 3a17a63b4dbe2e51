"""The teacher's API key: where it comes from, and the one-line errors when it is missing or refused.

The key is read from a Prefect Secret block or an environment variable when a session or a
preflight opens, and handed straight to the HTTP client. No message here names the key,
only where it was looked for.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from tasks.core.errors import UserError
from tasks.teacher.config import TeacherConfig


class TeacherAuthError(UserError):
    """The teacher refused the credentials (HTTP 401): nothing will succeed, stop the run."""


def key_source(cfg: TeacherConfig) -> str:
    """Where the key was looked for, for messages (never the key itself)."""
    if cfg.api_key_secret_block:
        return f"Prefect Secret block {cfg.api_key_secret_block!r}"
    return f"${cfg.api_key_env}" if cfg.api_key_env else "no API key"


def auth_error(cfg: TeacherConfig) -> TeacherAuthError:
    return TeacherAuthError(f"the teacher at {cfg.base_url} rejected the API key from {key_source(cfg)} (HTTP 401)")


def _check_key(cfg: TeacherConfig, key: str | None) -> str | None:
    if key or not cfg.api_key_env or cfg.is_loopback():
        return key or None
    raise UserError(
        f"no API key for the teacher at {cfg.base_url}: set ${cfg.api_key_env} "
        "(or --teacher-api-key-env NAME, or a Prefect Secret block)"
    )


@contextmanager
def _secret_block_errors(cfg: TeacherConfig) -> Iterator[None]:
    # Prefect's own errors may quote the block's contents: say only which block failed.
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot load Prefect Secret block {cfg.api_key_secret_block!r} ({type(exc).__name__})") from None


def resolve_api_key(cfg: TeacherConfig) -> str | None:
    """The key from the Secret block or the environment; None for keyless loopback servers."""
    if cfg.api_key_secret_block:
        with _secret_block_errors(cfg):
            from prefect.blocks.system import Secret

            return _check_key(cfg, Secret.load(cfg.api_key_secret_block).get())
    return _check_key(cfg, os.environ.get(cfg.api_key_env) if cfg.api_key_env else None)


async def aresolve_api_key(cfg: TeacherConfig) -> str | None:
    """`resolve_api_key` for code already on an event loop (Prefect's async block loader)."""
    if cfg.api_key_secret_block:
        with _secret_block_errors(cfg):
            from prefect.blocks.system import Secret

            return _check_key(cfg, (await Secret.aload(cfg.api_key_secret_block)).get())
    return resolve_api_key(cfg)
