"""Chunks of texts computed in worker processes, in order, with a bounded read-ahead.

Signatures and shingle sets are CPU bound: a chunk of a few thousand texts goes to a worker
process as a list of str or an Arrow table (cheaper for the parent to send), and results
come back in chunk order, so a million documents stream through in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from itertools import chain

import numpy as np


def chunk_texts(chunk) -> list[str]:
    """A chunk is a sequence of str, or an Arrow table whose columns are joined per row by
    newlines (sending Arrow buffers to a worker is cheaper for the parent than Python str)."""
    if not hasattr(chunk, "column_names"):
        return list(chunk)
    from tasks.core.sources import joined_texts  # pyarrow only where Arrow chunks come

    return joined_texts(chunk, chunk.column_names)


def sendable_chunk(chunk):
    """A chunk as it is handed to a worker: a list of str, or an Arrow table that holds only
    its own rows. A sliced table pickles with its parent's whole buffers (a 2,000-row slice
    of a 10,000-row file sent 5x its bytes), so such a table is copied out with `take`."""
    if not hasattr(chunk, "column_names"):
        return list(chunk)
    if chunk.get_total_buffer_size() > 2 * chunk.nbytes:
        return chunk.take(np.arange(chunk.num_rows))
    return chunk


@contextmanager
def worker_pool(workers: int) -> Iterator[Executor | None]:
    """A process pool to share between phases (None for one worker: run in-process).

    "spawn", not fork: the caller may be a Prefect flow with threads running, and forking
    a threaded process is unsafe. (As with any spawn pool, a script that calls this at
    import time needs an `if __name__ == "__main__":` guard.)
    """
    if workers <= 1:
        yield None
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        yield pool


def map_chunks(fn, args: Iterable, workers: int = 1, pool: Executor | None = None) -> Iterator:
    """fn(arg) for each arg, in order, with a bounded read-ahead of 2 per worker.

    Uses `pool` if given; else starts `workers` processes, unless there is only one item
    (then starting processes would cost more than it saves).
    """
    args = iter(args)
    if pool is None:
        first = next(args, None)
        second = next(args, None) if first is not None else None
        head = [a for a in (first, second) if a is not None]
        if workers <= 1 or second is None:
            yield from map(fn, chain(head, args))
            return
        with worker_pool(workers) as own:
            yield from map_chunks(fn, chain(head, args), workers, own)
        return
    ahead = 2 * max(getattr(pool, "_max_workers", workers), 1)
    pending = []
    for arg in args:
        pending.append(pool.submit(fn, arg))
        if len(pending) >= ahead:
            yield pending.pop(0).result()
    for fut in pending:
        yield fut.result()
