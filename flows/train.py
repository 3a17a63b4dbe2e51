"""The training flow: check a dataset version, launch ZeRO-3 fine-tuning, publish the curve.

Orchestration only. The training itself is `training/sft.py`, started here as a
subprocess under `torchrun` (one node) or the `deepspeed` launcher (a hostfile of several
nodes), so the GPU processes never share an interpreter with Prefect. The flow

1. verifies each dataset version (manifest, shard checksums, row counts, text columns);
2. resolves the model (`tiny` is built locally, before any rank starts);
3. runs the launcher in its own process group, streaming its output into the Prefect
   logs; a cancelled or killed flow run takes the whole group down with it; a failed
   attempt is retried (task retries) and resumes from the latest checkpoint;
4. publishes the loss curve (PNG, also embedded in a markdown artifact), a table of the
   logged metrics, and the final figures; optionally evaluates the final model.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Literal, Optional

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, field_validator

from tasks.core.errors import UserError
from training.dataset_check import verify_dataset
from training.metrics import loss_curve, parse_metric_line, plot_loss_curve, read_metrics

REPO = Path(__file__).resolve().parents[1]

SUMMARY_KEY = "training-summary"
CURVE_KEY = "training-loss-curve"
METRICS_KEY = "training-metrics"

# Launcher chatter that floods the logs without telling the user anything.
_NOISE = ("FutureWarning", "return func(*args", "warnings.warn(", "UserWarning")


class TrainConfig(BaseModel):
    """Everything a training run needs. The CLI, prefect.yaml and the UI form fill this one model.

    Defaults are the Magicoder paper's recipe (NOTES.md, "The method").
    """

    datasets: list[str] = Field(min_length=1, description="dataset version directories; several are mixed")
    model: str = Field("tiny", description="hub id or local path of the base model, or 'tiny' (built locally)")
    output_dir: str = Field(description="checkpoints/, final/, metrics.jsonl, summary.json, loss_curve.png")
    continue_from: Optional[str] = Field(
        None, description="start from this trained model (the 'S' recipe: OSS-Instruct first, then another dataset)"
    )
    instruction_column: str = "problem"
    response_column: str = "solution"
    # the recipe
    max_length: int = Field(1216, ge=16)
    epochs: float = Field(2.0, gt=0)
    max_steps: Optional[int] = Field(None, ge=1, description="stop after this many optimizer steps")
    learning_rate: float = Field(5e-5, gt=0)
    warmup_steps: int = Field(15, ge=0)
    global_batch_size: int = Field(512, ge=1)
    micro_batch_size: int = Field(8, ge=1, description="examples per GPU per forward pass")
    optim: str = "adafactor"
    seed: int = 976
    packing: bool = Field(False, description="padding-free packing (the paper did not pack)")
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    offload: Literal["none", "optimizer", "param", "both"] = "none"
    save_steps: int = Field(500, ge=0, description="checkpoint every N steps (0: none)")
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    # where it runs
    nproc: int = Field(1, ge=1, description="processes (GPUs) per node")
    hostfile: Optional[str] = Field(None, description="DeepSpeed hostfile for several nodes ('host slots=N' lines)")
    cpu: bool = Field(False, description="CPU ranks over gloo (no GPU needed; the tiny preset)")
    resume: bool = Field(True, description="continue from the latest checkpoint in output_dir, if any")
    retries: int = Field(1, ge=0, description="relaunches after a failed attempt (each resumes)")
    timeout_s: Optional[float] = Field(None, gt=0, description="kill the launch after this many seconds")
    verify_checksums: bool = True
    extra_args: list[str] = Field(default_factory=list, description="passed to training/sft.py as-is")
    # evaluation of the final model (flows/evaluate.py)
    run_evaluation: bool = False
    eval_benchmarks: list[str] = Field(default_factory=lambda: ["humaneval", "humaneval+", "mbpp+"])
    eval_limit: Optional[int] = Field(None, ge=1, description="first N problems per benchmark (smoke runs)")
    eval_options: dict = Field(default_factory=dict, description="further EvaluateConfig fields")

    @field_validator("datasets", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value


# --- pure helpers (tested without Prefect) -----------------------------------------------


def sft_arguments(cfg: TrainConfig, model_path: str) -> list[str]:
    """The command line of training/sft.py for this config."""
    args = []
    for dataset in cfg.datasets:
        args += ["--dataset", dataset]
    args += [
        "--model", model_path,
        "--output-dir", cfg.output_dir,
        "--instruction-column", cfg.instruction_column,
        "--response-column", cfg.response_column,
        "--max-length", str(cfg.max_length),
        "--epochs", str(cfg.epochs),
        "--max-steps", str(cfg.max_steps or -1),
        "--learning-rate", str(cfg.learning_rate),
        "--warmup-steps", str(cfg.warmup_steps),
        "--global-batch-size", str(cfg.global_batch_size),
        "--micro-batch-size", str(cfg.micro_batch_size),
        "--optim", cfg.optim,
        "--seed", str(cfg.seed),
        "--gradient-checkpointing", cfg.gradient_checkpointing,
        "--offload", cfg.offload,
        "--save-steps", str(cfg.save_steps),
        "--save-total-limit", str(cfg.save_total_limit),
        "--logging-steps", str(cfg.logging_steps),
    ]  # fmt: skip
    if cfg.continue_from:
        args += ["--continue-from", cfg.continue_from]
    if cfg.packing:
        args.append("--packing")
    if cfg.resume:
        args.append("--resume")
    if cfg.cpu:
        args.append("--cpu")
    return args + list(cfg.extra_args)


def launch_command(cfg: TrainConfig, model_path: str) -> list[str]:
    """torchrun on one node; the DeepSpeed launcher (ssh/pdsh to each host) with a hostfile."""
    if cfg.hostfile:
        launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", cfg.hostfile,
                    "--num_gpus", str(cfg.nproc), "--module", "training.sft"]  # fmt: skip
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={cfg.nproc}", "-m", "training.sft"]  # fmt: skip
    return launcher + sft_arguments(cfg, model_path)


def launch_environment(cfg: TrainConfig) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if cfg.cpu:
        env["DS_ACCELERATOR"] = "cpu"
        env.setdefault("OMP_NUM_THREADS", "1")  # one rank per core, not every rank on every core
    return env


def resolve_model(cfg: TrainConfig) -> str:
    if cfg.continue_from:
        if not Path(cfg.continue_from).is_dir():
            raise UserError(f"--continue-from {cfg.continue_from}: no such model directory")
        return cfg.model
    if cfg.model == "tiny":
        from training.tiny import build_tiny_model

        return str(build_tiny_model(Path(cfg.output_dir) / "tiny-model"))
    looks_local = cfg.model.startswith((".", "/", "~")) or cfg.model.count("/") != 1
    if looks_local and not Path(cfg.model).expanduser().is_dir():
        raise UserError(f"model {cfg.model} not found (a local directory, a hub id 'org/name', or 'tiny')")
    return str(Path(cfg.model).expanduser()) if looks_local else cfg.model


class LaunchFailed(RuntimeError):
    pass


def _stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
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
    previous_handler = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        # Run directly (not under a Prefect worker, which raises TerminationSignal itself):
        # turn SIGTERM into an exception so the finally below still stops the group.
        def _raise(signum, frame):
            raise _TerminateRequested()

        previous_handler = signal.signal(signal.SIGTERM, _raise)
    records: list[dict] = []
    # A timer, not a check per output line: a hung collective prints nothing.
    timed_out = threading.Event()
    timer = threading.Timer(timeout_s, lambda: (timed_out.set(), _stop_group(proc))) if timeout_s else None
    try:
        if timer:
            timer.daemon = True
            timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            record = parse_metric_line(line)
            if record is not None:
                records.append(record)
                log.info(describe(record))
            elif line and not any(noise in line for noise in _NOISE):
                log.info(line)
        code = proc.wait()
        if timed_out.is_set():
            raise LaunchFailed(f"training did not finish within {timeout_s} s")
        if code != 0:
            raise LaunchFailed(f"launcher exited with code {code}")
        return records
    finally:
        if timer:
            timer.cancel()
        _stop_group(proc)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def describe(record: dict) -> str:
    """One readable log line per metrics record."""
    event = record.get("event")
    if event == "log":
        parts = [f"step {record['step']}", f"loss {record.get('loss', float('nan')):.4f}"]
        if record.get("lr") is not None:
            parts.append(f"lr {record['lr']:.3g}")
        if record.get("tokens_per_s_per_gpu") is not None:
            parts.append(f"{record['tokens_per_s_per_gpu']:.0f} tok/s/GPU")
        if record.get("mfu") is not None:
            parts.append(f"MFU {100 * record['mfu']:.1f}%")
        return " | ".join(parts)
    if event == "start":
        data = record.get("data", {})
        return (
            f"training {record.get('parameters', 0) / 1e6:.1f}M parameters on {record.get('world_size')} x "
            f"{record.get('device')}: {data.get('examples')} examples ({data.get('truncated')} truncated, dropped "
            f"{data.get('dropped')}), global batch {record.get('global_batch_size')}"
            + (f", resuming from {record['resumed_from']}" if record.get("resumed_from") else "")
        )
    return json.dumps(record)


def curve_markdown(png: Path | None, points: list[dict], summary: dict) -> str:
    lines = ["# Training loss", ""]
    if png is not None:
        encoded = base64.b64encode(png.read_bytes()).decode()
        lines += [f"![loss curve](data:image/png;base64,{encoded})", "", f"PNG: `{png}`", ""]
    if points:
        lines += [f"{len(points)} logged steps; first loss {points[0]['loss']:.4f}, last {points[-1]['loss']:.4f}."]
    lines += ["", f"Final model: `{summary.get('final_model')}`"]
    return "\n".join(lines)


# --- tasks and flow ------------------------------------------------------------------------


@task(name="verify-dataset", cache_policy=NO_CACHE)
def verify_dataset_task(path: str, cfg: TrainConfig) -> dict:
    info = verify_dataset(path, cfg.instruction_column, cfg.response_column, checksums=cfg.verify_checksums)
    get_run_logger().info(f"dataset {path}: {info['rows']} rows in {info['files']} shards, checksums verified")
    return info


@task(name="fine-tune", cache_policy=NO_CACHE)
def fine_tune(cfg: TrainConfig, model_path: str) -> dict:
    """One launch of the launcher; a retry of this task resumes from the latest checkpoint."""
    log = get_run_logger()
    cmd = launch_command(cfg, model_path)
    log.info("launching: " + " ".join(cmd))
    records = run_launcher(
        cmd, launch_environment(cfg), log, Path(cfg.output_dir) / "launcher.pid", timeout_s=cfg.timeout_s
    )
    summary_path = Path(cfg.output_dir) / "summary.json"
    if not summary_path.exists():
        raise LaunchFailed("training exited without writing summary.json")
    summary = json.loads(summary_path.read_text())
    summary["streamed_records"] = len(records)
    return summary


@task(name="publish-training-artifacts", cache_policy=NO_CACHE)
def publish_artifacts(cfg: TrainConfig, summary: dict, datasets: list[dict]) -> dict:
    out = Path(cfg.output_dir)
    records = read_metrics(out / "metrics.jsonl")
    points = loss_curve(records)
    png = plot_loss_curve(records, out / "loss_curve.png", title=f"{Path(cfg.model).name} on {len(datasets)} dataset(s)")
    create_markdown_artifact(key=CURVE_KEY, markdown=curve_markdown(png, points, summary),
                             description="loss against optimizer step")  # fmt: skip
    table = [
        {k: p.get(k) for k in ("step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s_per_gpu", "mfu")}
        for p in points
    ]
    if table:
        create_table_artifact(key=METRICS_KEY, table=table, description="metrics per logging step")
    last = points[-1] if points else {}
    throughput = [p["tokens_per_s_per_gpu"] for p in points if p.get("tokens_per_s_per_gpu")]
    final = {
        "global_step": summary.get("global_step"),
        "final_loss": last.get("loss"),
        "train_loss": summary.get("train_loss"),
        "first_loss": points[0]["loss"] if points else None,
        "mean_tokens_per_s_per_gpu": sum(throughput) / len(throughput) if throughput else None,
        "last_mfu": last.get("mfu"),
        "examples": summary.get("data", {}).get("examples"),
        "truncated": summary.get("data", {}).get("truncated"),
        "dropped": summary.get("data", {}).get("dropped"),
        "final_model": summary.get("final_model"),
        "loss_curve_png": str(png) if png else None,
    }
    rows = "\n".join(f"| {key} | {value} |" for key, value in final.items())
    sources = "\n".join(f"- `{d['path']}`: {d['rows']} rows, {d['files']} shards" for d in datasets)
    create_markdown_artifact(
        key=SUMMARY_KEY,
        markdown=f"# Training run\n\n| metric | value |\n| --- | --- |\n{rows}\n\n## Datasets\n\n{sources}\n",
        description="final training figures",
    )
    return final


@flow(name="train", log_prints=True)
def train_flow(cfg: TrainConfig) -> dict:
    """Fine-tune a code model on dataset versions with DeepSpeed ZeRO-3."""
    log = get_run_logger()
    datasets = [verify_dataset_task(path, cfg) for path in cfg.datasets]
    model_path = resolve_model(cfg)
    log.info(f"model: {model_path}" + (f" (continuing from {cfg.continue_from})" if cfg.continue_from else ""))
    summary = fine_tune.with_options(retries=cfg.retries, retry_delay_seconds=5)(cfg, model_path)
    final = publish_artifacts(cfg, summary, datasets)
    result = {"final_model": summary.get("final_model"), "metrics": final, "datasets": datasets}
    if cfg.run_evaluation:
        from flows.evaluate import EvaluateConfig, evaluate_flow  # lazy: evaluation is optional

        eval_cfg = EvaluateConfig(
            model=summary["final_model"],
            output_dir=str(Path(cfg.output_dir) / "eval"),
            benchmarks=cfg.eval_benchmarks,
            limit=cfg.eval_limit,
            **cfg.eval_options,
        )
        result["evaluation"] = evaluate_flow(eval_cfg)
    return result
