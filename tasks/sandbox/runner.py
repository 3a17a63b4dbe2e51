"""Running untrusted generated code: one fresh process per sample, many at once.

Each job runs in `python -c <tasks/sandbox/child.py>` started in its own session (process
group), in a new temporary directory that is deleted afterwards, with a minimal
environment and a wall-clock timeout. Inside, the child sets resource limits (address
space, data, CPU seconds, file size, no new processes), moves into an empty network
namespace where the kernel allows it, installs a seccomp filter (no fork/exec, no
non-Unix sockets, no signals to other processes) and switches off destructive Python
functions before it runs the code. See tasks/sandbox/child.py for the layers.

Whatever a sample does — hang, fork, exhaust memory, exit, kill itself — the parent gets
a result dict back with an error kind; it never raises for the sample's sake, and it
kills the sample's whole process group before returning.

Only the standard library is imported here so the module is cheap to import anywhere.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CHILD_SOURCE_PATH = Path(__file__).with_name("child.py")
ALL_GUARDS = ("rlimits", "netns", "seccomp", "reliability_guard")


@dataclass(frozen=True)
class SandboxLimits:
    """Per-sample limits. The defaults follow EvalPlus (4 GiB of memory)."""

    memory_bytes: int = 4 << 30  # RLIMIT_AS and RLIMIT_DATA
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: largest file a sample may write
    startup_seconds: float = 10.0  # wall-clock allowance for interpreter start on a busy machine

    def as_child_limits(self, timeout: float) -> dict:
        return {
            "memory_bytes": int(self.memory_bytes),
            "file_bytes": int(self.file_bytes),
            # CPU seconds back up the wall clock for a process that ignores SIGALRM.
            "cpu_seconds": int(timeout + self.startup_seconds) + 1,
        }


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


_child_source: str | None = None


def _child_command() -> list[str]:
    global _child_source
    if _child_source is None:
        _child_source = CHILD_SOURCE_PATH.read_text()
    # -S: skip `site` (half of the start-up time here, mostly .pth files such as editable
    # installs); the child puts site-packages on sys.path itself. -B: no .pyc writes. Not
    # -I/-E: PYTHONHASHSEED must reach the child (set iteration order must match between
    # the canonical run and the sample's run).
    return [sys.executable, "-S", "-B", "-c", _child_source]


def _site_packages() -> list[str]:
    """This interpreter's site-packages, so samples can import what the evaluator has (numpy...)."""
    import site

    paths = site.getsitepackages() if hasattr(site, "getsitepackages") else []
    return [p for p in paths if os.path.isdir(p)]


def _child_env(workdir: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = "1"  # one sample, one core
    return env


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def run_sandboxed(
    job: dict,
    timeout: float,
    limits: SandboxLimits = SandboxLimits(),
    tmp_root: str | os.PathLike | None = None,
) -> dict:
    """Run one job (see sandbox_child for its fields) and return the child's result dict.

    The result always has "error" (None or a kind) and "seconds"; the parent adds kinds of
    its own: "timeout" (wall clock), "killed" (by a signal, e.g. SIGKILL from RLIMIT_CPU or
    the sample killing itself), "no_result" (exited without answering).
    """
    job = {**job, "limits": limits.as_child_limits(timeout), "site_packages": _site_packages()}
    job.setdefault("guards", ALL_GUARDS)
    payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    workdir = tempfile.mkdtemp(prefix="ossforge-sandbox-", dir=tmp_root)
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            _child_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            env=_child_env(workdir),
            start_new_session=True,  # its own process group, so one killpg reaches every descendant
            close_fds=True,
        )
        out, timed_out = _exchange(proc, payload, timeout + limits.startup_seconds)
        if timed_out:
            return {"error": "timeout", "detail": "wall-clock limit exceeded", "passed": False,
                    "seconds": time.perf_counter() - start}  # fmt: skip
        seconds = time.perf_counter() - start
        if proc.returncode < 0:
            return {"error": "killed", "detail": f"killed by {_signal_name(proc.returncode)}", "passed": False,
                    "seconds": seconds}  # fmt: skip
        try:
            result = pickle.loads(out)
        except Exception:
            return {"error": "no_result", "detail": f"exited with code {proc.returncode} without a result",
                    "passed": False, "seconds": seconds}  # fmt: skip
        result.setdefault("error", None)
        result["seconds"] = seconds
        return result
    finally:
        _remove_tree(workdir)


def _exchange(proc: subprocess.Popen, payload: bytes, timeout: float) -> tuple[bytes, bool]:
    """Send the job, collect the result, and kill the process group once the child is done.

    Not `communicate()`: that waits for EOF on stdout, which a leftover grandchild holding
    the pipe would delay until the timeout. Here the end of the child itself is what counts.
    """
    chunks: list[bytes] = []

    def send():
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except (BrokenPipeError, OSError):  # the child died before reading its job
            pass

    def receive():
        for block in iter(lambda: proc.stdout.read(1 << 20), b""):
            chunks.append(block)

    threads = [threading.Thread(target=send, daemon=True), threading.Thread(target=receive, daemon=True)]
    for t in threads:
        t.start()
    try:
        proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill_group(proc.pid)  # the sample's leftovers, or the sample itself on timeout
    proc.wait()
    for t in threads:
        t.join(timeout=10)
    proc.stdout.close()
    return b"".join(chunks), timed_out


def _remove_tree(path: str) -> None:
    # A sample may have made its files read-only; make them writable before deleting.
    def make_writable_and_retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def run_many(
    jobs: list[tuple[dict, float]],
    workers: int | None = None,
    limits: SandboxLimits = SandboxLimits(),
    tmp_root: str | os.PathLike | None = None,
) -> list[dict]:
    """Run (job, timeout) pairs, `workers` processes at a time; results in input order.

    Threads only wait on child processes here, so a thread pool is enough to keep every
    core busy with sandboxes.
    """
    workers = workers or default_workers()
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="sandbox") as pool:
        futures = [pool.submit(run_sandboxed, job, timeout, limits, tmp_root) for job, timeout in jobs]
        return [f.result() for f in futures]


def probe_guards(limits: SandboxLimits = SandboxLimits()) -> list[str]:
    """Which protection layers this machine grants a sandbox (reported with every evaluation)."""
    result = run_sandboxed({"mode": "check", "code": "pass", "seconds": 5.0}, 5.0, limits)
    return list(result.get("guards", []))
