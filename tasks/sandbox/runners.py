"""Runners: how a solution and its tests in each language run in the sandbox, and what counts as a pass.

Python has the fast path (the zygote's own interpreter, tasks/sandbox/child.py "tests"
mode). Every other language is a job of mode "program" (tasks/sandbox/execute.py): files
written into the scratch directory, then steps — compile (or a syntax check), then run —
each an exec'd process under its own limits, inside the same bubblewrap as Python (no
network, read-only system, scratch only, rlimits, seccomp).

A runner is available when its toolchain is on this worker (`available_runners()` probes
once per process; nothing is installed or downloaded). Toolchains outside /usr (rustup's
~/.rustup, a JDK's /etc config) are bound read-only into the sandbox.

How a pass is decided, for every runner: the run step exits 0 AND its harness wrote this
job's nonce on fd 3, which it does only after the last test ended (per runner below). A
solution that exits 0 early (exit(0), process.exit(0), System.exit(0), `exit 0`) leaves no
nonce and fails (`no_result`, a crash).
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

PYTHON = "python"
# Spellings of the languages that have (or could have) a runner -> the runner's name.
ALIASES = {"py": "python", "python3": "python", "c++": "cpp", "cxx": "cpp", "cc": "cpp", "js": "javascript",
           "node": "javascript", "nodejs": "javascript", "rs": "rust", "sh": "shell", "bash": "shell"}  # fmt: skip


def canonical(lang: str | None) -> str:
    key = (lang or PYTHON).strip().lower()
    return ALIASES.get(key, key)


@dataclass(frozen=True)
class StepLimits:
    """One step's limits. `memory_mb` is RLIMIT_DATA; `address_mb` RLIMIT_AS (None: not set,
    for runtimes that reserve big virtual ranges up front: V8, the JVM)."""

    seconds: float
    memory_mb: int
    address_mb: int | None
    processes: bool  # may fork (compilers, shell scripts); otherwise threads only (seccomp)
    nproc: int = 4096  # RLIMIT_NPROC of the sandbox user (counts threads; fork is refused where not `processes`)
    file_mb: int = 16

    def child_limits(self) -> dict:
        return {"memory_bytes": self.memory_mb << 20, "address_bytes": None if self.address_mb is None else self.address_mb << 20,
                "file_bytes": self.file_mb << 20, "processes": self.nproc, "cpu_seconds": int(self.seconds) + 2}  # fmt: skip


COMPILE = StepLimits(seconds=60.0, memory_mb=2048, address_mb=None, processes=True, nproc=512, file_mb=256)


@dataclass(frozen=True)
class Runner:
    """One language: its tools (absolute paths, resolved), what the tests look like, the job."""

    language: str
    tools: dict = field(default_factory=dict)  # name -> absolute path on this worker
    binds: tuple = ()  # host folders outside /usr the tools need, bound read-only

    fence_tags: tuple = ()
    tests_guideline: str = ""  # for the teacher's prompt: what the tests must look like here
    self_test: tuple = ("", "")  # (solution, tests) that must pass: checks the toolchain inside the sandbox

    @property
    def toolchain(self) -> str:
        return ", ".join(self.tools.values())

    def job(self, code: str, tests: str, seconds: float, memory_mb: int) -> tuple[dict, float] | None:
        """The sandbox job and its overall timeout; None when the tests hold nothing this runner can run."""
        raise NotImplementedError

    def refine(self, result: dict) -> dict:
        """Name a failed run after what its output shows (an assertion, an exception, memory)."""
        if result.get("passed") or result.get("error") not in ("failed", "killed"):
            return result
        text = result.get("stderr") or ""
        for kind, pattern in self.failure_patterns():
            found = re.search(pattern, text)
            if found:  # the line that says what failed leads the detail (the audit keeps it short)
                line = text[text.rfind("\n", 0, found.start()) + 1 :].split("\n", 1)[0].strip()[:200]
                return {**result, "error": kind, "detail": f"{result.get('detail')}: {line}"}
        return {**result, "error": self.failed_kind if result["error"] == "failed" else "killed"}

    # A non-zero exit the output does not explain: the tests' own verdict (C's `return 1` from
    # main, a script's `exit 1`) or an error the runtime reported (node, the JVM).
    failed_kind = "exception"

    def failure_patterns(self) -> list[tuple[str, str]]:
        return []

    def _program(self, files: dict, harness: dict, steps: list[dict], env: dict | None = None) -> tuple[dict, float]:
        job = {"mode": "program", "files": files, "harness": harness, "steps": steps, "env": env or {}}
        return job, sum(s["seconds"] for s in steps)


def _step(name: str, argv: list[str], limits: StepLimits, compile: bool = False, report: bool = False) -> dict:
    return {"name": name, "argv": argv, "seconds": limits.seconds, "limits": limits.child_limits(),
            "processes": limits.processes, "compile": compile, "report": report}  # fmt: skip


# ---------------------------------------------------------------- the runners ----------------


class PythonRunner(Runner):
    """The zygote's own interpreter: solution, then tests, then each test_* / TestCase (child.py)."""

    def job(self, code, tests, seconds, memory_mb):
        return {"mode": "tests", "code": code, "tests": tests, "seconds": seconds}, seconds


