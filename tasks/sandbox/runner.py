"""Running untrusted generated code: warm sandboxed zygotes, one job at a time each, many at once.

A `Sandbox` keeps `workers` zygotes (tasks/sandbox/zygote.py), each inside its own
bubblewrap (tasks/sandbox/isolation.py). A job goes to a free zygote as a pickle (host to
sandbox only); the zygote forks a worker for it, which locks itself down further
(tasks/sandbox/child.py: rlimits, seccomp, Python-level guards) and runs the code. The
verdict comes back as a JSON frame (tasks/sandbox/channel.py), checked field by field here.

Whatever a sample does — hang, fork, exhaust memory, exit, kill itself, forge a result,
write garbage — the caller gets a result dict with an error kind; nothing here raises for
the sample's sake. A zygote that stops making sense (dies, overruns its deadline, writes
something that is not a frame) is killed and replaced, and its job is a `sandbox_error`.

Only the standard library (plus tasks.core.errors) is imported here, so it is cheap anywhere.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import queue
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tasks.sandbox import channel
from tasks.sandbox.child import ALL_GUARDS
from tasks.sandbox.isolation import SCRATCH, SandboxUnavailable, bwrap_argv, require_isolation, sandbox_env, zygote_argv

__all__ = ["Sandbox", "SandboxLimits", "SandboxUnavailable", "default_workers", "probe_guards", "run_many",
           "run_sandboxed"]  # fmt: skip

log = logging.getLogger("ossforge.sandbox")
ZYGOTE_MARGIN_SECONDS = 30.0  # beyond a job's own deadline, before the host gives up on a zygote


@dataclass(frozen=True)
class SandboxLimits:
    """Per-sample limits. The memory default follows EvalPlus (4 GiB)."""

    memory_bytes: int = 4 << 30  # RLIMIT_AS and RLIMIT_DATA of each worker
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: largest file a sample may write
    scratch_bytes: int = 256 << 20  # the sandbox's whole writable tmpfs
    processes: int = 64  # RLIMIT_NPROC (threads count too); fork/exec are refused by seccomp anyway
    startup_seconds: float = 10.0  # grace past a job's timeout (busy machine) and for a zygote's start
    oracle_blob_bytes: int = 4 << 30  # canonical outputs an oracle job may send back (opaque bytes)

    def as_child_limits(self, timeout: float) -> dict:
        return {
            "memory_bytes": int(self.memory_bytes),
            "file_bytes": int(self.file_bytes),
            "processes": int(self.processes),
            # CPU seconds back up the wall clock for a process that ignores SIGALRM.
            "cpu_seconds": int(timeout + self.startup_seconds) + 1,
        }


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _ZygoteBroken(Exception):
    """The zygote died, overran, or sent something that is not a frame: replace it."""


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    chunks, left = [], n
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise _ZygoteBroken("no answer before the deadline")
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise _ZygoteBroken("the zygote closed its channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float, max_blob: int) -> tuple[dict, bytes]:
    header = _read_exact(fd, channel.HEADER.size, deadline)
    json_len, blob_len = channel.HEADER.unpack(header)
    if json_len > channel.MAX_JSON_BYTES or blob_len > max_blob:
        raise _ZygoteBroken(f"frame sizes out of bounds (json {json_len}, blob {blob_len})")
    body = _read_exact(fd, json_len + blob_len, deadline)
    try:
        return channel.decode_frame(header + body, max_blob)
    except channel.ChannelError as exc:
        raise _ZygoteBroken(str(exc)) from None


class _Zygote:
    """One sandboxed warm interpreter and the pipes to it."""

    def __init__(self, isolation: str, limits: SandboxLimits, tmp_root: str | None, binds: tuple[str, ...] = ()):
        self._host_scratch = None
        if isolation == "bwrap":
            argv, cwd = bwrap_argv(limits.scratch_bytes, binds) + zygote_argv("bwrap", SCRATCH), None
            env = sandbox_env(SCRATCH)
        else:
            self._host_scratch = tempfile.mkdtemp(prefix="ossforge-sandbox-", dir=tmp_root)
            os.chmod(self._host_scratch, 0o777)  # the zygote becomes nobody when started as root
            argv, cwd, env = zygote_argv("weak", self._host_scratch), self._host_scratch, sandbox_env(self._host_scratch)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=cwd, env=env, start_new_session=True, close_fds=True)  # fmt: skip
        try:
            hello, _ = _read_frame(self.proc.stdout.fileno(), time.monotonic() + limits.startup_seconds + 20, 0)
        except _ZygoteBroken as exc:
            self.close()
            err = self.proc.stderr.read().decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"sandbox failed to start ({exc}): {err}") from None
        if hello.get("hello") is not True or not isinstance(hello.get("layers"), list):
            self.close()
            raise RuntimeError("sandbox failed to start: no greeting")
        self.layers = [str(x) for x in hello["layers"]]

    def run(self, job: dict, timeout: float, max_blob: int, grace: float) -> tuple[dict, bytes]:
        payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(channel.HEADER.pack(len(payload), 0) + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _ZygoteBroken(f"could not send the job: {exc}") from None
        deadline = time.monotonic() + timeout + grace + ZYGOTE_MARGIN_SECONDS
        answer, blob = _read_frame(self.proc.stdout.fileno(), deadline, max_blob)
        if answer.get("id") != job["id"] or set(answer) != {"id", "result"}:
            raise _ZygoteBroken("an answer to another job")
        try:
            return channel.checked_result(answer["result"]), blob
        except channel.ChannelError as exc:
            raise _ZygoteBroken(str(exc)) from None

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        if self._host_scratch:
            shutil.rmtree(self._host_scratch, ignore_errors=True)


class Sandbox:
    """`workers` warm sandboxes; `run` and `run_many` may be called from many threads.

    Refuses to start (SandboxUnavailable) where bubblewrap cannot run, unless `accept_weak`.
    `binds`: host folders mounted read-only besides the system and Python (the toolchains of
    tasks/sandbox/runners.py that live outside /usr).
    """

    def __init__(self, workers: int | None = None, limits: SandboxLimits = SandboxLimits(),
                 accept_weak: bool = False, tmp_root: str | os.PathLike | None = None,
                 binds: tuple[str, ...] = ()):  # fmt: skip
        self.isolation = require_isolation(accept_weak)
        if self.isolation == "weak":
            log.warning("SANDBOX IS WEAK: bubblewrap is unavailable; generated code runs behind Python-level "
                        "guards only and can write any file this user can. Results are marked isolation=weak.")  # fmt: skip
        self.workers = workers or default_workers()
        self.limits = limits
        self._tmp_root = str(tmp_root) if tmp_root is not None else None
        self._binds = tuple(binds)
        self._idle: queue.Queue[_Zygote | None] = queue.Queue()
        for _ in range(self.workers):
            self._idle.put(None)  # started on first use
        self._ids = itertools.count()
        self._all: list[_Zygote] = []
        self._lock = threading.Lock()
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> _Zygote:
        # Started from the sandbox's own thread: a zygote dies with the *thread* that started
        # it (PR_SET_PDEATHSIG, bwrap --die-with-parent), and run_many's pool threads end
        # with each call.
        zygote = self._spawner.submit(_Zygote, self.isolation, self.limits, self._tmp_root, self._binds).result()
        with self._lock:
            self._all.append(zygote)
        return zygote

    def _retire(self, zygote: _Zygote) -> None:
        zygote.close()
        with self._lock:
            self._all.remove(zygote)

    def run(self, job: dict, timeout: float) -> dict:
        """Run one job (see tasks/sandbox/child.py for its fields); always returns a result dict.

        The result has "passed", "error" (None or a kind), "detail", "seconds", "guards" and
        "isolation"; an oracle job's outputs come back as opaque bytes in "blob".
        """
        job = self._prepared(job, timeout)
        zygote = self._idle.get()
        try:
            if zygote is not None and zygote.proc.poll() is not None:  # died while idle: not this job's doing
                self._retire(zygote)
                zygote = None
            if zygote is None:
                zygote = self._start()  # a sandbox that cannot start raises: nothing can be validated
            result, blob = zygote.run(job, timeout, job["max_blob"], self.limits.startup_seconds)
        except _ZygoteBroken as exc:
            if zygote is not None:
                self._retire(zygote)
            zygote = None
            result, blob = {"passed": False, "error": "sandbox_error", "detail": str(exc)[:500]}, b""
        finally:
            self._idle.put(zygote)
        result["isolation"] = self.isolation
        if blob:
            result["blob"] = blob
        return result

    def _prepared(self, job: dict, timeout: float) -> dict:
        job = {**job, "id": next(self._ids), "timeout": float(timeout), "grace_seconds": self.limits.startup_seconds,
               "limits": self.limits.as_child_limits(timeout)}  # fmt: skip
        job["max_blob"] = self.limits.oracle_blob_bytes if job["mode"] == "oracle" else 0
        job.setdefault("guards", ALL_GUARDS)
        if job.get("expected_path"):  # canonical outputs from the host's cache: bytes, loaded only inside
            with open(job.pop("expected_path"), "rb") as fh:
                job["expected_pickle"] = fh.read()
        return job

    def run_many(self, jobs: list[tuple[dict, float]]) -> list[dict]:
        """(job, timeout) pairs, `workers` at a time; results in input order."""
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs)), thread_name_prefix="sandbox") as pool:
            return list(pool.map(lambda pair: self.run(*pair), jobs))

    def guards(self) -> list[str]:
        """The layers a sample meets here (reported with every evaluation and validation)."""
        return list(self.run({"mode": "check", "code": "pass", "seconds": 5.0}, 5.0).get("guards", []))

    def close(self) -> None:
        with self._lock:
            zygotes, self._all = self._all, []
        for zygote in zygotes:
            zygote.close()
        self._spawner.shutdown(wait=False)


# --- one-off helpers (each starts and stops its own sandbox) ----------------------------------


def run_sandboxed(job: dict, timeout: float, limits: SandboxLimits = SandboxLimits(),
                  tmp_root: str | os.PathLike | None = None, accept_weak: bool = False) -> dict:  # fmt: skip
    with Sandbox(1, limits, accept_weak, tmp_root) as sandbox:
        return sandbox.run(job, timeout)


def run_many(jobs: list[tuple[dict, float]], workers: int | None = None, limits: SandboxLimits = SandboxLimits(),
             tmp_root: str | os.PathLike | None = None, accept_weak: bool = False) -> list[dict]:  # fmt: skip
    if not jobs:
        return []
    with Sandbox(min(workers or default_workers(), len(jobs)), limits, accept_weak, tmp_root) as sandbox:
        return sandbox.run_many(jobs)


def probe_guards(limits: SandboxLimits = SandboxLimits(), accept_weak: bool = False) -> list[str]:
    with Sandbox(1, limits, accept_weak) as sandbox:
        return sandbox.guards()
