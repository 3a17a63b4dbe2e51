"""The warm interpreter inside the sandbox: it forks one worker per job and judges what comes back.

`tasks/sandbox/runner.py` starts `python -S -B zygote.py` once per sandbox slot, inside
bubblewrap (or, only when the user accepts it, as a plain process). It imports the harness
and the modules generated code usually needs once, so a job costs a fork, not an
interpreter start. Then, for each job the host sends on stdin (a pickle: the host is
trusted, this direction only):

1. fork a worker; the worker keeps only /dev/null on fds 0-2 and its own report pipe on
   fd 3 — never the zygote's channel to the host — locks itself down (tasks/sandbox/child.py)
   and runs the job;
2. wait for the worker under a wall-clock deadline, reading at most a bounded number of
   bytes from its pipe;
3. kill whatever the worker left behind and empty the scratch directory;
4. judge: a pass needs exactly one well-formed frame carrying this job's nonce, then a
   clean exit. Anything else (no frame, two frames, garbage, a foreign nonce, a signal) is
   a failure with a reason. The verdict goes to the host as a JSON frame on stdout.

The zygote never runs sample code. Standard library only.
"""

import ctypes
import gc
import os
import pickle
import select
import signal
import stat
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
import channel  # noqa: E402  (next to this file; the sandbox has no `tasks` package)
import child  # noqa: E402
import execute  # noqa: E402

sys.path.remove(HERE)  # samples must not import the harness' modules by accident

NOBODY = 65534
REPORT_FD = 3
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
# Imported once here, so a worker that needs them pays nothing (a fork shares them).
PRELOAD = ("abc", "array", "bisect", "collections", "copy", "dataclasses", "datetime", "decimal", "enum",
           "fractions", "functools", "hashlib", "heapq", "itertools", "json", "math", "operator", "random",
           "re", "statistics", "string", "textwrap", "typing", "unittest",
           "shutil", "socket", "subprocess")  # the last three: the worker's Python-level guard edits them  # fmt: skip


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _drop_privileges(layers: list) -> None:
    """Root inside the sandbox could still write /proc/sys or /proc/sysrq-trigger: become nobody."""
    if os.geteuid() != 0:
        return
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)  # leaving uid 0 also clears every capability
    layers.append("nobody")


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ---------------------------------------------------------------- one job ----------------


def _start_worker(job: dict, nonce: str) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        return pid, read_end
    try:  # the worker: nothing but /dev/null and its own report pipe
        os.setpgid(0, 0)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.dup2(write_end, REPORT_FD)
        os.closerange(REPORT_FD + 1, 1 << 16)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        child.run_job(job, nonce, REPORT_FD)
    finally:
        os._exit(70)


def _collect(pid: int, fd: int, deadline: float, cap: int) -> tuple[bytes, int | None, str | None]:
    """(bytes reported, wait status or None, trouble) — trouble is 'timeout' or 'overflow'."""
    pidfd = os.pidfd_open(pid)
    chunks, size, exited, eof, trouble = [], 0, False, False, None
    try:
        while not (exited and eof):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                trouble = "timeout"
                break
            ready, _, _ = select.select([pidfd] if eof else [fd, pidfd], [], [], remaining)
            if fd in ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    eof = True
                size += len(chunk)
                chunks.append(chunk)
                if size > cap:
                    trouble = "overflow"
                    break
            if pidfd in ready:
                exited = True
                if not eof:  # a leftover may hold the pipe open: take what is there, no more
                    os.set_blocking(fd, False)
                    try:
                        while (chunk := os.read(fd, 1 << 20)) and size <= cap:
                            size += len(chunk)
                            chunks.append(chunk)
                    except BlockingIOError:
                        pass
                    eof = True
                    if size > cap:
                        trouble = "overflow"
    finally:
        os.close(pidfd)
        os.close(fd)
    if trouble:
        _kill(pid)
    _, status = os.waitpid(pid, 0)
    return b"".join(chunks), status, trouble


def _kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass


def _others() -> list[int]:
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]


def _kill_leftovers(pid: int, in_pid_namespace: bool) -> None:
    """Every process but the namespace's init and this zygote (or, outside one, the worker's group)."""
    _kill(pid)
    if not in_pid_namespace:
        return  # never kill(-1) outside a PID namespace: that would reach the user's own processes
    deadline = time.monotonic() + 5.0
    while _others() and time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)  # all of this namespace we may signal, but init and us, at once
        except ProcessLookupError:
            pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap ours; init reaps the orphans
                pass
        except ChildProcessError:
            pass
        time.sleep(0.002)


