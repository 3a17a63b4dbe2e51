"""Publishing a dataset directory: shards under data/, audits under audit/, manifest.json.

Used by the refresh flow and by the standalone dedup / decontaminate commands, so every
dataset ossforge writes has the same layout.

Rewriting a dataset in place must never show a reader a mix of two versions (a manifest
naming files that are gone, or old and new shards side by side under data/). So each
publish writes a complete *generation* into a fresh directory, and one symlink swap
(rename over `current`) makes it the dataset; the old generation is deleted only after:

    OUT/.published/<generation>/{data/, audit/, manifest.json, README.md}
    OUT/current -> .published/<generation>        the one pointer, swapped atomically
    OUT/data -> current/data, OUT/audit -> current/audit,
    OUT/manifest.json -> current/manifest.json, OUT/README.md -> current/README.md

Readers keep reading OUT/manifest.json and OUT/data/*.parquet as before. A crash (kill -9)
at any point leaves the old complete dataset or the new one; a leftover generation is
removed by the next publish. A directory written by an older ossforge (real data/ and
manifest.json) is converted once: its manifest goes first, so a crash during the
conversion leaves "no manifest" (incomplete, rerun) rather than a mix.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa

from tasks.core.version import VERSION as __version__
from tasks.core.parquet_io import file_sha256, write_json_atomic, write_parquet_atomic, write_shards, write_text_atomic

GENERATIONS = ".published"
CURRENT = "current"
ENTRIES = ("data", "audit", "manifest.json", "README.md")  # what OUT/ shows of the current generation


def publish_dataset(
    out_dir: str | os.PathLike,
    tables: Iterable[pa.Table],
    shard_size: int,
    manifest: dict | Callable[[], dict],
    audits: dict[str, pa.Table] | Callable[[], dict[str, pa.Table]] | None = None,
    schema: pa.Schema | None = None,
    card: Callable[[dict], str] | None = None,
) -> dict:
    """Write shards, audit files, the manifest and the card (`card(manifest)`) as a new
    generation, then make it the dataset in one atomic swap.

    `manifest` and `audits` may be functions, called once the shards are written: a step
    that runs while its kept rows stream into the shards knows its counts and its audit
    only when the last row has gone through.
    """
    out_dir = Path(out_dir)
    generation = out_dir / GENERATIONS / f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    files = write_shards(tables, generation / "data", shard_size, schema=schema)
    audits = audits() if callable(audits) else audits
    manifest = manifest() if callable(manifest) else manifest
    audit_files = []
    for stage, table in (audits or {}).items():
        path = write_parquet_atomic(table, generation / "audit" / f"{stage}.parquet")
        audit_files.append(
            {"path": str(path.relative_to(generation)), "rows": table.num_rows, "sha256": file_sha256(path)}
        )
    manifest = {
        "ossforge_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        **manifest,
        "rows": sum(f["rows"] for f in files),
        "files": files,
        "audit_files": audit_files,
    }
    write_json_atomic(manifest, generation / "manifest.json")
    if card is not None:
        write_text_atomic(card(manifest), generation / "README.md")
    _sync_tree(generation)  # the new generation is on disk before anything points at it
    switch_to(out_dir, generation)
    remove_old_generations(out_dir)
    return manifest


def switch_to(out_dir: Path, generation: Path) -> None:
    """Make `generation` the dataset: OUT/current is renamed over in one step."""
    _convert_legacy(out_dir)
    for entry in ENTRIES:
        link = out_dir / entry
        if not link.is_symlink():
            os.symlink(Path(CURRENT) / entry, link)
    tmp = out_dir / f".{CURRENT}.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(generation.relative_to(out_dir), tmp)
    os.replace(tmp, out_dir / CURRENT)  # the swap: readers now resolve every entry to the new generation
    _fsync_dir(out_dir)


def remove_old_generations(out_dir: Path) -> None:
    """Delete every generation but the current one (after the swap: nobody is pointed at them)."""
    current = Path(os.readlink(out_dir / CURRENT)).name
    for old in (out_dir / GENERATIONS).iterdir():
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def _convert_legacy(out_dir: Path) -> None:
    """Move a directory published before generations (real data/, manifest.json) aside, manifest first."""
    real = [entry for entry in ENTRIES if (out_dir / entry).exists() and not (out_dir / entry).is_symlink()]
    if not real:
        return
    legacy = out_dir / GENERATIONS / f"legacy-{uuid.uuid4().hex[:8]}"
    legacy.mkdir(parents=True)
    for entry in sorted(real, key=lambda e: e != "manifest.json"):  # no manifest, then no files: never a mix
        os.replace(out_dir / entry, legacy / entry)


def _sync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        else:
            _fsync_dir(path)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
