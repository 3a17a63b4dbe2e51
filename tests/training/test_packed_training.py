"""Token-budget packing through the real path: training/sft.py under torchrun, DeepSpeed ZeRO-3 on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

from support.training_data import write_toy_dataset  # noqa: E402

from training.metrics import read_metrics  # noqa: E402
from training.recipe import TrainRecipe, to_argv  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_packed_run_trains_every_example_once_per_epoch(tmp_path):
    write_toy_dataset(tmp_path / "ds", n=48)
    recipe = TrainRecipe(
        datasets=[str(tmp_path / "ds")], model="tiny", output_dir=str(tmp_path / "run"), cpu=True,
        packing=True, max_tokens_per_batch=512, max_length=256, global_batch_size=16, epochs=2,
        learning_rate=2e-3, warmup_steps=1, save_steps=0, final_save=False,
    )  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "training.sft", *to_argv(recipe)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    start = next(r for r in records if r["event"] == "start")
    packing = start["packing"]
    assert packing["row_tokens"] == 512 and packing["rows"] < start["data"]["examples"]  # rows hold several
    assert start["micro_batch_size"] == 1 and start["attn_implementation"] == "sdpa" and start["liger"] is False
    assert start["recipe"]["packing"] is True and start["recipe_fingerprint"] == recipe.content_fingerprint()
    # Two epochs train every example exactly twice: the count is the examples' tokens, no filler.
    end = next(r for r in records if r["event"] == "train_end")
    assert end["tokens"] == 2 * start["data"]["tokens"]
    losses = [r["loss"] for r in records if r["event"] == "log"]
    assert losses[-1] < losses[0], losses