_C_HARNESS = r"""/* ossforge harness: the nonce goes to fd 3 at exit, unless exit() was called early. */
#include <stdlib.h>
#include <unistd.h>
#include <stdio.h>
static volatile int ossforge_early_exit = 0;
void __real_exit(int) __attribute__((noreturn));
void __wrap_exit(int code) { ossforge_early_exit = 1; __real_exit(code); }
void __real__exit(int) __attribute__((noreturn));
void __wrap__exit(int code) { ossforge_early_exit = 1; __real__exit(code); }
static void ossforge_report(void) {
    if (ossforge_early_exit) return;
    fflush(NULL);
    const char nonce[] = "@@OSSFORGE_NONCE@@";
    if (write(3, nonce, sizeof nonce - 1) < 0) _exit(71);
}
__attribute__((constructor(101))) static void ossforge_register(void) { atexit(ossforge_report); }
#define main ossforge_solution_main
#include "solution.inc"
#undef main
#include "tests.inc"
"""
_CXX_HARNESS = _C_HARNESS.replace("#include <stdio.h>", "#include <stdio.h>\n#include <iostream>").replace(
    "void __real_exit(int)", 'extern "C" void __real_exit(int)').replace(
    "void __wrap_exit(int", 'extern "C" void __wrap_exit(int').replace(
    "void __real__exit(int)", 'extern "C" void __real__exit(int)').replace(
    "void __wrap__exit(int", 'extern "C" void __wrap__exit(int').replace(
    "fflush(NULL);", "std::cout.flush(); fflush(NULL);")  # fmt: skip
_WRAP = "-Wl,--wrap=exit,--wrap=_exit"

_C_FAILURES = [
    ("memory", r"std::bad_alloc|Cannot allocate memory|out of memory"),
    ("assertion", r"Assertion .* failed|assertion failed"),
    ("exception", r"terminate called|Segmentation fault"),
]


class CRunner(Runner):
    """C / C++: solution and tests in one translation unit. The tests are a main() whose
    asserts abort on failure; the solution's own main() is renamed away. The harness writes
    the nonce from an atexit handler registered before anything else, so only after main
    returned (exit()/_exit() called from the program are wrapped and mark an early exit)."""

    compiler_key = "cc"
    failed_kind = "assertion"  # main returned non-zero
    harness = _C_HARNESS
    flags = ("-std=gnu11",)

    def job(self, code, tests, seconds, memory_mb):
        run = StepLimits(seconds=seconds, memory_mb=memory_mb, address_mb=memory_mb + 64, processes=False)
        compile_argv = [self.tools[self.compiler_key], *self.flags, "-O1", "-pipe", "-w", "-o", "prog", "main.c" if
                        self.compiler_key == "cc" else "main.cpp", _WRAP, "-lm"]  # fmt: skip
        files = {"solution.inc": code, "tests.inc": tests}
        harness = {"main.c" if self.compiler_key == "cc" else "main.cpp": self.harness}
        return self._program(files, harness, [_step("compile", compile_argv, COMPILE, compile=True),
                                              _step("run", ["./prog"], run, report=True)])  # fmt: skip

    def failure_patterns(self):
        return _C_FAILURES


class CppRunner(CRunner):
    compiler_key = "c++"
    harness = _CXX_HARNESS
    flags = ("-std=gnu++17",)


_JS_HARNESS = """'use strict';
// ossforge harness: the nonce goes to fd 3 once the event loop is empty (every test, sync
// or async, settled); process.exit() before that never reaches it.
const ossforgeFs = require('fs');
require('./main.js');
process.once('beforeExit', () => { ossforgeFs.writeSync(3, '@@OSSFORGE_NONCE@@'); });
"""


