"""What a sandbox worker runs after the zygote forks it: lock down, run the job, report once.

`tasks/sandbox/zygote.py` forks one worker per job and calls `run_job`. The worker holds
/dev/null on fds 0-2 and its own report pipe on fd 3; it reports exactly one frame
(tasks/sandbox/channel.py: JSON, never pickle) carrying the nonce the zygote gave it, then
exits. A sample that writes on fd 3 itself makes the frame count or the nonce wrong, and
the zygote scores it failed; a sample that exits, crashes or is killed before the harness
reports leaves no frame, and is scored failed too: a pass is positive evidence.

Order matters: set resource limits, install the seccomp filter (or, where the kernel
refuses one, cut the network with an empty network namespace), then disable destructive
Python functions, and only then run untrusted code. Inside bubblewrap these are the inner
layers; without it (the user accepted a weak sandbox) they are all there is, and they
stop the accidents generated code makes, not a determined attacker.

Job modes:
- "check":  exec a whole program (solution + the benchmark's assert-based test); pass = no exception.
- "tests":  exec a solution, then its tests in the same namespace, then every `test_*`
            function and unittest.TestCase the tests define (validation of generated pairs).
- "io":     exec the solution, then call the entry point on each input and compare with the
            expected output (EvalPlus' differential testing, with its special oracles).
- "oracle": exec the trusted canonical solution and return its outputs and timings.
"""

import builtins
import ctypes
import faulthandler
import gc
import io
import math
import os
import pickle
import platform
import resource
import signal
import struct
import sys
import time

if __package__:  # imported on the host (tests)
    from tasks.sandbox import channel
else:  # inside the sandbox, next to the zygote: no `tasks` package there
    import channel

# Kept before the guard replaces them: the harness itself still needs to write and exit.
_write = os.write
_exit = os._exit
_perf = time.perf_counter


class _Timeout(BaseException):
    """Raised by the per-call timer. BaseException so `except Exception:` in user code can't eat it."""


class _Sink(io.TextIOBase):
    """Where user prints go: accepted and dropped, never readable."""

    def writable(self):
        return True

    def write(self, s):
        return len(s)


# ---------------------------------------------------------------- lock-down ------------

def _set_limit(which, value):
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _resource_limits(limits, guards):
    # Address space: runtimes that reserve big virtual ranges up front (V8, the JVM) are
    # bounded by RLIMIT_DATA alone (tasks/sandbox/runners.py sets address_bytes None).
    address = limits.get("address_bytes", limits["memory_bytes"])
    if address is not None:
        _set_limit(resource.RLIMIT_AS, address)
    _set_limit(resource.RLIMIT_DATA, limits["memory_bytes"])
    _set_limit(resource.RLIMIT_CPU, limits["cpu_seconds"])
    _set_limit(resource.RLIMIT_FSIZE, limits["file_bytes"])
    _set_limit(resource.RLIMIT_CORE, 0)
    # Processes and threads of this user (the zygote runs workers as nobody; not enforced for
    # root, where the seccomp filter's fork/exec ban is what holds).
    _set_limit(resource.RLIMIT_NPROC, limits["processes"])
    # Writing past RLIMIT_FSIZE should be an OSError in the sample, not a SIGXFSZ death.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    guards.append("rlimits")


_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _cut_network(libc, guards):
    """A private, empty network namespace: no interface but a down loopback."""
    if libc is None:
        return
    for flags in (_CLONE_NEWNET, _CLONE_NEWUSER | _CLONE_NEWNET):  # privileged, then unprivileged
        if libc.unshare(flags) == 0:
            guards.append("netns")
            return


# seccomp-bpf: a kernel-level guard that also holds against ctypes and raw syscalls.
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SYSCALLS = {  # name -> number, per architecture
    "x86_64": dict(clone=56, clone3=435, fork=57, vfork=58, execve=59, execveat=322, socket=41,
                   kill=62, tkill=200, tgkill=234, ptrace=101),
    "aarch64": dict(clone=220, clone3=435, execve=221, execveat=281, socket=198,
                    kill=129, tkill=130, tgkill=131, ptrace=117),
}  # fmt: skip
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JSET_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x45, 0x35, 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x00010000
_AF_UNIX = 1


