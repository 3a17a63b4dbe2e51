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
_VALIDATOR = None  # warm sandboxes per worker, started at start
_META_KEY = b"ossforge.shard_prep"


def init(settings_json: str) -> None:
    # Below the flow's process in priority: when cores are short, cleaning catches up in
    # the gaps instead of slowing the requests in flight.
    os.nice(5)
    from tasks.generation.shard_prep import PrepSettings

    global _SETTINGS, _DECONTAMINATOR, _VALIDATOR
    _SETTINGS = PrepSettings.model_validate_json(settings_json)
    if _SETTINGS.validation is not None:
        from tasks.validation.validate import Validator

        _VALIDATOR = Validator(_SETTINGS.validation)
        _VALIDATOR.sandbox  # start the zygotes now, while the first shards are with the teacher
    if _SETTINGS.decontamination is not None:
        from tasks.decontamination.decontaminate import Decontaminator

        _DECONTAMINATOR = Decontaminator(_SETTINGS.decontamination.model_copy(update={"workers": 1}))


def prepare_shard(pairs_path: str, out_path: str) -> dict:
    """Validate one shard's pairs (when on) and add the per-row columns to those that pass;
    returns the counts and CPU seconds per stage. A shard prepared before from the same
    pairs and settings is reused, with the counts it recorded."""
    import pyarrow.parquet as pq

    from tasks.core.parquet_io import file_sha256, write_parquet_atomic
    from tasks.decontamination.decontaminate import CONTAMINATION
    from tasks.dedup.exact import PAIR_DIGEST, pair_digests
    from tasks.dedup.near import MINHASH, SHINGLES, shingle_set_column, signature_column

    settings = _SETTINGS
    index = {**_index_figures(), **_lsh_params()}
    made_from = {"pairs_sha256": file_sha256(pairs_path), "settings": settings.fingerprint()}
    earlier = _recorded(out_path)
    audit_kept = _VALIDATOR is None or os.path.exists(validation_audit_path(out_path))
    if earlier is not None and earlier.get("made_from") == made_from and audit_kept:
        return {**earlier["result"], "reused": True, **index}
    table = pq.read_table(pairs_path)
    cpu: dict[str, float] = {}
    result: dict = {}
    if _VALIDATOR is not None:
        start = time.process_time()
        table, result["validate"] = _validate(table, validation_audit_path(out_path))
        cpu["validate"] = round(time.process_time() - start, 3)  # this process only; the sandboxes' time is their own

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
    result.update(cpu_seconds=cpu, rows=table.num_rows)
    record = json.dumps({"made_from": made_from, "result": result}).encode()
    write_parquet_atomic(table.replace_schema_metadata({_META_KEY: record}), out_path)
    return {**result, "reused": False, **index}


def validation_audit_path(prepared_path: str) -> str:
    return prepared_path.removesuffix(".parquet") + ".validate-audit.parquet"


def _validate(table, audit_path: str):
    """The validation step on one shard: (kept rows, the shard's counts). The audit of the
    rows it dropped is written beside the prepared shard for the flow to collect."""
    from tasks.core.parquet_io import write_parquet_atomic
    from tasks.core.stats import StageStats
    from tasks.core.step import run_step
    from tasks.validation.validate import STAGE, validation_summary

    _VALIDATOR.by_language.clear()  # counts per shard; the flow adds them up
    stats = StageStats(STAGE)
    out = run_step(_VALIDATOR, table, stats)
    write_parquet_atomic(out.audit, audit_path)
    stats.extra.update(validation_summary(_VALIDATOR))
    return out.kept, stats.as_dict()


def _lsh_params() -> dict:
    # The near-dedup LSH banding for the end stage, which then need not import datasketch.
    if _SETTINGS.near_dedup is None:
        return {}
    from tasks.dedup.lsh_index import lsh_params

    return {"near_dedup_lsh": list(lsh_params(_SETTINGS.near_dedup.threshold, _SETTINGS.near_dedup.num_perm))}


def _recorded(out_path: str) -> dict | None:
    """What an existing prepared shard was made from and the counts it gave (None when
    there is none to reuse)."""
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
