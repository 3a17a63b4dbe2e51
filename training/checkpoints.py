"""Finding, judging and exporting the Trainer's ZeRO-3 checkpoints (OUTPUT/checkpoints/)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Files of a checkpoint that belong to the Trainer/DeepSpeed state, not to the model.
_TRAINING_STATE = ("global_step", "rng_state", "optimizer", "scheduler", "scaler", "trainer_state", "training_args",
                   "latest", "zero_to_")  # fmt: skip


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The highest-step checkpoint that finished saving (trainer_state.json is written last)."""
    done = [p for p in checkpoint_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def finished(checkpoint: Path | None) -> bool:
    """Whether a checkpoint is the run's last step (a retry after training, before the final save)."""
    if checkpoint is None:
        return False
    trainer_state = json.loads((checkpoint / "trainer_state.json").read_text())
    return trainer_state.get("max_steps", 0) > 0 and trainer_state["global_step"] >= trainer_state["max_steps"]


def export_checkpoint(checkpoint: Path, final_dir: Path) -> None:
    """Copy a checkpoint's consolidated model + tokenizer to final_dir.

    Resuming the Trainer from its last step would train one step more than asked, so a
    finished run's retry exports instead of training.
    """
    final_dir.mkdir(parents=True, exist_ok=True)
    for path in checkpoint.iterdir():
        if path.is_file() and not path.name.startswith(_TRAINING_STATE):
            shutil.copy2(path, final_dir / path.name)
    config = json.loads((final_dir / "config.json").read_text())
    config["use_cache"] = True  # training turned it off; the saved model is for generation
    (final_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
