"""Checking a dataset version before a GPU is spent on it.

A dataset version is what the refresh flow publishes: DIR/manifest.json listing every
shard under DIR/data/ with its row count and sha256. Training refuses a version whose
manifest is missing, whose shards are missing or altered (checksum), whose row counts
disagree, or whose shards lack the instruction/response text columns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tasks.core.errors import UserError


class DatasetError(UserError):
    """A dataset version that is incomplete, altered or of the wrong shape."""


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_dataset(
    dataset_dir: str | os.PathLike,
    instruction_column: str = "problem",
    response_column: str = "solution",
    checksums: bool = True,
) -> dict:
    """Check one dataset version; return what training needs to record about it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dataset_dir = Path(dataset_dir)
    manifest_path = dataset_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DatasetError(f"{dataset_dir}: no manifest.json (not a published dataset version, or still being written)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{manifest_path}: not valid JSON ({exc})") from None
    files = manifest.get("files")
    if not files:
        raise DatasetError(f"{manifest_path}: lists no data files")

    rows = 0
    for entry in files:
        path = dataset_dir / entry["path"]
        if not path.is_file():
            raise DatasetError(f"{dataset_dir}: shard {entry['path']} listed in the manifest is missing")
        if checksums and entry.get("sha256") and _sha256(path) != entry["sha256"]:
            raise DatasetError(f"{dataset_dir}: shard {entry['path']} does not match its manifest checksum")
        metadata = pq.read_metadata(path)
        if "rows" in entry and metadata.num_rows != entry["rows"]:
            raise DatasetError(
                f"{dataset_dir}: shard {entry['path']} has {metadata.num_rows} rows, manifest says {entry['rows']}"
            )
        schema = metadata.schema.to_arrow_schema()
        for column in (instruction_column, response_column):
            if column not in schema.names:
                raise DatasetError(f"{dataset_dir}: shard {entry['path']} has no column {column!r}")
            if not pa.types.is_string(schema.field(column).type) and not pa.types.is_large_string(
                schema.field(column).type
            ):
                raise DatasetError(f"{dataset_dir}: column {column!r} is {schema.field(column).type}, not text")
        rows += metadata.num_rows
    if "rows" in manifest and manifest["rows"] != rows:
        raise DatasetError(f"{dataset_dir}: shards hold {rows} rows, manifest says {manifest['rows']}")
    if rows == 0:
        raise DatasetError(f"{dataset_dir}: the dataset is empty")
    return {
        "path": str(dataset_dir),
        "rows": rows,
        "files": len(files),
        "created_at": manifest.get("created_at"),
        "config_fingerprint": manifest.get("config_fingerprint") or manifest.get("fingerprint"),
        "manifest_sha256": _sha256(manifest_path),
    }


# --- what a dataset path stands for ------------------------------------------------------
VERSION_FILE = "version.json"  # written last by a versioned refresh (tasks/publish/versions.py)


def resolve_lineage(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """The dataset directories a path given to training stands for, oldest first, each with a label.

    A version of a versioned refresh holds only the rows new in it; the dataset as of that
    version is its whole lineage (version.json's `lineage`). So a dataset root (ROOT, with
    versions/ and `latest`), ROOT/latest or a version directory resolve to versions 1..N.
    Any other directory is itself."""
    p = Path(path)
    if (p / "versions").is_dir() and not (p / "manifest.json").exists():
        if not (p / "latest" / VERSION_FILE).is_file():
            raise DatasetError(f"dataset root {p}: no complete version yet (no latest/{VERSION_FILE})")
        p = p / "latest"
    record_path = p / VERSION_FILE
    if not record_path.is_file():
        return [(p.name, p)]
    try:
        lineage = json.loads(record_path.read_text())["lineage"]
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{record_path}: unreadable version record ({exc})") from None
    versions_dir = p.resolve().parent
    dirs = []
    for entry in lineage:
        d = Path(entry)
        if not d.is_dir():  # the root moved since publishing: the versions are still siblings
            d = versions_dir / d.name
        if not (d / VERSION_FILE).is_file():
            raise DatasetError(f"{path}: lineage version {d} is missing or incomplete")
        dirs.append((d.name, d))
    return dirs


def resolve_datasets(paths: list[str]) -> list[tuple[str, str]]:
    """Every path's lineage, in order, each directory once (a chained run already lists the lineage)."""
    seen: set[Path] = set()
    resolved = []
    for path in paths:
        for label, d in resolve_lineage(path):
            key = d.resolve()
            if key not in seen:
                seen.add(key)
                resolved.append((label, str(d)))
    return resolved
