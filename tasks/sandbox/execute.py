"""Programs other than Python's fast path, inside the sandbox: write the files, then compile
and run them step by step, each step an exec'd process under its own limits.

The zygote (tasks/sandbox/zygote.py) calls `run_program_job` for a job of mode "program"
(built on the host by tasks/sandbox/runners.py). For each step it forks a worker that keeps
/dev/null on fd 0, one output pipe on fds 1 and 2 and, for the step that runs the tests,
a report pipe on fd 3; the worker sets the step's rlimits and seccomp filter
(tasks/sandbox/child.py: `lock_down_program`) and execs the step's argv with the sandbox's
environment. The zygote waits under the step's wall clock, keeps the head and tail of the
output (the stderr excerpt), and kills whatever the step left behind.

A pass is positive evidence: the run step exited 0 AND its harness wrote exactly this
job's nonce on fd 3, which the harness does only after the last test ended (each runner's
harness says how). The nonce is drawn here, per job, and written only into the harness
files (`job["harness"]`, where NONCE_MARK stands for it), never into the sample's own files,
so a sample that prints the mark gets nothing. Standard library only.
"""

import os
import select
import signal
import time

import child

NONCE_MARK = "@@OSSFORGE_NONCE@@"
REPORT_FD = 3
REPORT_CAP = 4096  # a nonce is 32 characters; more than this on fd 3 is forgery
HEAD, TAIL = 900, 900  # characters of output kept from each end (compiler errors come first)


def _write_files(scratch, files, harness, nonce):
    for name, text in files.items():
        _write(os.path.join(scratch, name), text)
    for name, text in harness.items():
        _write(os.path.join(scratch, name), text.replace(NONCE_MARK, nonce))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(text)


def _start(step, env, scratch, report):
    out_r, out_w = os.pipe()
    rep_r, rep_w = os.pipe() if report else (None, None)
    pid = os.fork()
    if pid:
        os.close(out_w)
        if report:
            os.close(rep_w)
        return pid, out_r, rep_r
    try:  # the worker: /dev/null, the output pipe, the report pipe; nothing of the zygote's
        os.setpgid(0, 0)
        _die_with_zygote()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        if report:
            os.dup2(rep_w, REPORT_FD)
        os.closerange(REPORT_FD + 1 if report else REPORT_FD, 1 << 16)
        for sig in (signal.SIGPIPE, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # Python ignores SIGPIPE; an exec'd program must not inherit that
        os.chdir(scratch)
        child.lock_down_program(step["limits"], step["processes"])
        os.execve(step["argv"][0], step["argv"], env)
    except BaseException as exc:  # exec failed: the toolchain is not there inside the sandbox
        try:
            os.write(2, f"ossforge: cannot run {step['argv'][0]}: {exc}".encode())
        except BaseException:
            pass
    finally:
        os._exit(127)


def _die_with_zygote():
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: dies with the zygote
    except (OSError, AttributeError):
        pass


class _Output:
    """The head and tail of what a step printed; the middle is dropped as it streams by."""

    def __init__(self):
        self.head, self.tail = b"", b""

    def add(self, chunk):
        if len(self.head) < HEAD * 4:
            room = HEAD * 4 - len(self.head)
            self.head, chunk = self.head + chunk[:room], chunk[room:]
        if chunk:
            self.tail = (self.tail + chunk)[-TAIL * 4 :]

    def text(self):
        head = self.head.decode(errors="replace")[:HEAD]
        whole = (self.head + self.tail).decode(errors="replace")
        if len(whole) <= HEAD + TAIL:
            return whole
        return head + "\n...\n" + self.tail.decode(errors="replace")[-TAIL:]


def _collect(pid, out_fd, rep_fd, deadline):
    """(output, report bytes, wait status, trouble): trouble is None, 'timeout' or 'overflow'."""
    pidfd = os.pidfd_open(pid)
    output, report, trouble = _Output(), b"", None
    open_fds = [fd for fd in (out_fd, rep_fd) if fd is not None]

    def take(fd, chunk):
        nonlocal report
        if fd == out_fd:
            output.add(chunk)
            return None
        report += chunk
        return "overflow" if len(report) > REPORT_CAP else None

    try:
        while trouble is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                trouble = "timeout"
                break
            ready, _, _ = select.select(open_fds + [pidfd], [], [], remaining)
            for fd in [fd for fd in ready if fd in open_fds]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    open_fds.remove(fd)
                else:
                    trouble = take(fd, chunk)
            if pidfd in ready and trouble is None:
                # Exited. A leftover may hold a pipe open: take what is there now, no more.
                for fd in open_fds:
                    os.set_blocking(fd, False)
                    try:
                        for _ in range(64):
                            chunk = os.read(fd, 1 << 16)
                            if not chunk or (trouble := take(fd, chunk)):
                                break
                    except BlockingIOError:
                        pass
                break
    finally:
        os.close(pidfd)
        for fd in (out_fd, rep_fd):
            if fd is not None:
                os.close(fd)
    if trouble:
        _kill(pid)
    _, status = os.waitpid(pid, 0)
    return output.text(), report, status, trouble


def _kill(pid):
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass


def _failure(kind, step, detail, output="", code=None):
    result = {"passed": False, "error": kind, "detail": f"{step}: {detail}"[:500], "stderr": output[-2000:] or None}
    if code is not None:
        result["exit_code"] = code
    return result


def run_program_job(job, nonce, scratch, env, cleanup):
    """Compile and run one program; the verdict as a result dict (tasks/sandbox/channel.py's fields).

    Raw error kinds here: timeout, syntax_error (a compile step failed), failed (the run
    step exited non-zero), killed (a signal), no_result (exit 0 without the harness'
    report), forged_result (anything but the nonce on fd 3). The host's runner refines
    `failed` and `killed` from the output (an assertion, an exception, memory).
    """
    _write_files(scratch, job.get("files", {}), job.get("harness", {}), nonce)
    for step in job["steps"]:
        report = bool(step.get("report"))
        pid, out_fd, rep_fd = _start(step, env, scratch, report)
        deadline = time.monotonic() + step["seconds"]
        output, got, status, trouble = _collect(pid, out_fd, rep_fd, deadline)
        cleanup(pid)
        name = step["name"]
        if trouble == "timeout":
            return _failure("timeout", name, f"over {step['seconds']:g} s", output)
        if trouble == "overflow":
            return _failure("forged_result", name, "too many bytes on the report channel", output)
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            kind = "timeout" if signum == signal.SIGXCPU else "killed"
            return _failure(kind, name, f"killed by {_signal_name(signum)}", output)
        code = os.WEXITSTATUS(status)
        if not report:
            if code != 0:
                return _failure("syntax_error" if step.get("compile") else "failed", name, f"exit status {code}", output, code)
            continue
        if got and got != nonce.encode():
            return _failure("forged_result", name, "a report the harness did not write", output, code)
        if code != 0:
            return _failure("failed", name, f"exit status {code}", output, code)
        if not got:
            return _failure("no_result", name, "exited 0 before the tests ended (no report from the harness)", output, code)
        return {"passed": True, "error": None, "detail": None, "stderr": output[-2000:] or None, "exit_code": 0}
    return _failure("sandbox_error", "job", "no step reports a verdict")


def _signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