def _seccomp_program(arch: str, pid: int, program: bool = False, processes: bool = False) -> list[tuple[int, int, int, int]]:
    """Deny new processes and programs, non-Unix sockets, signals to other processes, ptrace.

    Threads stay allowed (clone with CLONE_THREAD); clone3 answers ENOSYS so libc falls
    back to clone, whose flags the filter can read. For a `program` (tasks/sandbox/execute.py:
    a compiler, node, a test binary) exec is allowed, since the worker must exec it, and with
    `processes` (compilers, shell scripts) fork too, under RLIMIT_NPROC; the rest holds.
    """
    nr = _SYSCALLS[arch]
    deny = (_BPF_RET_K, 0, 0, _RET_ERRNO | _EPERM)
    allow = (_BPF_RET_K, 0, 0, _RET_ALLOW)
    load_nr = (_BPF_LD_W_ABS, 0, 0, 0)
    load_arg0 = (_BPF_LD_W_ABS, 0, 0, 16)  # low 32 bits of args[0] (little-endian)
    prog = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # arch
        (_BPF_JEQ_K, 1, 0, _AUDIT_ARCH[arch]),
        deny,  # a foreign syscall ABI: refuse everything
        load_nr,
        (_BPF_JGE_K, 0, 1, 0x40000000),  # x32 ABI numbers on x86_64
        deny,
        (_BPF_JEQ_K, 0, 1, nr["clone3"]),
        (_BPF_RET_K, 0, 0, _RET_ERRNO | _ENOSYS),
    ]
    denied = ("ptrace",) if processes else ("fork", "vfork", "ptrace") if program else ("fork", "vfork", "execve", "execveat", "ptrace")
    for name in denied:
        if name in nr:
            prog += [load_nr, (_BPF_JEQ_K, 0, 1, nr[name]), deny]
    if not processes:  # clone: threads only
        prog += [load_nr, (_BPF_JEQ_K, 0, 3, nr["clone"]), load_arg0, (_BPF_JSET_K, 1, 0, _CLONE_THREAD), deny]
    # socket: Unix domain only
    prog += [load_nr, (_BPF_JEQ_K, 0, 3, nr["socket"]), load_arg0, (_BPF_JEQ_K, 1, 0, _AF_UNIX), deny]
    # kill / tkill / tgkill: only this process
    for name in ("kill", "tkill", "tgkill"):
        prog += [load_nr, (_BPF_JEQ_K, 0, 3, nr[name]), load_arg0, (_BPF_JEQ_K, 1, 0, pid), deny]
    prog.append(allow)
    return prog


def _install_seccomp(libc, guards, program=False, processes=False):
    arch = platform.machine()
    if libc is None or arch not in _SYSCALLS:
        return
    prog = _seccomp_program(arch, os.getpid(), program, processes)
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        return
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) == 0:
        guards.append("seccomp")


def _disable(obj, names):
    for name in names:
        if hasattr(obj, name):
            setattr(obj, name, None)


_OS_DISABLED = [
    "kill", "killpg", "fork", "forkpty", "system", "popen", "_exit", "abort",  # not putenv: numpy needs it
    "remove", "removedirs", "rmdir", "unlink", "rename", "renames", "replace", "truncate", "ftruncate",
    "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown", "chroot", "chdir", "fchdir",
    "setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid", "setsid", "setpgid",
    "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "posix_spawn", "posix_spawnp", "link", "symlink",  # not register_at_fork: `random` needs it
]  # fmt: skip


def _reliability_guard(guards):
    """Switch off what generated code should never need: processes, signals, deleting, chmod."""
    import posix
    import shutil
    import socket
    import subprocess

    faulthandler.disable()
    builtins.exit = builtins.quit = None
    builtins.help = None
    _disable(os, _OS_DISABLED)
    _disable(posix, _OS_DISABLED)  # `os` re-exports these; the originals live here
    _disable(shutil, ["rmtree", "move", "chown", "copytree", "copyfile", "copy", "copy2"])
    _disable(subprocess, ["Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"])
    # No sockets from Python even where the kernel-level guards are unavailable.
    _disable(socket, ["socket", "create_connection", "create_server", "socketpair", "fromfd"])
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter", "multiprocessing", "ctypes", "_ctypes"):
        sys.modules[name] = None  # `import x` now raises ImportError
    guards.append("reliability_guard")


# ---------------------------------------------------------------- running code ---------

class _Timer:
    """Per-call wall-clock limit. `fired` stays set even if user code swallows the exception."""

    def __init__(self):
        self.fired = False
        signal.signal(signal.SIGALRM, self._handler)

    def _handler(self, signum, frame):
        self.fired = True
        raise _Timeout()

    def start(self, seconds):
        self.fired = False
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def stop(self):
        signal.setitimer(signal.ITIMER_REAL, 0)


def _clip(text, limit=300):
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value, limit=300):
    try:
        text = repr(value)
    except BaseException:  # e.g. an int too long to print
        text = f"<{type(value).__name__}>"
    return _clip(text, limit)


