"""Where a sandbox's zygote runs: inside bubblewrap, or — only if the user accepts it — bare.

Inside bubblewrap (Debian package `bubblewrap`) the zygote sees: the system (/usr) and the
Python installation read-only, a handful of /etc files the loader needs, a fresh /dev and
/proc (read-only) for its own PID namespace, and one private, size-capped tmpfs at
/scratch (also /tmp) as the only writable place. No home, no repository, no outputs, no
caches; no network (an empty network namespace); its own IPC, UTS and PID namespaces; it
dies with the process that started it. Its environment is built from nothing here.

Without bubblewrap there is no OS wall between a sample and the user's files, so a
`Sandbox` refuses to start unless the caller passes `accept_weak=True` (configs'
`accept_weak_sandbox`); every result then says `isolation: weak`.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tasks.core.errors import UserError

SANDBOX_DIR = Path(__file__).resolve().parent
ZYGOTE = SANDBOX_DIR / "zygote.py"
SCRATCH = "/scratch"  # inside bubblewrap
# What the dynamic loader and Python read from /etc; nothing else of it (no passwd, ssl keys...).
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
MERGED_USR = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxUnavailable(UserError):
    """No OS-level sandbox here, and the user did not accept the weaker Python-level guards."""


def sandbox_env(scratch: str) -> dict[str, str]:
    """The whole environment of a sandbox, built from nothing: no variable of ours gets in."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        # Same hash seed in every worker: set iteration order must match between the
        # canonical run and the sample's run.
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = "1"  # one sample, one core
    return env


def site_packages() -> list[str]:
    """This interpreter's site-packages, so samples can import what the evaluator has (numpy...)."""
    import site

    paths = site.getsitepackages() if hasattr(site, "getsitepackages") else []
    return [p for p in paths if os.path.isdir(p)]


def python_paths(extra: tuple[str, ...] = ()) -> list[str]:
    """Folders the sandbox needs read-only to run this interpreter, its stdlib and packages,
    plus `extra` (toolchains outside /usr: tasks/sandbox/runners.py); parents first, no
    folder inside another, nothing under /usr (bound whole)."""
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)), *site_packages()}
    paths.add(str(SANDBOX_DIR))  # the zygote and harness sources
    paths.update(p for p in extra if os.path.exists(p))
    kept: list[str] = []
    for p in sorted({*paths, *(os.path.realpath(p) for p in paths)}, key=len):  # parents first
        if p.startswith("/usr/") or any(p == k or p.startswith(k + "/") for k in kept):
            continue
        kept.append(p)
    return kept


def bwrap_argv(scratch_bytes: int, binds: tuple[str, ...] = ()) -> list[str]:
    """bubblewrap's command line; `binds` are extra host folders mounted read-only (toolchains)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
    argv = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv"]  # fmt: skip
    for key, value in sandbox_env(SCRATCH).items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for path in MERGED_USR:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    # /etc made first, traversable: bwrap would create it 0700 for the file binds below, and
    # nobody could then read the loader's cache or a toolchain's /etc config (a JDK's).
    argv += ["--perms", "0755", "--dir", "/etc"]
    for path in ETC_FILES:
        if os.path.exists(path):
            argv += ["--ro-bind", path, path]
    made: set[str] = {"/etc"}
    paths = python_paths(binds)
    # /tmp is normally a link to the scratch. When the interpreter itself lives under /tmp
    # (a CI clone there, say), /tmp must hold its read-only binds instead: it becomes an
    # empty tmpfs, mounted before them and made read-only after, so scratch stays the only
    # writable place (TMPDIR points there).
    tmp_holds_python = any(p == "/tmp" or p.startswith("/tmp/") for p in paths)
    if tmp_holds_python:
        made.add("/tmp")
        argv += ["--perms", "0755", "--size", str(1 << 20), "--tmpfs", "/tmp"]
    for path in paths:
        # bwrap would create missing parents (/root, /work) as 0700: nobody could not pass.
        for parent in reversed(Path(path).parents[:-1]):
            if str(parent) not in made:
                made.add(str(parent))
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", path, path]
    argv += ["--dev", "/dev", "--proc", "/proc", "--remount-ro", "/proc"]
    argv += ["--perms", "1777", "--size", str(int(scratch_bytes)), "--tmpfs", SCRATCH]
    argv += ["--remount-ro", "/tmp"] if tmp_holds_python else ["--symlink", SCRATCH, "/tmp"]
    argv += ["--chdir", SCRATCH]
    if os.geteuid() == 0:
        # Only to become nobody at once (tasks/sandbox/zygote.py): root inside, even without
        # capabilities, owns /proc/sys and /proc/sysrq-trigger.
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--disable-userns"]
    argv += ["--remount-ro", "/"]
    return argv


def zygote_argv(mode: str, scratch: str) -> list[str]:
    # -S: skip `site` (.pth files of editable installs); the zygote is given site-packages
    # itself. -B: no .pyc writes. Not -I/-E: the environment is ours already.
    return [sys.executable, "-S", "-B", str(ZYGOTE), mode, scratch, os.pathsep.join(site_packages())]


@functools.lru_cache(maxsize=None)
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot sandbox here (not installed, no namespaces...), or None when it can."""
    try:
        argv = bwrap_argv(16 << 20)
    except SandboxUnavailable as exc:
        return str(exc)
    try:
        probe = subprocess.run(argv + ["/bin/true"], capture_output=True, timeout=30, env=sandbox_env(SCRATCH))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap failed to start: {exc}"
    if probe.returncode != 0:
        return f"bubblewrap failed: {probe.stderr.decode(errors='replace').strip()[:300]}"
    return None


def require_isolation(accept_weak: bool) -> str:
    """'bwrap', or 'weak' when bubblewrap cannot run and the user accepted the weaker guards."""
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    if not accept_weak:
        raise SandboxUnavailable(
            f"no OS sandbox for generated code: {problem}. Install it (apt-get install bubblewrap), "
            "or accept the weaker Python-level guards explicitly (accept_weak_sandbox, --accept-weak-sandbox), "
            "under which samples can write any file you can"
        )
    return "weak"
