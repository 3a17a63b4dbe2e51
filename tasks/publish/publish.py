"""Publishing a dataset directory: shards under data/, audits under audit/, manifest.json.

Used by the refresh flow and by the standalone dedup / decontaminate commands, so every
dataset ossforge writes has the same layout.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa

from tasks.core.version import VERSION as __version__
from tasks.core.parquet_io import file_sha256, write_json_atomic, write_parquet_atomic, write_shards


def publish_dataset(
    out_dir: str | os.PathLike,
    tables: Iterable[pa.Table],
    shard_size: int,
    manifest: dict | Callable[[], dict],
    audits: dict[str, pa.Table] | Callable[[], dict[str, pa.Table]] | None = None,
    schema: pa.Schema | None = None,
) -> dict:
    """Write shards, audit files and the manifest (last, so its presence means complete).

    `manifest` and `audits` may be functions, called once the shards are written: a step
    that runs while its kept rows stream into the shards knows its counts and its audit
    only when the last row has gone through.
    """
    out_dir = Path(out_dir)
    files = write_shards(tables, out_dir / "data", shard_size, schema=schema)
    audits = audits() if callable(audits) else audits
    manifest = manifest() if callable(manifest) else manifest
    audit_files = []
    for stage, table in (audits or {}).items():
        path = write_parquet_atomic(table, out_dir / "audit" / f"{stage}.parquet")
        audit_files.append(
            {"path": str(path.relative_to(out_dir)), "rows": table.num_rows, "sha256": file_sha256(path)}
        )
    manifest = {
        "ossforge_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        **manifest,
        "rows": sum(f["rows"] for f in files),
        "files": files,
        "audit_files": audit_files,
    }
    write_json_atomic(manifest, out_dir / "manifest.json")
    return manifest