def _error_kind(exc, timer):
    if timer.fired or isinstance(exc, _Timeout):
        return "timeout", "time limit exceeded"
    if isinstance(exc, MemoryError):
        return "memory", "MemoryError"
    if isinstance(exc, SyntaxError):
        return "syntax_error", _clip(f"{exc.msg} (line {exc.lineno})")
    if isinstance(exc, SystemExit):
        return "system_exit", _short(exc.code)
    if isinstance(exc, RecursionError):
        return "exception", "RecursionError"
    try:
        message = str(exc)
    except BaseException:
        message = ""
    if isinstance(exc, AssertionError):
        return "assertion", _clip(message) if message else "AssertionError"
    return "exception", _clip(f"{type(exc).__name__}: {message}")


def _exec_program(code, timer, seconds):
    """Run a program's top level under a time limit; returns (globals, error) — error is (kind, detail)."""
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        compiled = compile(code, "<solution>", "exec")
    except BaseException as exc:  # SyntaxError, ValueError (null bytes), MemoryError, RecursionError
        return namespace, _error_kind(exc, timer)
    try:
        timer.start(seconds)
        exec(compiled, namespace)
        timer.stop()
        if timer.fired:
            return namespace, ("timeout", "time limit exceeded")
    except BaseException as exc:
        timer.stop()
        return namespace, _error_kind(exc, timer)
    return namespace, None


# --- output comparison: EvalPlus' differential testing, re-expressed -------------------

_FLOAT_ATOL = 1e-6  # EvalPlus' default tolerance once an expected output is a float
_RTOL = 1e-07  # the rtol EvalPlus sets explicitly (np.testing.assert_allclose's default)

# Tasks whose outputs only matter as a set, or only as "not None" (EvalPlus special oracles).
MBPP_SET_EQUAL = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
                  "larg_nnum", "intersection_array", "find_dissimilar", "Diff"}  # fmt: skip
MBPP_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}


def _poly(xs, x):
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def _pyramid_surface(base_edge, height):  # Mbpp/581 accepts the slant-height reading too
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 2 * base_edge * slant)


def _digit_distance(num1, num2):  # Mbpp/558 accepts zero-padded digit alignment too
    a, b = str(num1), str(num2)
    width = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))


def _is_floats(x):
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _allclose(a, b, atol):
    """numpy.allclose(a, b, rtol=1e-7, atol) for numbers and equally shaped nested sequences."""
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(_allclose(x, y, atol) for x, y in zip(a, b))
    if isinstance(a, (int, float, complex)) and isinstance(b, (int, float, complex)):
        if a == b:
            return True  # also inf == inf
        try:
            return abs(a - b) <= atol + _RTOL * abs(b)
        except (OverflowError, TypeError):
            return False
    return a == b


def outputs_match(out, exp, inp, atol, dataset, entry_point):
    exact = out == exp
    if dataset == "mbpp":
        if entry_point == "are_equivalent":  # Mbpp/164: the reference answer is disputed; anything goes
            exact = True
        elif entry_point == "sum_div":  # Mbpp/295
            exact = exact or out == 0
        elif entry_point == "surface_Area":
            exact = exact or abs(out - _pyramid_surface(*inp)) <= atol
        elif entry_point == "digit_distance_nums":
            exact = exact or out == _digit_distance(*inp)
        elif entry_point in MBPP_SET_EQUAL:
            exact = set(out) == set(exp)
        elif entry_point in MBPP_NOT_NONE:
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    elif dataset == "humaneval" and entry_point == "find_zero":
        # Any root will do. The canonical root itself is also accepted: on Python 3.12, whose
        # float sum() is compensated, its residual can exceed atol (HumanEval/32 plus #119).
        return abs(_poly(*inp, out)) <= atol or (isinstance(out, float) and _allclose(out, exp, max(atol, _FLOAT_ATOL)))
    if atol == 0 and _is_floats(exp):
        atol = _FLOAT_ATOL
    if exact:
        return True
    if atol == 0:
        return False
    if type(out) is not type(exp):
        return False
    return _allclose(out, exp, atol)