class NodeRunner(Runner):
    """JavaScript on node: solution then tests in one CommonJS module (tests in their own
    block, so both may `require('assert')`); a failing check throws. Syntax checked first."""

    def job(self, code, tests, seconds, memory_mb):
        node = self.tools["node"]
        heap = max(64, memory_mb // 2)
        run = StepLimits(seconds=seconds, memory_mb=memory_mb + 512, address_mb=None, processes=False)
        check = StepLimits(seconds=min(COMPILE.seconds, 30.0), memory_mb=1024, address_mb=None, processes=False)
        files = {"main.js": f"{code}\n{{\n{tests}\n}}\n"}
        return self._program(files, {"harness.js": _JS_HARNESS}, [
            _step("syntax", [node, "--check", "main.js"], check, compile=True),
            _step("run", [node, f"--max-old-space-size={heap}", "harness.js"], run, report=True),
        ], env={"OPENSSL_CONF": "/dev/null"})  # the system's openssl.cnf is not in the sandbox  # fmt: skip

    def failure_patterns(self):
        return [("memory", r"heap out of memory|Fatal process out of memory|RangeError: Array buffer allocation"),
                ("assertion", r"AssertionError")]  # fmt: skip


_RUST_HARNESS = """// ossforge harness: the solution, its tests, and one more test that sorts after every other
// name and, run on one thread, runs last: it writes the nonce on fd 3.
include!("solution.rs");
include!("tests.rs");
#[test]
fn \u03c9_ossforge_report() {
    use std::io::Write;
    use std::os::unix::io::FromRawFd;
    let mut report = unsafe { std::fs::File::from_raw_fd(3) };
    report.write_all(b"@@OSSFORGE_NONCE@@").unwrap();
}
"""


class RustRunner(Runner):
    """Rust: a test crate (`rustc --test`): the tests are #[test] functions (or a
    #[cfg(test)] mod tests). libtest runs them on one thread in name order; the harness'
    own test sorts last and reports the nonce; any failing test makes the exit status 101.
    At least one test of the sample's own must have run ("running N tests", N >= 2)."""

    def job(self, code, tests, seconds, memory_mb):
        run = StepLimits(seconds=seconds, memory_mb=memory_mb, address_mb=memory_mb + 256, processes=False)
        # The linker by its real path: /usr/bin/cc is a link through /etc/alternatives, not in the sandbox.
        compile_argv = [self.tools["rustc"], "--test", "--edition", "2021", "-C", "debuginfo=0", "-C",
                        f"linker={self.tools['cc']}", "-A", "warnings", "-o", "prog", "main.rs"]  # fmt: skip
        files = {"solution.rs": code, "tests.rs": tests}
        return self._program(files, {"main.rs": _RUST_HARNESS}, [
            _step("compile", compile_argv, COMPILE, compile=True),
            _step("run", ["./prog", "--test-threads=1", "-q"], run, report=True),
        ])  # fmt: skip

    def refine(self, result):
        if result.get("passed"):
            m = re.search(r"running (\d+) tests?", result.get("stderr") or "")
            if not m or int(m.group(1)) < 2:
                return {**result, "passed": False, "error": "no_tests", "detail": "run: no #[test] of the sample ran"}
            return {**result, "tests_run": int(m.group(1)) - 1}
        return super().refine(result)

    def failure_patterns(self):
        return [("memory", r"memory allocation of \d+ bytes failed"),
                ("assertion", r"panicked at|test result: FAILED")]  # fmt: skip


_JAVA_HARNESS = """// ossforge harness: the tests' main, then the nonce on fd 3. System.exit() before that never reaches it.
public final class OssforgeHarness {
    public static void main(String[] args) throws Throwable {
        @@TESTS@@.main(args);
        try (java.io.FileOutputStream report = new java.io.FileOutputStream("/proc/self/fd/3")) {
            report.write("@@OSSFORGE_NONCE@@".getBytes());
        }
    }
}
"""
_JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:ActiveProcessorCount=1", "-XX:-UsePerfData",
              "-Xss8m"]  # fmt: skip
_PUBLIC_CLASS = re.compile(r"^\s*public\s+(?:(?:final|abstract|sealed)\s+)*(?:class|interface|enum|record)\s+(\w+)", re.M)
_ANY_CLASS = re.compile(r"^\s*(?:public\s+)?(?:(?:final|abstract|static)\s+)*class\s+(\w+)", re.M)
_PACKAGE = re.compile(r"^\s*package\s+[\w.]+\s*;", re.M)


