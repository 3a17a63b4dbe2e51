"""The sandbox against samples that try to cheat or escape.

Each case plays a hostile generated program. Many run with some inner layers switched off
(`guards=`), to show that the outer ones hold alone: bubblewrap's namespaces and read-only
mounts, the worker's seccomp filter, the zygote's judging of the report channel. Every
case must end as a failed result with a reason, and the host must be unharmed.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import textwrap

import pytest

from tasks.sandbox import channel, isolation, runner
from tasks.sandbox.runner import Sandbox, SandboxLimits, SandboxUnavailable

LIMITS = SandboxLimits(memory_bytes=1 << 30, startup_seconds=2.0)
NO_PYTHON_GUARD = ("rlimits", "seccomp")  # the kernel layers only
OS_ONLY = ("rlimits",)  # bubblewrap + rlimits: no seccomp, no Python guard


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(2, LIMITS) as box:
        if box.isolation != "bwrap":
            pytest.fail("bubblewrap must be installed where the tests run (.ci/run installs it)")
        yield box


def run(box, code, guards=None, seconds=2.0, mode="check", **job):
    job = {"mode": mode, "code": textwrap.dedent(code), "seconds": seconds, **job}
    if guards is not None:
        job["guards"] = guards
    return box.run(job, seconds)


def failed(result, *kinds):
    assert result["passed"] is False, result
    assert result["error"] in kinds, result
    return result


# --- forged results ---------------------------------------------------------------------------

FORGE_ALL_FDS = """
import json, os, pickle, struct
fake = {"passed": True, "error": None}
body = json.dumps({"nonce": "0" * 32, "result": fake}).encode()
payloads = [pickle.dumps(fake), struct.pack(">IQ", len(body), 0) + body, b'{"passed": true}']
for fd in range(1024):
    for data in payloads:
        try:
            os.write(fd, data)
        except OSError:
            pass