def _clear(path: str) -> None:
    """Empty a directory the sample could write, whatever modes it left on things."""
    for name in os.listdir(path):
        target = os.path.join(path, name)
        try:
            st = os.lstat(target)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(target, 0o700)
                _clear(target)
                os.rmdir(target)
            else:
                os.unlink(target)
        except OSError:
            pass


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _verdict(data: bytes, status: int | None, trouble: str | None, nonce: str, job: dict) -> tuple[dict, bytes]:
    if trouble == "timeout":
        return {"passed": False, "error": "timeout", "detail": "wall-clock limit exceeded"}, b""
    if trouble == "overflow":
        return {"passed": False, "error": "forged_result", "detail": "too many bytes on the result channel"}, b""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        kind = "timeout" if signum == signal.SIGXCPU else "killed"
        return {"passed": False, "error": kind, "detail": f"killed by {_signal_name(signum)}"}, b""
    code = os.WEXITSTATUS(status)
    if not data:
        return {"passed": False, "error": "no_result", "detail": f"exited with code {code} without a result",
                "exit_code": code}, b""  # fmt: skip
    try:
        header, blob = channel.decode_frame(data, job.get("max_blob", 0))
        if header.get("nonce") != nonce or set(header) != {"nonce", "result"}:
            raise channel.ChannelError("a report the harness did not write")
        result = channel.checked_result(header["result"])
    except channel.ChannelError as exc:
        return {"passed": False, "error": "forged_result", "detail": str(exc)}, b""
    if code != 0:  # the harness exits 0 right after its one write
        return {"passed": False, "error": "no_result", "detail": f"exited with code {code} after a report",
                "exit_code": code}, b""  # fmt: skip
    return result, blob


def run_one(job: dict, layers: list, in_pid_namespace: bool, scratch: str) -> tuple[dict, bytes]:
    nonce = os.urandom(16).hex()
    started = time.perf_counter()
    pid, fd = _start_worker(job, nonce)
    deadline = time.monotonic() + job["timeout"] + job["grace_seconds"]
    cap = channel.HEADER.size + channel.MAX_JSON_BYTES + job.get("max_blob", 0)
    data, status, trouble = _collect(pid, fd, deadline, cap)
    seconds = time.perf_counter() - started
    _kill_leftovers(pid, in_pid_namespace)
    _clear(scratch)
    result, blob = _verdict(data, status, trouble, nonce, job)
    result["seconds"] = seconds
    result["guards"] = layers + [g for g in result.get("guards", []) if g not in layers]
    return result, blob


def run_program(job: dict, layers: list, in_pid_namespace: bool, scratch: str) -> dict:
    """A job of mode "program" (another language: compile and run steps, tasks/sandbox/execute.py)."""
    nonce = os.urandom(16).hex()
    started = time.perf_counter()
    try:
        result = execute.run_program_job(job, nonce, scratch, {**os.environ, **job.get("env", {})},
                                         lambda pid: _kill_leftovers(pid, in_pid_namespace))  # fmt: skip
    except OSError as exc:  # the scratch is full, a pipe could not be made...
        result = {"passed": False, "error": "sandbox_error", "detail": f"{type(exc).__name__}: {exc}"[:500]}
    _clear(scratch)
    result["seconds"] = time.perf_counter() - started
    result["guards"] = layers + [g for g in child.PROGRAM_GUARDS if g not in layers]
    return result


# ---------------------------------------------------------------- the loop ---------------


def main() -> None:
    mode, scratch = sys.argv[1], sys.argv[2]  # mode: "bwrap" or "weak"
    sys.path.extend(p for p in sys.argv[3].split(os.pathsep) if p)  # started with -S: no site
    os.chdir(scratch)
    layers = ["bwrap"] if mode == "bwrap" else []
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the host process (bwrap does this too)
    if mode == "bwrap":
        # Not without bubblewrap: there the interpreter may live where nobody can't read
        # (/root/.pyenv), and that mode makes no promise about the user's files anyway.
        _drop_privileges(layers)
    _prctl(PR_SET_DUMPABLE, 0)  # workers can't read or trace this process' memory
    for name in PRELOAD:
        __import__(name)
    gc.freeze()  # what is loaded now stays shared with every forked worker
    _write_all(1, channel.encode_frame({"hello": True, "layers": layers, "python": sys.version}))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # bwrap's start-up errors went to the host; nothing else does
    while True:
        header = _read_exact(0, channel.HEADER.size)
        if header is None:
            return
        size, _ = channel.HEADER.unpack(header)
        job = pickle.loads(_read_exact(0, size))  # from the host: trusted
        if job["mode"] == "program":
            result, blob = run_program(job, layers, mode == "bwrap", scratch), b""
        else:
            result, blob = run_one(job, layers, mode == "bwrap", scratch)
        _write_all(1, channel.encode_frame({"id": job["id"], "result": result}, blob))


if __name__ == "__main__":
    main()
