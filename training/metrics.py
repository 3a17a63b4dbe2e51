"""Throughput and MFU, and the JSON-lines metrics stream the training flow reads.

MFU here is the usual training estimate: 6 * N * tokens/s/GPU over the GPU's peak dense
bf16 FLOP/s, with N the model's parameter count and tokens the non-padding tokens
(attention FLOPs are left out, so it slightly under-counts long sequences).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

METRIC_PREFIX = "OSSFORGE_METRIC "  # stdout lines the flow parses while streaming

# Peak dense bf16 tensor FLOP/s (no sparsity), from the vendors' data sheets.
PEAK_BF16_FLOPS = {
    "GH200": 989e12,
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM
    "H800": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "A10G": 70e12,
    "A10": 125e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def peak_flops(device_name: str | None = None) -> float | None:
    """Peak bf16 FLOP/s of the current GPU; None on CPU or an unknown card.

    OSSFORGE_PEAK_FLOPS overrides (for cards missing from the table, or a CPU estimate).
    """
    if os.environ.get("OSSFORGE_PEAK_FLOPS"):
        return float(os.environ["OSSFORGE_PEAK_FLOPS"])
    if device_name is None:
        import torch

        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    for key, flops in PEAK_BF16_FLOPS.items():  # ordered: specific names before their prefixes
        if key in device_name:
            return flops
    return None


def mfu(n_params: int, tokens_per_s_per_gpu: float, peak: float | None) -> float | None:
    if not peak:
        return None
    return 6.0 * n_params * tokens_per_s_per_gpu / peak


def peak_memory_gb() -> float | None:
    """The most GPU memory this rank's tensors held (None on CPU)."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def count_parameters(model) -> int:
    """Parameters of a model, also when ZeRO-3 has sharded them (ds_numel is the full size)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


class MetricsWriter:
    """Appends one JSON object per line to metrics.jsonl and echoes it on stdout.

    Only the main process writes. Resumed runs append, so the file holds the whole curve.
    """

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        line = json.dumps(record, default=float)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
        print(METRIC_PREFIX + line, file=sys.stdout, flush=True)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parse_metric_line(line: str) -> dict | None:
    """The metric record in one line of launcher output, if it holds one."""
    index = line.find(METRIC_PREFIX)
    if index < 0:
        return None
    try:
        return json.loads(line[index + len(METRIC_PREFIX) :])
    except json.JSONDecodeError:
        return None


# The collator stores each batch's real token count under this key (a Python int: moving a
# batch to the GPU leaves it alone); the Trainer below pops it before the model sees the batch.
TOKENS_KEY = "ossforge_num_tokens"


class TokenCounter:
    """Real training tokens (no padding, no packing filler), counted on the CPU.

    Replaces the Trainer's `include_num_input_tokens_seen`, which sends every micro-batch's
    count to the GPU and reads it back with `.item()`: a host-device sync per micro-batch
    that drains the GPU's queue. Here each rank adds up the counts the collator attached,
    and ranks sum theirs only when a log is written.
    """

    def __init__(self):
        self.local = 0

    def global_total(self) -> int:
        """All ranks' tokens so far (a collective: every rank must call it, as on_log does)."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.local
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        total = torch.tensor([self.local], dtype=torch.int64, device=device)
        dist.all_reduce(total)
        return int(total.item())


def token_counting_trainer(counter: TokenCounter):
    """A transformers Trainer class that moves each batch's TOKENS_KEY into `counter`."""
    from transformers import Trainer

    class TokenCountingTrainer(Trainer):
        def training_step(self, model, inputs, *args, **kwargs):
            counter.local += int(inputs.pop(TOKENS_KEY, 0))
            return super().training_step(model, inputs, *args, **kwargs)

    return TokenCountingTrainer


def throughput_callback(writer: MetricsWriter, n_params: int, world_size: int, peak: float | None, counter: TokenCounter):
    """A transformers TrainerCallback that turns each log into a metrics record.

    tokens/s is the real tokens trained on between two logs (`counter`, summed over ranks).
    The running total is kept in the Trainer's `num_input_tokens_seen`, so checkpoints save
    it and a resumed run continues the count.
    """
    from transformers import TrainerCallback

    class ThroughputCallback(TrainerCallback):
        def __init__(self):
            self.last_time = None
            self.last_tokens = None
            self.tokens_before = 0  # restored from a checkpoint when resuming

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_time = time.perf_counter()
            self.tokens_before = state.num_input_tokens_seen
            self.last_tokens = self.tokens_before + counter.global_total()

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            now = time.perf_counter()
            record = {"event": "log", "step": state.global_step, "epoch": logs.pop("epoch", state.epoch)}
            for key in ("loss", "learning_rate", "grad_norm"):
                if key in logs:
                    record["lr" if key == "learning_rate" else key] = logs.pop(key)
            tokens = state.num_input_tokens_seen = self.tokens_before + counter.global_total()
            record["tokens"] = tokens
            if "loss" in record and self.last_time is not None and now > self.last_time:
                tokens_per_s = (tokens - self.last_tokens) / (now - self.last_time)
                record["tokens_per_s"] = tokens_per_s
                record["tokens_per_s_per_gpu"] = tokens_per_s / world_size
                record["mfu"] = mfu(n_params, tokens_per_s / world_size, peak)
            if "train_loss" in logs:  # the end-of-training summary rides along as-is
                record["event"] = "train_end"
                record.update({k: v for k, v in logs.items() if k.startswith("train_") or k == "total_flos"})
                record["peak_memory_gb"] = peak_memory_gb()
            self.last_time, self.last_tokens = now, tokens
            if state.is_world_process_zero:
                writer.write(record)

    return ThroughputCallback()


def loss_curve(records: list[dict]) -> list[dict]:
    """One point per step (a resumed run re-logs steps after its checkpoint: the last wins)."""
    by_step = {r["step"]: r for r in records if r.get("event") == "log" and "loss" in r}
    return [by_step[step] for step in sorted(by_step)]


def plot_loss_curve(records: list[dict], path: str | os.PathLike, title: str = "training loss") -> Path | None:
    """A PNG of loss (and learning rate) against step; None when there is nothing to plot."""
    points = loss_curve(records)
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [p["loss"] for p in points], marker="o", markersize=3, label="loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any("lr" in p for p in points):
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [p.get("lr") for p in points], color="tab:orange", alpha=0.6, label="learning rate")
        lr_ax.set_ylabel("learning rate")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
