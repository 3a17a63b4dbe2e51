"""What benchmarks read off running processes: resident memory of a process tree, and stopping
the servers a benchmark started. Shared by the benchmarks that start processes."""

from __future__ import annotations

import subprocess
import threading


def rss_kb(pid: int) -> int:
    """Resident set size of one live process (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    out, todo = [], _children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


class TreeRss(threading.Thread):
    """Peak RSS of one process and of it + its descendants, sampled every `interval_s`.

    (ru_maxrss of a spawned worker is useless here: Linux keeps the parent's RSS at fork
    time across exec, so every worker would "peak" at the parent's size.)
    """

    def __init__(self, pid: int, interval_s: float = 0.1, tree_key: str = "tree_mb"):
        super().__init__(daemon=True)
        self.pid, self.interval_s, self.tree_key = pid, interval_s, tree_key
        self.main_kb = self.tree_kb = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(self.interval_s):
            main = rss_kb(self.pid)
            self.main_kb = max(self.main_kb, main)
            self.tree_kb = max(self.tree_kb, main + sum(rss_kb(p) for p in descendants(self.pid)))

    def stop(self) -> dict:
        self.done.set()
        self.join()
        return {"main_mb": round(self.main_kb / 1024, 1), self.tree_key: round(self.tree_kb / 1024, 1)}


def stop_processes(procs: list[subprocess.Popen], timeout_s: float = 20) -> None:
    """Terminate what a benchmark started; kill what does not stop in time."""
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
