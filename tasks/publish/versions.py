"""Versioned dataset directories for incremental refreshes.

Layout under a dataset root:

    ROOT/versions/0001/      one refresh's output (data/, audit/, manifest.json, README.md)
    ROOT/versions/0001/seed_digests.parquet   the seeds this version consumed
    ROOT/versions/0001/version.json           written last: its presence means "complete"
    ROOT/latest -> versions/0001               moved atomically, only to a complete version
    ROOT/.cache/requests.sqlite                one teacher reply cache shared by every version
    ROOT/.index/near_dedup/                    signatures of published rows, for cross-version near-dedup

A version holds the rows that are new in it; the dataset as of version N is versions 1..N
(`version.json` lists them as `lineage`), which the training flow reads as several
dataset directories. A seed is identified by the digest of its language and text, so a
seed drawn again by a later run, from whatever file or index, is never sent again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from tasks.core.parquet_io import write_json_atomic, write_parquet_atomic
from tasks.seeds.exclusion import DIGEST_SCHEMA, seed_digests

VERSIONS_DIR = "versions"
LATEST_LINK = "latest"
VERSION_FILE = "version.json"
SEED_DIGESTS_FILE = "seed_digests.parquet"


class VersionStore:
    """The versions of one dataset root: which are complete, the next name, the latest pointer."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.versions = self.root / VERSIONS_DIR

    @property
    def cache_dir(self) -> Path:
        return self.root / ".cache"

    @property
    def near_dedup_index(self) -> Path:
        return self.root / ".index" / "near_dedup"

    def path(self, name: str) -> Path:
        return self.versions / name

    def complete(self) -> list[str]:
        """Names of complete versions, oldest first."""
        if not self.versions.is_dir():
            return []
        return sorted(p.name for p in self.versions.iterdir() if (p / VERSION_FILE).is_file())

    def next_name(self) -> str:
        """The next version's name. An unfinished directory (a crashed run) is reused, so the
        rerun resumes it from its shard and reply caches instead of starting over."""
        names = sorted(p.name for p in self.versions.iterdir() if p.is_dir()) if self.versions.is_dir() else []
        done = set(self.complete())
        for name in names:
            if name not in done and name.isdigit():
                return name
        numbers = [int(n) for n in names if n.isdigit()]
        return f"{max(numbers, default=0) + 1:04d}"

    def digest_files(self) -> list[str]:
        return [str(self.path(n) / SEED_DIGESTS_FILE) for n in self.complete()]

    def latest(self) -> str | None:
        link = self.root / LATEST_LINK
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def record_seeds(self, name: str, seeds: Iterable[pa.Table]) -> int:
        """Write the digests of the seeds a version consumed (that became rows or final drops)."""
        digests = [seed_digests(t) for t in seeds]
        array = pa.concat_arrays(digests) if digests else pa.array([], type=pa.binary(16))
        write_parquet_atomic(pa.Table.from_arrays([array], schema=DIGEST_SCHEMA), self.path(name) / SEED_DIGESTS_FILE)
        return len(array)

    def publish(self, name: str, manifest: dict, new_seeds: int) -> dict:
        """Mark a version complete (version.json, written last) and point `latest` at it."""
        previous = self.complete()
        lineage = [n for n in previous if n != name] + [name]
        record = {
            "version": name,
            "parent": previous[-1] if previous and previous[-1] != name else None,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "rows": manifest["rows"],
            "new_seeds": new_seeds,
            "config_fingerprint": manifest.get("config_fingerprint"),
            "lineage": [str(self.path(n).resolve()) for n in lineage],
            "rows_total": sum(_rows_of(self.path(n)) for n in lineage if n != name) + manifest["rows"],
        }
        write_json_atomic(record, self.path(name) / VERSION_FILE)
        self._point_latest(name)
        return record

    def discard(self, name: str) -> None:
        """Remove a version directory that publishes nothing (no new seeds)."""
        path = self.path(name)
        if path.is_dir() and not (path / VERSION_FILE).exists():
            shutil.rmtree(path)

    def _point_latest(self, name: str) -> None:
        # A new symlink under a temporary name, renamed over the old one: readers see the
        # old version or the new one, never a missing or half-written pointer.
        tmp = self.root / f".{LATEST_LINK}.tmp-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(Path(VERSIONS_DIR) / name, tmp)
        os.replace(tmp, self.root / LATEST_LINK)


def _rows_of(version_dir: Path) -> int:
    try:
        return int(json.loads((version_dir / VERSION_FILE).read_text())["rows"])
    except (OSError, ValueError, KeyError):
        return 0
