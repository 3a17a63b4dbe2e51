"""The shard-cleaning worker process (see shard_prep.py): what runs inside it.

This module imports nothing heavy at load time: a spawned worker first lowers its own
priority, then imports the stages and builds the benchmark index, so even its start-up
yields to the event loop that keeps the teacher busy and to the seed sampler.
"""

from __future__ import annotations

import json
import os
import time

_SETTINGS = None  # PrepSettings, parsed once per worker
_DECONTAMINATOR = None  # one benchmark index per worker, built at start
_META_KEY = b"ossforge.shard_prep"


def init(settings_json: str) -> None:
    # Below the flow's process in priority: when cores are short, cleaning catches up in
    # the gaps instead of slowing the requests in flight.
    os.nice(5)
    from tasks.generation.shard_prep import PrepSettings

    global _SETTINGS, _DECONTAMINATOR
    _SETTINGS = PrepSettings.model_validate_json(settings_json)
    if _SETTINGS.decontamination is not None:
        from tasks.decontamination.decontaminate import Decontaminator

        _DECONTAMINATOR = Decontaminator(_SETTINGS.decontamination.model_copy(update={"workers": 1}))


def prepare_shard(pairs_path: str, out_path: str) -> dict:
    """Add the per-row columns to one shard's pairs; returns CPU seconds per stage."""
    import pyarrow.parquet as pq

    from tasks.core.parquet_io import file_sha256, write_parquet_atomic
    from tasks.decontamination.decontaminate import CONTAMINATION
    from tasks.dedup.exact import PAIR_DIGEST, pair_digests
    from tasks.dedup.near import MINHASH, SHINGLES, shingle_set_column, signature_column

    settings = _SETTINGS
    pairs_sha = file_sha256(pairs_path)
    index = {**_index_figures(), **_lsh_params()}
    made_from = {"pairs_sha256": pairs_sha, "settings": settings.fingerprint()}
    if _made_from(out_path) == made_from:
        return {"reused": True, **index}
    table = pq.read_table(pairs_path)
    cpu: dict[str, float] = {}

    def add_column(stage: str, name: str, make) -> None:
        nonlocal table
        start = time.process_time()
        table = table.append_column(name, make(table))
        cpu[stage] = round(cpu.get(stage, 0.0) + time.process_time() - start, 3)

    add_column("exact_dedup", PAIR_DIGEST, pair_digests)
    if settings.near_dedup is not None:
        add_column("near_dedup", MINHASH, lambda t: signature_column(t, settings.near_dedup))
        if settings.near_dedup.verify_jaccard:  # the sets the exact-Jaccard check reads at the end
            add_column("near_dedup", SHINGLES, lambda t: shingle_set_column(t, settings.near_dedup))
    if _DECONTAMINATOR is not None:
        add_column("decontaminate", CONTAMINATION, _DECONTAMINATOR.contamination_column)
    write_parquet_atomic(table.replace_schema_metadata({_META_KEY: json.dumps(made_from).encode()}), out_path)
    return {"reused": False, "cpu_seconds": cpu, "rows": table.num_rows, **index}


def _lsh_params() -> dict:
    # The near-dedup LSH banding for the end stage, which then need not import datasketch.
    if _SETTINGS.near_dedup is None:
        return {}
    from tasks.dedup.lsh_index import lsh_params

    return {"near_dedup_lsh": list(lsh_params(_SETTINGS.near_dedup.threshold, _SETTINGS.near_dedup.num_perm))}


def _made_from(out_path: str) -> dict | None:
    """What an existing prepared shard was made from (None when there is none to reuse)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return json.loads((pq.read_schema(out_path).metadata or {}).get(_META_KEY, b"null"))
    except (OSError, pa.ArrowInvalid, ValueError):
        return None


def _index_figures() -> dict:
    # What the benchmark index checks (matchers, benchmarks loaded and missing), for the
    # decontamination stage's report: the flow's process never builds an index of its own.
    if _DECONTAMINATOR is None:
        return {}
    return {"decontamination_index": _DECONTAMINATOR.index_figures()}