"""


@pytest.mark.parametrize("guards", [None, NO_PYTHON_GUARD, OS_ONLY])
def test_a_fake_pass_on_every_descriptor_then_a_failing_assert_fails(sandbox, guards):
    result = run(sandbox, FORGE_ALL_FDS + "assert False, 'the real verdict'\n", guards)
    failed(result, "forged_result")


def test_a_fake_pass_then_an_early_exit_fails(sandbox):
    # No Python guard, so os._exit is the real one: the forged frame is the only report.
    failed(run(sandbox, FORGE_ALL_FDS + "os._exit(0)\n", NO_PYTHON_GUARD), "forged_result")


def test_flooding_the_report_channel_fails_and_is_bounded(sandbox):
    code = "import os\nchunk = b'x' * (1 << 20)\nfor _ in range(64):\n    os.write(3, chunk)\n"
    result = failed(run(sandbox, code, NO_PYTHON_GUARD, seconds=5.0), "forged_result")
    assert "too many bytes" in result["detail"]


def test_a_frame_that_copies_the_harness_format_but_not_its_nonce_fails(sandbox):
    code = """
    import json, os, struct
    body = json.dumps({"nonce": os.urandom(16).hex(), "result": {"passed": True}}).encode()
    os.write(3, struct.pack(">IQ", len(body), 0) + body)
    os._exit(0)
    """
    failed(run(sandbox, code, NO_PYTHON_GUARD), "forged_result")


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.write(os.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY), b'{\"passed\": true}')\n",
        "import os\nos.write(os.open(f'/proc/{os.getppid()}/fd/0', os.O_WRONLY), b'junk')\n",
        "import os\nopen(f'/proc/{os.getppid()}/mem', 'rb').read(1)\n",
        "import os\nos.listdir(f'/proc/{os.getppid()}/fd')\n",
    ],
    ids=["zygote-stdout", "zygote-stdin", "zygote-memory", "zygote-fds"],
)
def test_the_zygotes_channel_and_memory_are_out_of_reach(sandbox, code):
    """The zygote is not dumpable: its descriptors and memory are closed to a worker, even
    through /proc and with every inner guard off."""
    result = failed(run(sandbox, code, OS_ONLY), "exception")
    assert "PermissionError" in result["detail"], result
    assert run(sandbox, "assert True\n")["passed"] is True  # and the channel still works


@pytest.mark.parametrize(
    "payload",
    [
        "[1, 2, 3]",  # not an object
        '"passed"',
        '{"nonce": NONCE, "result": [true]}',  # a result that is not a dict
        '{"nonce": NONCE, "result": {"passed": "yes"}}',  # wrong types
        '{"nonce": NONCE, "result": {"passed": true, "__reduce__": 1}}',  # unknown fields
        '{"nonce": NONCE, "result": {"passed": true, "seconds": NaN}}',
    ],
)
def test_non_dict_or_malformed_payloads_fail(sandbox, payload):
    """Even with the real nonce (read from the harness' frame), a report of the wrong shape fails."""
    code = f"""
    import os, struct, sys
    nonce = sys._getframe(1).f_locals.get("nonce") or ""
    body = {payload!r}.replace("NONCE", '"' + nonce + '"').encode()
    os.write(3, struct.pack(">IQ", len(body), 0) + body)
    os._exit(0)
    """
    failed(run(sandbox, code, NO_PYTHON_GUARD), "forged_result", "no_result")


def test_a_crafted_pickle_never_runs_on_the_host(sandbox, tmp_path):
    """A pickle whose loading would create a file: the host never loads what the sandbox sends."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = pickle.dumps(Evil())
    code = f"""
    import os
    for fd in range(1024):
        try:
            os.write(fd, {evil!r})
        except OSError:
            pass
    os._exit(0)
    """
    failed(run(sandbox, code, NO_PYTHON_GUARD), "forged_result")
    assert not marker.exists()
    with pytest.raises(channel.ChannelError):
        channel.decode_frame(evil)


def test_garbage_from_a_zygote_is_a_failure_not_a_crash(monkeypatch):
    """The host's side: a 'zygote' that greets, then answers with garbage or a pickle."""
    for answer in (b"\x00" * 12 + b"junk", channel.HEADER.pack(5, 0) + b"[1,2]", pickle.dumps({"passed": True})):
        greeting = channel.encode_frame({"hello": True, "layers": []})
        script = (
            "import sys\n"
            f"sys.stdout.buffer.write({greeting!r}); sys.stdout.flush()\n"
            "sys.stdin.buffer.read(1)\n"
            f"sys.stdout.buffer.write({answer!r}); sys.stdout.flush()\n"
            "import time; time.sleep(30)\n"
        )
        monkeypatch.setattr(runner, "zygote_argv", lambda mode, scratch, s=script: [sys.executable, "-c", s])
        with Sandbox(1, LIMITS) as box:
            result = box.run({"mode": "check", "code": "pass", "seconds": 1.0}, 1.0)
        assert result["passed"] is False and result["error"] == "sandbox_error", result


# --- early exits: a pass is positive evidence ---------------------------------------------------


@pytest.mark.parametrize(
    ("tests", "guards", "kinds"),
    [
        ("import sys\nsys.exit(0)\nassert f() == 2\n", None, {"system_exit"}),
        ("raise SystemExit\nassert f() == 2\n", None, {"system_exit"}),
        ("import os\nos._exit(0)\nassert f() == 2\n", NO_PYTHON_GUARD, {"no_result"}),
        ("import signal\nsignal.raise_signal(signal.SIGKILL)\n", None, {"killed"}),
        ("import os\nos.kill(os.getppid(), 9)\n", NO_PYTHON_GUARD, {"exception"}),  # seccomp: own pid only
    ],
)
def test_exiting_before_the_tests_ran_fails(sandbox, tests, guards, kinds):
    result = run(sandbox, "def f():\n    return 1\n", guards, mode="tests", tests=tests)
    failed(result, *kinds)


def test_killing_the_zygote_costs_one_job_not_the_run(tmp_path):
    with Sandbox(1, LIMITS) as box:
        result = run(box, "import os\nos.kill(os.getppid(), 9)\n", OS_ONLY)
        failed(result, "sandbox_error", "no_result", "killed")
        assert run(box, "assert 1 + 1 == 2\n")["passed"] is True  # a fresh zygote took over


def test_the_host_process_is_out_of_reach(sandbox):
    code = f"import os\nos.kill({os.getpid()}, 9)\n"  # the host's pid means nothing in the sandbox's namespace
    failed(run(sandbox, code, OS_ONLY), "exception")
    assert os.getpid()  # still here


# --- the file system ------------------------------------------------------------------------


def _attacks(sentinel: str) -> dict[str, str]:
    venv_file = os.path.join(sys.prefix, "pyvenv.cfg")
    return {
        "write": f"open({sentinel!r}, 'w').write('pwned')",
        "append": f"open({sentinel!r}, 'a').write('pwned')",
        "truncate": f"import os\nos.truncate({sentinel!r}, 0)",
        "replace": f"import os\nopen('x', 'w').write('pwned')\nos.replace('x', {sentinel!r})",
        "venv": f"open({venv_file!r}, 'a').write('pwned')",
        "system": "open('/usr/lib/os-release', 'a').write('pwned')",
        "root": "open('/pwned', 'w').write('pwned')",
        "sysrq": "open('/proc/sysrq-trigger', 'w').write('h')",  # 'h' only prints help, were it allowed
    }


@pytest.mark.parametrize("guards", [None, OS_ONLY])
@pytest.mark.parametrize("attack", sorted(_attacks("x")))
def test_files_outside_scratch_cannot_be_written(sandbox, tmp_path, attack, guards):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("still here")
    venv_cfg = os.path.join(sys.prefix, "pyvenv.cfg")
    before = open(venv_cfg).read()
    result = failed(run(sandbox, _attacks(str(sentinel))[attack], guards), "exception")
    assert any(word in result["detail"] for word in ("FileNotFoundError", "OSError", "PermissionError",
                                                     "Read-only", "NoneType")), result  # fmt: skip
    assert sentinel.read_text() == "still here"
    assert open(venv_cfg).read() == before
    assert not os.path.exists("/pwned")


def test_host_files_are_not_even_readable(sandbox, tmp_path):
    secret = tmp_path / "credentials"
    secret.write_text("sk-file-SECRET")
    for path in (str(secret), os.path.expanduser("~/.bashrc"), os.getcwd() + "/pyproject.toml"):
        result = failed(run(sandbox, f"print(open({path!r}).read())\n", OS_ONLY), "exception")
        assert "FileNotFoundError" in result["detail"] or "PermissionError" in result["detail"], result


# --- secrets --------------------------------------------------------------------------------


def test_no_secret_of_the_host_environment_is_visible(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-123")
    monkeypatch.setenv("OSSFORGE_TEACHER_API_KEY", "sk-test-SECRET-456")
    code = """
    import os
    texts = {"environ": repr(dict(os.environ))}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                texts[pid] = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
            except OSError:
                pass
    found = sorted(name for name, text in texts.items() if "SECRET" in text)
    raise RuntimeError(f"found={found} keys={sorted(os.environ)}")
    """
    with Sandbox(1, LIMITS) as box:  # started after the variables were set
        result = failed(run(box, code, OS_ONLY), "exception")
    assert "found=[]" in result["detail"], result
    assert "API_KEY" not in result["detail"] and "SECRET" not in result["detail"]


# --- network --------------------------------------------------------------------------------


@pytest.mark.parametrize("guards", [None, OS_ONLY])
def test_no_network_even_to_the_hosts_loopback(sandbox, guards):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
    try:
        failed(run(sandbox, code, guards), "exception")
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()


# --- resources ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "guards", "kinds"),
    [
        ("import os\nwhile True:\n    os.fork()\n", NO_PYTHON_GUARD, {"exception"}),  # seccomp refuses
        # RLIMIT_NPROC; each forked copy of the harness reports too: more than one frame
        ("import os\nwhile True:\n    os.fork()\n", OS_ONLY, {"exception", "timeout", "killed", "forged_result"}),
        ("import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()\n",
         None, {"exception", "memory"}),
        ("x = []\nwhile True:\n    x.append(bytearray(1 << 24))\n", OS_ONLY, {"memory"}),
        ("while True:\n    pass\n", OS_ONLY, {"timeout"}),
        ("import signal\nfor s in (signal.SIGALRM, signal.SIGXCPU, signal.SIGTERM):\n"
         "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n", OS_ONLY, {"timeout", "killed"}),
        ("open('big', 'wb').write(b'0' * (64 << 20))\n", OS_ONLY, {"exception"}),  # RLIMIT_FSIZE
    ],
    ids=["fork-bomb-seccomp", "fork-bomb-nproc", "thread-bomb", "memory-growth", "busy-loop", "signals-ignored",
         "huge-file"],
)  # fmt: skip
def test_resource_bombs_fail_and_leave_nothing_behind(sandbox, code, guards, kinds):
    # Growing to the memory limit writes a GiB of pages: slow on a busy machine, and this case
    # is about the memory guard, so it gets more time (as in test_sandbox.py).
    failed(run(sandbox, code, guards, seconds=10.0 if "bytearray" in code else 3.0), *kinds)
    census = ("import os\nothers = {int(p) for p in os.listdir('/proc') if p.isdigit()} "
              "- {1, os.getppid(), os.getpid()}\nassert not others, others\n")  # fmt: skip
    for _ in range(2):  # whichever zygote ran the bomb, the next jobs there see no leftover
        assert run(sandbox, census)["passed"] is True


# --- without bubblewrap ------------------------------------------------------------------------


def test_without_bubblewrap_the_sandbox_refuses_unless_weak_is_accepted(monkeypatch, tmp_path):
    monkeypatch.setattr(isolation, "bwrap_problem", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(SandboxUnavailable, match="--accept-weak-sandbox"):
        Sandbox(1, LIMITS)
    with Sandbox(1, LIMITS, accept_weak=True, tmp_root=tmp_path) as box:
        ok = run(box, "assert 1 + 1 == 2\n")
        bad = run(box, FORGE_ALL_FDS + "assert False\n")
    assert ok["passed"] is True and ok["isolation"] == "weak" and "bwrap" not in ok["guards"]
    assert bad["passed"] is False and bad["error"] == "forged_result" and bad["isolation"] == "weak"


def test_the_sandbox_reports_its_layers(sandbox):
    guards = sandbox.guards()
    assert {"bwrap", "rlimits", "reliability_guard"} <= set(guards)
    if os.geteuid() == 0:
        assert "nobody" in guards
