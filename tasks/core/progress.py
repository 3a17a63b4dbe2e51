"""A tiny in-process progress channel: steps report, whoever listens (the CLI's bar) shows it.

Steps never import rich or know whether a terminal is attached; with no listener,
reporting costs one attribute lookup.
"""

from __future__ import annotations

from collections.abc import Callable

_listeners: list[Callable[[str, int, int | None], None]] = []


def listen(callback: Callable[[str, int, int | None], None]) -> None:
    _listeners.append(callback)


def clear() -> None:
    _listeners.clear()


def report(what: str, advance: int = 1, total: int | None = None) -> None:
    """`what` names a counter (e.g. "requests"); `total` (re)declares its size."""
    for callback in _listeners:
        callback(what, advance, total)