def _run_io(job, timer):
    namespace, error = _exec_program(job["code"], timer, job["setup_seconds"])
    groups = {}
    fn = None
    if error is None:
        fn = namespace.get(job["entry_point"])
        if not callable(fn):
            error = ("missing_entry_point", f"no function named {job['entry_point']!r}")
    blocked = error
    for group in job["groups"]:
        name = group["name"]
        if blocked is not None:  # plus is only run when base passed (EvalPlus: plus implies base)
            groups[name] = {"passed": False, "error": blocked[0], "detail": blocked[1], "index": None}
            continue
        result = {"passed": True, "error": None, "detail": None, "index": None}
        expected = job["expected"][name]
        for i, (inp, exp, limit) in enumerate(zip(group["inputs"], expected, group["seconds"])):
            try:
                timer.start(limit)
                out = fn(*inp)
                timer.stop()
                if timer.fired:
                    raise _Timeout()
                ok = outputs_match(out, exp, inp, job["atol"], job["dataset"], job["entry_point"])
            except BaseException as exc:
                timer.stop()
                kind, detail = _error_kind(exc, timer)
                result = {"passed": False, "error": kind, "detail": detail, "index": i}
                break
            if not ok:
                detail = f"expected {_short(exp, 120)}, got {_short(out, 120)}"
                result = {"passed": False, "error": "wrong_answer", "detail": detail, "index": i}
                break
            # Free a (possibly huge) output now, not inside the next input's timed call.
            out = None
        groups[name] = result
        if not result["passed"]:
            blocked = (result["error"], result["detail"])
    return {"groups": groups}


def _run_check(job, timer):
    _, error = _exec_program(job["code"], timer, job["seconds"])
    if error is None:
        return {"passed": True, "error": None, "detail": None}
    return {"passed": False, "error": error[0], "detail": error[1]}


def _run_oracle(job, timer):
    namespace, error = _exec_program(job["code"], timer, job["setup_seconds"])
    if error is not None:
        return {"error": error[0], "detail": error[1]}
    fn = namespace.get(job["entry_point"])
    outputs_by_group, seconds_by_group = {}, {}
    for group in job["groups"]:
        outputs, seconds = [], []
        for i, inp in enumerate(group["inputs"]):
            try:
                timer.start(job["seconds_per_input"])
                start = _perf()
                out = fn(*inp)
                seconds.append(_perf() - start)
                timer.stop()
            except BaseException as exc:
                timer.stop()
                kind, detail = _error_kind(exc, timer)
                return {"error": kind, "detail": f"{group['name']} input #{i}: {detail}"}
            outputs.append(out is not None if job["output_not_none"] else out)
        outputs_by_group[group["name"]] = outputs
        seconds_by_group[group["name"]] = seconds
    # Outputs travel as an opaque pickle the parent writes to the cache without loading:
    # some are hundreds of MB (Mbpp/255 returns millions of tuples).
    data = pickle.dumps(outputs_by_group, protocol=pickle.HIGHEST_PROTOCOL)
    return {"input_seconds": seconds_by_group}, data


# --- validation: a generated solution against its generated tests ----------------------


class _Tail(io.TextIOBase):
    """Keeps the last few thousand characters written: the stderr excerpt of a failure."""

    def __init__(self, limit=2000):
        self.limit, self.text = limit, ""

    def writable(self):
        return True

    def write(self, s):
        self.text = (self.text + str(s))[-self.limit :]
        return len(s)


def _where(exc):
    """'<tests>:12' — the last line of the solution or the tests the exception passed through."""
    where, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in ("<solution>", "<tests>"):
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def _failure(kind, detail, exc=None, tests_run=0, stderr=None):
    where = _where(exc) if exc is not None else None
    detail = f"{detail} at {where}" if where else detail
    return {"passed": False, "error": kind, "detail": _clip(detail or "", 500), "tests_run": tests_run,
            "stderr": stderr.text[-500:] if stderr is not None and stderr.text else None}  # fmt: skip


def _timed_call(fn, timer, seconds):
    """(exception or None) of fn() under the per-call timer."""
    try:
        timer.start(seconds)
        fn()
        timer.stop()
        if timer.fired:
            raise _Timeout()
    except BaseException as exc:
        timer.stop()
        return exc
    return None


def _defined_tests(namespace, before):
    """test_* functions and unittest.TestCase classes the tests defined, in definition order."""
    import unittest

    found = []
    for name, obj in namespace.items():
        if name in before and namespace.get(name) is before[name]:
            continue
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase) and obj is not unittest.TestCase:
            found.append((name, obj))
        elif name.startswith("test") and callable(obj) and not isinstance(obj, type):
            found.append((name, obj))
    return found


def _run_testcase(cls):
    """Run one TestCase class; raise AssertionError with the first failure's message."""
    import unittest

    suite = unittest.defaultTestLoader.loadTestsFromTestCase(cls)
    result = unittest.TestResult()
    suite.run(result)
    problems = result.errors + result.failures
    if problems:
        test, text = problems[0]
        raise AssertionError(f"{test.id()}: {text.strip().splitlines()[-1]}")
    if result.testsRun == 0:
        raise AssertionError(f"{cls.__name__} has no test methods")
    return result.testsRun


