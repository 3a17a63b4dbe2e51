"""Starting training/sft.py under a launcher, relaying its output, and stopping every rank.

The flow (flows/train.py) runs the launcher as a subprocess, so the GPU processes never
share an interpreter with Prefect: `torchrun` on one node, the DeepSpeed launcher
(ssh/pdsh to each host) with a hostfile. Nothing here imports Prefect; `log` is any
logging.Logger-like object.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from training.metrics import parse_metric_line
from training.recipe import TrainRecipe, to_argv
from training.report import describe

REPO = Path(__file__).resolve().parents[1]

# Launcher chatter that floods the logs without telling the user anything.
_NOISE = ("FutureWarning", "return func(*args", "warnings.warn(", "UserWarning")


class LaunchFailed(RuntimeError):
    pass


def launch_command(
    recipe: TrainRecipe, nproc: int, hostfile: str | None = None, extra_args: list[str] | None = None
) -> list[str]:
    """torchrun on one node; the DeepSpeed launcher with a hostfile. The recipe travels as
    the script's command line, every field spelled out (training.recipe.to_argv)."""
    if hostfile:
        launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", hostfile,
                    "--num_gpus", str(nproc), "--module", "training.sft"]  # fmt: skip
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={nproc}", "-m", "training.sft"]  # fmt: skip
    return launcher + to_argv(recipe) + list(extra_args or [])


def launch_environment(cpu: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if cpu:
        env["DS_ACCELERATOR"] = "cpu"
        env.setdefault("OMP_NUM_THREADS", "1")  # one rank per core, not every rank on every core
    return env


def stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Stop the launcher and every rank: SIGTERM, a grace period, then SIGKILL.

    torchrun puts each rank in a session of its own, so the launcher's process group does
    not hold the ranks: they are found as its descendants (and each rank also asks the
    kernel to be killed when the launcher dies, see training/sft.py).
    """
    import psutil  # a dependency of deepspeed

    try:
        ranks = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        ranks = []  # the launcher is gone; its ranks got SIGTERM from the kernel
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # torchrun forwards it to its ranks
        except ProcessLookupError:
            pass
    for rank in ranks:  # and in case the launcher cannot forward it any more
        try:
            rank.terminate()
        except psutil.NoSuchProcess:
            pass
    alive = psutil.wait_procs(ranks, timeout=grace_s)[1] if ranks else []
    try:
        proc.wait(timeout=grace_s if proc.poll() is None else 0)
    except subprocess.TimeoutExpired:
        pass
    for leftover in alive:
        try:
            leftover.kill()
        except psutil.NoSuchProcess:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class _TerminateRequested(BaseException):
    """SIGTERM arrived while the launcher ran (a cancelled or stopped flow run)."""


def _raise_on_sigterm():
    """Run directly (not under a Prefect worker, which raises TerminationSignal itself):
    turn SIGTERM into an exception so the caller's `finally` still stops the group.
    Returns the handler to restore, or None when nothing was installed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return None

    def _raise(signum, frame):
        raise _TerminateRequested()

    return signal.signal(signal.SIGTERM, _raise)


def _relay(proc: subprocess.Popen, log) -> list[dict]:
    """Log the launcher's output line by line; collect its metric records."""
    records: list[dict] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        record = parse_metric_line(line)
        if record is not None:
            records.append(record)
            log.info(describe(record))
        elif line and not any(noise in line for noise in _NOISE):
            log.info(line)
    return records


def run_launcher(cmd: list[str], env: dict, log, pid_file: Path, timeout_s: float | None = None) -> list[dict]:
    """Run the launcher in its own process group, relaying output; return its metric records.

    Whatever ends this call early (Prefect's TerminationSignal on cancellation, SIGTERM from
    a worker, KeyboardInterrupt, a timeout) stops the whole group first: no orphaned ranks
    hold GPUs after a cancelled run.
    """
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        start_new_session=True,  # its own process group: a signal to the flow's group does not race ours
    )  # fmt: skip
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(proc.pid))
    previous_handler = _raise_on_sigterm()
    # A timer, not a check per output line: a hung collective prints nothing.
    timed_out = threading.Event()
    timer = threading.Timer(timeout_s, lambda: (timed_out.set(), stop_group(proc))) if timeout_s else None
    try:
        if timer:
            timer.daemon = True
            timer.start()
        records = _relay(proc, log)
        code = proc.wait()
        if timed_out.is_set():
            raise LaunchFailed(f"training did not finish within {timeout_s} s")
        if code != 0:
            raise LaunchFailed(f"launcher exited with code {code}")
        return records
    finally:
        if timer:
            timer.cancel()
        stop_group(proc)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
