"""Runners for languages other than Python (tasks/sandbox/runners.py), through the validation
step and the real sandbox: per language whose toolchain this machine has, a passing pair
passes; a failing assert, a compile error, an endless loop, an early exit(0), a write outside
the scratch directory and a network connection each fail with their reason. A language whose
toolchain is missing is skipped (CI installs node and g++; .ci/run)."""

from __future__ import annotations

import socket
import threading

import pyarrow as pa
import pytest

from tasks.sandbox.runners import available_runners
from tasks.sandbox.runners import tests_guideline as guideline  # not test_-named: pytest would collect it
from tasks.validation.validate import STATUS, ValidationConfig, Validator, run_language, validation_summary

CFG = ValidationConfig(seconds=4.0, workers=2, unverified="drop")
SENTINEL = "SENTINEL"  # replaced by a host path outside the sandbox
PORT = "PORT"  # replaced by a listening port on the host's loopback

# language -> case -> (solution, tests, expected status or drop reason)
CASES = {
    "c": {
        "passes": ("int add(int a, int b) { return a + b; }\n",
                   "#include <assert.h>\nint main(void) { assert(add(1, 2) == 3); assert(add(-1, 1) == 0); return 0; }\n",
                   "passed"),
        "keeps_its_own_main": ("#include <stdio.h>\nint add(int a, int b) { return a + b; }\n"
                               "int main(void) { printf(\"%d\\n\", add(2, 2)); return 0; }\n",
                               "#include <assert.h>\nint main(void) { assert(add(1, 2) == 3); }\n", "passed"),
        "failing_assert": ("int add(int a, int b) { return a - b; }\n",
                           "#include <assert.h>\nint main(void) { assert(add(1, 2) == 3); return 0; }\n", "tests_failed"),
        "main_returns_1": ("int add(int a, int b) { return a - b; }\n",
                           "int main(void) { return add(1, 2) == 3 ? 0 : 1; }\n", "tests_failed"),
        "compile_error": ("int add(int a, int b) { return a + }\n", "int main(void) { return add(1, 2) != 3; }\n",
                          "syntax_error"),
        "endless_loop": ("int add(int a, int b) { for (;;) {} }\n", "int main(void) { return add(1, 2) != 3; }\n",
                         "timeout"),
        "early_exit": ("#include <stdlib.h>\nint add(int a, int b) { exit(0); }\n",
                       "#include <assert.h>\nint main(void) { assert(add(1, 2) == 4); return 0; }\n", "crash"),
        "forges_a_report": ("#include <unistd.h>\nint add(int a, int b) { write(3, \"0123456789abcdef0123456789abcdef\", 32);"
                            " return a + b; }\n", "int main(void) { return add(1, 2) != 3; }\n", "forged_result"),
        "floods_the_report_channel": ("#include <string.h>\n#include <unistd.h>\nstatic char junk[1 << 20];\n"
                                      "int add(int a, int b) { memset(junk, 'x', sizeof junk); write(3, junk, sizeof junk); return a + b; }\n",
                                      "int main(void) { return add(1, 2) != 3; }\n", "forged_result"),
        "writes_outside_scratch": ("#include <stdio.h>\n#include <assert.h>\nvoid touch(void) { FILE *f = fopen(\"SENTINEL\", \"w\");"
                                   " assert(f != NULL); fputs(\"pwned\", f); fclose(f); }\n",
                                   "int main(void) { touch(); return 0; }\n", "tests_failed"),
        "kills_its_parent": ("#include <assert.h>\n#include <signal.h>\n#include <unistd.h>\n"
                             "void hit(void) { assert(kill(getppid(), SIGKILL) == 0); }\n",
                             "int main(void) { hit(); return 0; }\n", "tests_failed"),
        "reads_a_secret": ("#include <assert.h>\n#include <stdlib.h>\nvoid peek(void) { assert(getenv(\"OSSFORGE_RUNNER_SECRET\")); }\n",
                           "int main(void) { peek(); return 0; }\n", "tests_failed"),
        "connects_to_the_host": ("#include <arpa/inet.h>\n#include <assert.h>\n#include <sys/socket.h>\n"
                                 "void dial(void) { int s = socket(AF_INET, SOCK_STREAM, 0); assert(s >= 0);"
                                 " struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(PORT);"
                                 " a.sin_addr.s_addr = htonl(0x7f000001); assert(connect(s, (void *)&a, sizeof a) == 0); }\n",
                                 "int main(void) { dial(); return 0; }\n", "tests_failed"),
    },
    "cpp": {
        "passes": ("#include <vector>\n#include <numeric>\nint total(const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); }\n"
                   "int main() { return 0; }\n",
                   "#include <cassert>\nint main() { assert(total({1, 2, 3}) == 6); }\n", "passed"),
        "failing_assert": ("int add(int a, int b) { return a - b; }\n",
                           "#include <cassert>\nint main() { assert(add(1, 2) == 3); }\n", "tests_failed"),
        "uncaught_exception": ("#include <stdexcept>\nint add(int, int) { throw std::runtime_error(\"no\"); }\n",
                               "int main() { return add(1, 2) != 3; }\n", "runtime_error"),
        "compile_error": ("int add(int a, int b) { return a + b }\n", "int main() { return add(1, 2) != 3; }\n",
                          "syntax_error"),
        "endless_loop": ("int add(int a, int b) { volatile int x = 0; while (true) { x++; } }\n",
                         "int main() { return add(1, 2) != 3; }\n", "timeout"),
        "early_exit": ("#include <cstdlib>\nint add(int a, int b) { std::exit(0); }\n",
                       "#include <cassert>\nint main() { assert(add(1, 2) == 4); }\n", "crash"),
        "quick_exit": ("#include <unistd.h>\nint add(int a, int b) { _exit(0); }\n",
                       "#include <cassert>\nint main() { assert(add(1, 2) == 4); }\n", "crash"),
        "writes_outside_scratch": ("#include <fstream>\n#include <cassert>\nvoid touch() { std::ofstream f(\"SENTINEL\");"
                                   " assert(f.is_open()); f << \"pwned\"; }\n",
                                   "int main() { touch(); }\n", "tests_failed"),
        "memory_bomb": ("#include <vector>\nvoid grow() { std::vector<std::vector<char>> v; while (true) v.emplace_back(1 << 20, 'x'); }\n",
                        "int main() { grow(); }\n", "memory"),
        "forks": ("#include <unistd.h>\n#include <cassert>\nvoid spawn() { assert(fork() >= 0); }\n",
                  "int main() { spawn(); }\n", "tests_failed"),
    },
    "javascript": {
        "passes": ("function add(a, b) { return a + b; }\nmodule.exports = { add };\n",
                   "const assert = require('assert');\nassert.strictEqual(add(1, 2), 3);\n"
                   "setTimeout(() => assert.strictEqual(add(2, 2), 4), 10);\n", "passed"),
        "failing_assert": ("function add(a, b) { return a - b; }\n",
                           "const assert = require('assert');\nassert.strictEqual(add(1, 2), 3);\n", "tests_failed"),
        "failing_async_assert": ("function add(a, b) { return a - b; }\n",
                                 "const assert = require('assert');\n"
                                 "Promise.resolve().then(() => assert.strictEqual(add(1, 2), 3));\n", "tests_failed"),
        "runtime_error": ("function add(a, b) { return a.nope(); }\n", "add(1, 2);\n", "runtime_error"),
        "syntax_error": ("function add(a, b) { return a + ; }\n", "add(1, 2);\n", "syntax_error"),
        "endless_loop": ("function add(a, b) { while (true) {} }\n", "add(1, 2);\n", "timeout"),
        "early_exit": ("function add(a, b) { process.exit(0); }\n",
                       "const assert = require('assert');\nassert.strictEqual(add(1, 2), 4);\n", "crash"),
        "exit_after_a_tick": ("function add(a, b) { setTimeout(() => process.exit(0), 0); return a + b; }\n",
                              "const assert = require('assert');\nassert.strictEqual(add(1, 2), 3);\n"
                              "setTimeout(() => assert.strictEqual(add(1, 1), 3), 50);\n", "crash"),
        "writes_outside_scratch": ("const fs = require('fs');\nfunction touch() { fs.writeFileSync('SENTINEL', 'pwned'); }\n",
                                   "touch();\n", "runtime_error"),
        "starts_a_process": ("const cp = require('child_process');\n", "cp.execFileSync('/bin/true');\n", "runtime_error"),
        "connects_to_the_host": ("const net = require('net');\n",
                                 "const s = net.connect(PORT, '127.0.0.1');\ns.on('error', (e) => { throw e; });\n"
                                 "s.on('connect', () => s.end());\n", "runtime_error"),
    },
    "rust": {
        "passes": ("pub fn add(a: i32, b: i32) -> i32 { a + b }\n",
                   "#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn adds() { assert_eq!(add(1, 2), 3); }\n"
                   "    #[test]\n    fn zero() { assert_eq!(add(0, 0), 0); }\n}\n", "passed"),
        "failing_assert": ("pub fn add(a: i32, b: i32) -> i32 { a - b }\n",
                           "#[test]\nfn adds() { assert_eq!(add(1, 2), 3); }\n", "tests_failed"),
        "compile_error": ("pub fn add(a: i32, b: i32) -> i32 { a + \"b\" }\n", "#[test]\nfn adds() { assert_eq!(add(1, 2), 3); }\n",
                          "syntax_error"),
        "no_tests": ("pub fn add(a: i32, b: i32) -> i32 { a + b }\n", "fn main() { assert_eq!(add(1, 2), 3); }\n",
                     "no_tests"),
        "endless_loop": ("pub fn add(_a: i32, _b: i32) -> i32 { loop { std::hint::spin_loop(); } }\n",
                         "#[test]\nfn adds() { assert_eq!(add(1, 2), 3); }\n", "timeout"),
        "early_exit": ("pub fn add(_a: i32, _b: i32) -> i32 { std::process::exit(0) }\n",
                       "#[test]\nfn adds() { assert_eq!(add(1, 2), 4); }\n", "crash"),
        "writes_outside_scratch": ("pub fn touch() { std::fs::write(\"SENTINEL\", \"pwned\").unwrap(); }\n",
                                   "#[test]\nfn touches() { touch(); }\n", "tests_failed"),
        "connects_to_the_host": ("pub fn dial() { std::net::TcpStream::connect(\"127.0.0.1:PORT\").unwrap(); }\n",
                                 "#[test]\nfn dials() { dial(); }\n", "tests_failed"),
    },
    "java": {
        "passes": ("public class Calc {\n    public static int add(int a, int b) { return a + b; }\n}\n",
                   "public class CalcTest {\n    public static void main(String[] args) {\n"
                   "        assert Calc.add(1, 2) == 3;\n        if (Calc.add(2, 2) != 4) throw new AssertionError();\n    }\n}\n",
                   "passed"),
        "failing_assert": ("public class Calc {\n    public static int add(int a, int b) { return a - b; }\n}\n",
                           "public class CalcTest {\n    public static void main(String[] args) {\n"
                           "        assert Calc.add(1, 2) == 3 : \"add\";\n    }\n}\n", "tests_failed"),
        "runtime_error": ("public class Calc {\n    public static int add(int a, int b) { return a / 0; }\n}\n",
                          "class T {\n    public static void main(String[] args) { Calc.add(1, 2); }\n}\n", "runtime_error"),
        "compile_error": ("public class Calc {\n    public static int add(int a, int b) { return a + ; }\n}\n",
                          "class T {\n    public static void main(String[] args) { Calc.add(1, 2); }\n}\n", "syntax_error"),
        "endless_loop": ("public class Calc {\n    public static int add(int a, int b) { while (true) {} }\n}\n",
                         "class T {\n    public static void main(String[] args) { Calc.add(1, 2); }\n}\n", "timeout"),
        "early_exit": ("public class Calc {\n    public static int add(int a, int b) { System.exit(0); return 0; }\n}\n",
                       "class T {\n    public static void main(String[] args) { assert Calc.add(1, 2) == 4; }\n}\n", "crash"),
        "writes_outside_scratch": ("public class Calc {\n    public static void touch() throws Exception {\n"
                                   "        java.nio.file.Files.writeString(java.nio.file.Path.of(\"SENTINEL\"), \"pwned\");\n    }\n}\n",
                                   "class T {\n    public static void main(String[] args) throws Exception { Calc.touch(); }\n}\n",
                                   "runtime_error"),
        "connects_to_the_host": ("public class Calc {\n    public static void dial() throws Exception {\n"
                                 "        new java.net.Socket(\"127.0.0.1\", PORT).close();\n    }\n}\n",
                                 "class T {\n    public static void main(String[] args) throws Exception { Calc.dial(); }\n}\n",
                                 "runtime_error"),
    },
    "shell": {
        "passes": ("add() { echo $(( $1 + $2 )); }\n", "[ \"$(add 1 2)\" = 3 ] || exit 1\n[ \"$(add 2 2)\" = 4 ] || exit 1\n",
                   "passed"),
        "failing_test": ("add() { echo $(( $1 - $2 )); }\n", "[ \"$(add 1 2)\" = 3 ] || exit 1\n", "tests_failed"),
        "syntax_error": ("add() { echo $(( $1 + $2 )) \n", "[ \"$(add 1 2)\" = 3 ] || exit 1\n", "syntax_error"),
        "endless_loop": ("add() { while :; do :; done; }\n", "add 1 2\n", "timeout"),
        "early_exit": ("add() { exit 0; }\n", "add 1 2\n[ \"$(add 1 2)\" = 4 ] || exit 1\n", "crash"),
        # A leftover holding the output pipe neither hangs the verdict nor outlives the job.
        "leaves_a_background_process": ("bg() { sleep 60 & }\n", "bg\n[ \"$(echo ok)\" = ok ] || exit 1\n", "passed"),
        "writes_outside_scratch": ("touch_it() { echo pwned > SENTINEL; }\n", "touch_it || exit 1\n", "tests_failed"),
        "connects_to_the_host": ("dial() { exec 5<>/dev/tcp/127.0.0.1/PORT; }\n", "dial || exit 1\n", "tests_failed"),
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def listener():
    """A TCP listener on the host's loopback that records any connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    seen, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                seen.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join()
    server.close()


def _needs(language: str):
    if language not in available_runners():
        pytest.skip(f"no {language} toolchain on this machine")


@pytest.mark.parametrize("language", list(CASES))
def test_each_runner_scores_its_planted_cases(language, tmp_path, listener, monkeypatch):
    _needs(language)
    monkeypatch.setenv("OSSFORGE_RUNNER_SECRET", "s3cret")  # never inside the sandbox
    port, connections = listener
    sentinel = tmp_path / "outside.txt"
    cases = CASES[language]
    fill = lambda text: text.replace(SENTINEL, str(sentinel)).replace(PORT, str(port))  # noqa: E731
    table = pa.table({
        "id": list(cases),
        "solution": [f"```{language}\n{fill(c[0])}```" for c in cases.values()],
        "tests": [fill(c[1]) for c in cases.values()],
        "lang": [language] * len(cases),
    })  # fmt: skip
    with Validator(CFG) as validator:
        out = validator.apply(table)
        summary = validation_summary(validator)
    got = dict(zip(out.kept["id"].to_pylist(), out.kept[STATUS].to_pylist()))
    got.update(zip(out.audit["id"].to_pylist(), out.audit["reason"].to_pylist()))
    details = dict(zip(out.audit["id"].to_pylist(), out.audit["detail"].to_pylist()))
    assert got == {name: case[2] for name, case in cases.items()}, details
    assert not sentinel.exists()  # the write never reached the host
    assert connections == []  # nor did the connection
    assert summary["by_language"][language]["passed"] == sum(c[2] == "passed" for c in cases.values())
    assert summary["isolation"] == "bwrap"


def test_a_language_without_a_runner_stays_unverified():
    keep = CFG.model_copy(update={"unverified": "keep"})
    table = pa.table({"solution": ["func add() {}"], "tests": ["assert(true)"], "lang": ["swift"]})
    with Validator(keep) as validator:
        out = validator.apply(table)
        assert validation_summary(validator)["by_language"] == {"swift": {"unverified": 1}}
    assert out.kept[STATUS].to_pylist() == ["unverified"]


def test_a_solution_runs_in_the_language_its_fence_names():
    """The seed was C++, the teacher answered in Python: it runs (and passes) as Python."""
    assert run_language("```python\ndef f(): pass\n```", "cpp") == "python"
    assert run_language("def f(): pass", "cpp") == "cpp"
    assert run_language("```\nint f();\n```", "C++") == "cpp"
    table = pa.table({"solution": ["```python\ndef add(a, b):\n    return a + b\n```"],
                      "tests": ["assert add(1, 2) == 3"], "lang": ["cpp"]})  # fmt: skip
    with Validator(CFG) as validator:
        out = validator.apply(table)
        assert validation_summary(validator)["by_language"] == {"python": {"passed": 1}}
    assert out.kept[STATUS].to_pylist() == ["passed"]


def test_the_probe_finds_only_what_is_on_the_path(monkeypatch, tmp_path):
    """A worker without toolchains has Python only; the probe neither fails nor guesses."""
    available_runners.cache_clear()
    try:
        monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no gcc, node, javac, rustc, bash
        assert list(available_runners()) == ["python"]
    finally:
        available_runners.cache_clear()
    monkeypatch.undo()
    for language in ("python", "c", "cpp", "javascript", "rust", "java", "shell"):
        assert guideline(language)
