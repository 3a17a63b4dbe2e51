"""Submitting batches so that no request is ever submitted twice, whatever kills the process.

The order is the ledger's (batch_ledger.py): plan (committed) -> upload the input file ->
file id (committed) -> look for a batch already made from that file -> create -> batch id
(committed at once). `attach` takes a ledger entry from any of those points to a submitted
batch, or drops a plan that never reached the provider so its requests are planned again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tasks.teacher.batch_api import BatchApi
from tasks.teacher.batch_ledger import BatchLedger, LedgerBatch
from tasks.teacher.batch_requests import BatchLine, plan_id, write_input_file

log = logging.getLogger("ossforge.teacher.batch")


async def submit(api: BatchApi, ledger: BatchLedger, chunk: list[BatchLine], round_no: int, input_dir: Path) -> LedgerBatch:
    """Plan, upload and create one batch of `chunk`; returns its ledger entry with the batch id."""
    keys = [item.key for item in chunk]
    local_id = plan_id(keys, round_no)
    path = write_input_file(input_dir / f"{local_id}.jsonl", chunk)
    ledger.plan(local_id, round_no, str(path), keys)  # committed before anything leaves this machine
    file_id = await api.upload(path)
    ledger.uploaded(local_id, file_id)
    batch = await api.create(file_id, local_id)
    ledger.submitted(local_id, batch.id)
    log.info("batch %s created: %d requests, %d bytes (round %d)", batch.id, len(chunk), path.stat().st_size, round_no)
    return LedgerBatch(local_id, round_no, str(path), file_id, batch.id, "submitted", len(chunk))


async def attach(api: BatchApi, ledger: BatchLedger, entry: LedgerBatch) -> LedgerBatch | None:
    """The submitted batch behind an unfinished ledger entry, or None when none was ever made.

    submitted: re-attach. uploaded: the provider may have created the batch before the
    process died -- find it by input file (or the plan id in its metadata); create it only
    if it is not there. planned: the file never reached the provider; drop the plan."""
    if entry.batch_id:
        return entry
    if entry.input_file_id:
        found = await api.find_created(entry.input_file_id, entry.local_id)
        if found is None:
            found = await api.create(entry.input_file_id, entry.local_id)
        if found is not None:
            ledger.submitted(entry.local_id, found.id)
            log.info("batch %s re-attached after an interrupted submission", found.id)
            return LedgerBatch(entry.local_id, entry.round, entry.input_path, entry.input_file_id, found.id,
                               "submitted", entry.requests)
    ledger.drop_plan(entry.local_id)
    return None