def _run_tests(job, timer):
    """Solution, then tests, then each test function, all within one time budget."""
    deadline = _perf() + job["seconds"]
    stderr = _Tail()
    sys.stderr = stderr
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    for source, filename in ((job["code"], "<solution>"), (job["tests"], "<tests>")):
        before = dict(namespace)
        try:
            compiled = compile(source, filename, "exec")
        except BaseException as exc:
            kind, detail = _error_kind(exc, timer)
            return _failure(kind, f"{filename} {detail}", stderr=stderr)
        exc = _timed_call(lambda: exec(compiled, namespace), timer, deadline - _perf())
        if exc is not None:
            kind, detail = _error_kind(exc, timer)
            return _failure(kind, detail, exc, stderr=stderr)
    tests_run = 1  # the tests' top level ran to its end
    for name, obj in _defined_tests(namespace, before):
        counted = []
        call = (lambda o=obj: counted.append(_run_testcase(o))) if isinstance(obj, type) else obj
        exc = _timed_call(call, timer, deadline - _perf())
        if exc is not None:
            kind, detail = _error_kind(exc, timer)
            return _failure(kind, f"{name}: {detail}", exc, tests_run, stderr)
        tests_run += counted[0] if counted else 1
    return {"passed": True, "error": None, "detail": None, "tests_run": tests_run}


# ---------------------------------------------------------------- one job ---------------

_MODES = {"io": _run_io, "check": _run_check, "oracle": _run_oracle, "tests": _run_tests}
ALL_GUARDS = ("rlimits", "netns", "seccomp", "reliability_guard")
PROGRAM_GUARDS = ("rlimits", "seccomp") if platform.machine() in _SYSCALLS else ("rlimits",)  # an exec'd program's


def _lock_down(job):
    guards = []
    libc = _libc()
    layers = job.get("guards", ALL_GUARDS)
    if "rlimits" in layers:
        _resource_limits(job["limits"], guards)
    if "seccomp" in layers:
        _install_seccomp(libc, guards)
    # The seccomp filter already refuses every non-Unix socket; a network namespace is the
    # fallback where seccomp is not permitted (inside bubblewrap there is no network anyway).
    if "netns" in layers and "seccomp" not in guards:
        _cut_network(libc, guards)
    if "reliability_guard" in layers:
        _reliability_guard(guards)
    return guards


def lock_down_program(limits, processes):
    """The layers for a program about to be exec'd (tasks/sandbox/execute.py): rlimits and
    seccomp (fork/exec only where `processes`); the Python guard means nothing past exec."""
    guards = []
    _resource_limits(limits, guards)
    _install_seccomp(_libc(), guards, program=True, processes=processes)
    return guards


def run_job(job, nonce, report_fd):
    """Run one job in this freshly forked worker, report it once on `report_fd`, exit. Never returns."""
    encode = channel.encode_frame  # taken before the sample runs and could rebind it
    if job.get("expected_pickle") is not None:
        # The canonical outputs, from the host's cache (written there as bytes by an oracle
        # worker; only ever loaded here, inside the sandbox).
        job["expected"] = pickle.loads(job.pop("expected_pickle"))
    # The job's inputs and expected outputs can be millions of objects; keep them out of the
    # cyclic GC's sight, or every collection during the sample's run walks them all and a
    # sample is timed several times slower than the canonical solution it is compared with.
    gc.freeze()
    sys.stdin = io.StringIO("")  # fds 0-2 are /dev/null already; Python-level prints go nowhere
    sys.stdout = sys.stderr = _Sink()
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)  # HumanEval+ has inputs with thousands of digits
    guards = _lock_down(job)
    timer = _Timer()
    blob = b""
    try:
        result = _MODES[job["mode"]](job, timer)
        if isinstance(result, tuple):
            result, blob = result
    except BaseException as exc:  # a harness failure (e.g. MemoryError while comparing)
        timer.stop()
        kind, detail = _error_kind(exc, timer)
        result = {"error": kind, "detail": detail, "passed": False}
    result["guards"] = guards
    try:
        data = encode({"nonce": nonce, "result": result}, blob)
    except BaseException as exc:  # e.g. a detail that cannot be encoded
        data = encode({"nonce": nonce, "result": {"error": "unencodable", "detail": _short(exc), "passed": False}})
    view = memoryview(data)
    while view:
        view = view[_write(report_fd, view) :]
    _exit(0)