class JavaRunner(Runner):
    """Java: solution and tests in their own files (named after their public class), compiled
    together. The tests are a class with `public static void main` that throws on failure
    (`assert` is enabled, -ea); the harness calls it, then writes the nonce."""

    def job(self, code, tests, seconds, memory_mb):
        code, tests = _PACKAGE.sub("", code), _PACKAGE.sub("", tests)  # one default package for all
        entry = _tests_class(tests)
        if entry is None:  # no class with a main method: nothing to run
            return None
        heap = max(64, memory_mb // 2)
        files = {_java_file(code, "Solution"): code}
        files.setdefault(_java_file(tests, "OssforgeTests"), tests)
        if len(files) < 2:  # both declare the same public class
            files = {"Solution.java": code, "OssforgeTests.java": tests}
        harness = {"OssforgeHarness.java": _JAVA_HARNESS.replace("@@TESTS@@", entry)}
        javac = [self.tools["javac"], *(f"-J{f}" for f in _JVM_FLAGS), "-J-Xmx512m", "-nowarn", "-encoding", "UTF-8",
                 "-d", "classes", *sorted(files), "OssforgeHarness.java"]  # fmt: skip
        run = StepLimits(seconds=seconds, memory_mb=memory_mb + 512, address_mb=None, processes=False)
        java = [self.tools["java"], *_JVM_FLAGS, f"-Xmx{heap}m", "-ea", "-cp", "classes", "OssforgeHarness"]
        return self._program(files, harness, [_step("compile", javac, COMPILE, compile=True),
                                              _step("run", java, run, report=True)])  # fmt: skip

    def failure_patterns(self):
        return [("memory", r"OutOfMemoryError"), ("assertion", r"AssertionError")]


def _java_file(source: str, default: str) -> str:
    m = _PUBLIC_CLASS.search(source)
    return f"{m.group(1) if m else default}.java"


def _tests_class(tests: str) -> str | None:
    """The tests' class that declares main: the class declared last before the first main()."""
    main = re.search(r"static\s+void\s+main\s*\(", tests)
    if main is None:
        return None
    names = [m for m in _ANY_CLASS.finditer(tests) if m.start() < main.start()]
    return names[-1].group(1) if names else None


_SHELL_HARNESS = """# ossforge harness: the solution, then the tests, in this shell; then the nonce on fd 3.
. ./solution.sh
. ./tests.sh
printf '%s' '@@OSSFORGE_NONCE@@' >&3
"""


class ShellRunner(Runner):
    """Shell (bash): the solution's functions, then the tests, sourced into one bash; a
    failing test exits non-zero (`[ "$(f 2)" = 4 ] || exit 1`). Syntax checked first
    (bash -n). The harness writes the nonce only if the tests ran to their end."""

    def job(self, code, tests, seconds, memory_mb):
        bash = self.tools["bash"]
        run = StepLimits(seconds=seconds, memory_mb=memory_mb, address_mb=memory_mb + 256, processes=True, nproc=256)
        check = StepLimits(seconds=10.0, memory_mb=256, address_mb=512, processes=False)
        files = {"solution.sh": code, "tests.sh": tests}
        return self._program(files, {"harness.sh": _SHELL_HARNESS}, [
            _step("syntax", [bash, "-n", "solution.sh"], check, compile=True),
            _step("syntax", [bash, "-n", "tests.sh"], check, compile=True),
            _step("run", [bash, "harness.sh"], run, report=True),
        ])  # fmt: skip

    failed_kind = "assertion"  # a test said no: exit status is the only language a script has


# ---------------------------------------------------------------- the registry -------------

# language -> (runner class, {tool name: command to find}, fence tags, tests guideline, self-test pair)
_SPECS = {
    "c": (CRunner, {"cc": "gcc"}, ("c",),
          "C tests: an `int main(void)` that checks the solution with assert() from <assert.h>; "
          "the solution has no main of its own (one is renamed away).",
          ("int add(int a, int b) { return a + b; }\n", "#include <assert.h>\nint main(void) { assert(add(1, 2) == 3); return 0; }\n")),
    "cpp": (CppRunner, {"c++": "g++"}, ("cpp", "c++", "cc", "cxx"),
            "C++ tests: an `int main()` that checks the solution with assert() from <cassert>; "
            "the solution's own main, if any, is renamed away.",
            ("#include <vector>\nint add(int a, int b) { return a + b; }\n",
             "#include <cassert>\nint main() { assert(add(1, 2) == 3); }\n")),
    "javascript": (NodeRunner, {"node": "node"}, ("javascript", "js", "node", "nodejs"),
                   "JavaScript (Node.js) tests: statements after the solution in the same file, checking it with "
                   "`const assert = require('assert');`; a failed check throws.",
                   ("function add(a, b) { return a + b; }\n", "const assert = require('assert');\nassert.strictEqual(add(1, 2), 3);\n")),
    "rust": (RustRunner, {"rustc": "rustc", "cc": "cc"}, ("rust", "rs"),
             "Rust tests: `#[test]` functions (or a `#[cfg(test)] mod tests { use super::*; ... }`) using assert!/assert_eq!.",
             ("pub fn add(a: i32, b: i32) -> i32 { a + b }\n",
              "#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn adds() { assert_eq!(add(1, 2), 3); }\n}\n")),
    "java": (JavaRunner, {"javac": "javac", "java": "java"}, ("java",),
             "Java tests: a class with `public static void main(String[] args)` that checks the solution and "
             "throws (or uses `assert`, enabled) on failure.",
             ("public class Solution {\n    public static int add(int a, int b) { return a + b; }\n}\n",
              "public class SolutionTest {\n    public static void main(String[] args) {\n"
              "        if (Solution.add(1, 2) != 3) throw new AssertionError(\"add\");\n    }\n}\n")),
    "shell": (ShellRunner, {"bash": "bash"}, ("bash", "sh", "shell", "zsh"),
              "Shell (bash) tests: commands run after the solution in the same bash that `exit 1` when a check fails, "
              "e.g. `[ \"$(add 1 2)\" = 3 ] || exit 1`.",
              ("add() { echo $(( $1 + $2 )); }\n", "[ \"$(add 1 2)\" = 3 ] || exit 1\n")),
}  # fmt: skip
PYTHON_GUIDELINE = "Python tests: `assert` statements, `test_*` functions or a unittest.TestCase, run after the solution."


def _rustc(path: str) -> str | None:
    """rustup's `rustc` is a proxy that reads ~/.rustup at each call: use the toolchain's own binary."""
    try:
        sysroot = subprocess.run([path, "--print", "sysroot"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    real = os.path.join(sysroot, "bin", "rustc")
    return real if sysroot and os.access(real, os.X_OK) else None


def _probe(language: str) -> Runner | None:
    cls, wanted, tags, guideline, self_test = _SPECS[language]
    tools = {}
    for name, command in wanted.items():
        found = shutil.which(command)
        if found is None:
            return None
        tools[name] = _rustc(found) if name == "rustc" else os.path.realpath(found)
        if tools[name] is None:
            return None
    binds = set()
    for path in tools.values():
        home = os.path.dirname(os.path.dirname(path))  # the toolchain's prefix (…/bin/tool)
        if not path.startswith("/usr/"):
            binds.add(home)
    if language == "java":  # Debian's JDK keeps jvm.cfg and its security files in /etc/java-NN-openjdk
        binds.update(glob.glob("/etc/java-*"))
    return cls(language, tools, tuple(sorted(binds)), tags, guideline, self_test)


@functools.lru_cache(maxsize=None)
def available_runners() -> dict[str, Runner]:
    """Every runner whose toolchain this worker has, by language; Python always."""
    runners: dict[str, Runner] = {PYTHON: PythonRunner(PYTHON, {"python": "(the sandbox's interpreter)"}, (),
                                                       ("python", "py", "python3"), PYTHON_GUIDELINE)}  # fmt: skip
    for language in _SPECS:
        runner = _probe(language)
        if runner is not None:
            runners[language] = runner
    return runners


def toolchain_binds(runners: dict[str, Runner]) -> tuple[str, ...]:
    return tuple(sorted({b for r in runners.values() for b in r.binds}))


def all_tests_guidelines() -> list[str]:
    """Every language's tests guideline, Python's first (for a prompt that lets the teacher
    choose the language)."""
    return [PYTHON_GUIDELINE, *(spec[3] for spec in _SPECS.values())]


def tests_guideline(language: str) -> str:
    """What the teacher should write as tests for a solution in `language` (any worker)."""
    spec = _SPECS.get(canonical(language))
    return spec[3] if spec else PYTHON_GUIDELINE

