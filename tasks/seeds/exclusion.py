"""Seed exclusion: seeds that earlier dataset versions consumed are not sent again.

A seed is identified by the digest of its language and text, so a seed drawn again by a
later run, from whatever file or index, is recognised. Each version records the digests
of the seeds it consumed (tasks/publish/versions.py); an incremental refresh drops those
seeds with a reason before any teacher request.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.core.step import StepOutput, audit_rows, empty_audit

DIGEST_SCHEMA = pa.schema([pa.field("seed_digest", pa.binary(16), nullable=False)])


def seed_digest(lang: str, seed: str) -> bytes:
    return hashlib.blake2b(f"{lang}\x00{seed}".encode("utf-8"), digest_size=16).digest()


def seed_digests(table: pa.Table) -> pa.Array:
    """The digest of every seed row of a SEED_SCHEMA table, as a binary(16) array."""
    digests = [seed_digest(lang, seed) for lang, seed in zip(table["lang"].to_pylist(), table["seed"].to_pylist())]
    return pa.array(digests, type=pa.binary(16))


def load_digests(paths: Iterable[str | os.PathLike]) -> pa.Array:
    """The union of digest files (Arrow hashes them once when used as an `is_in` value set)."""
    parts = [pq.read_table(p, schema=DIGEST_SCHEMA)["seed_digest"].combine_chunks() for p in paths]
    return pa.concat_arrays(parts) if parts else pa.array([], type=pa.binary(16))


class SeedExcluder:
    """The step (tasks/core/step.py) that drops seeds already consumed by earlier versions."""

    stage = "seeds"  # its drops are the seeds stage's: they never reach the teacher
    REASON = "generated_in_earlier_version"

    def __init__(self, digest_files: Iterable[str | os.PathLike]):
        self.known = load_digests(digest_files)

    def apply(self, table: pa.Table) -> StepOutput:
        if len(self.known) == 0 or table.num_rows == 0:
            return StepOutput(table, empty_audit())
        seen = pc.is_in(seed_digests(table), value_set=self.known)
        return StepOutput(table.filter(pc.invert(seen)), audit_rows(table, seen, self.stage, self.REASON))
