"""Supervised fine-tuning of a causal code model on OSS-Instruct data with DeepSpeed ZeRO-3.

Run it under a launcher, one process per GPU (or per CPU rank):

    torchrun --nproc_per_node 8 -m training.sft --dataset DS_DIR --model deepseek-ai/deepseek-coder-6.7b-base \\
        --output-dir runs/magicoder-ds
    DS_ACCELERATOR=cpu torchrun --nproc_per_node 2 -m training.sft --dataset DS_DIR --model tiny --output-dir /tmp/run

The defaults are the Magicoder paper's recipe: its prompt template, loss on response + EOS,
max length 1216, 2 epochs, lr 5e-5 linear with 15 warmup steps, global batch 512, Adafactor,
bf16, no packing. Output:

    OUTPUT/checkpoints/checkpoint-N/   resumable ZeRO-3 checkpoints (--resume picks the latest)
    OUTPUT/final/                      consolidated safetensors model + tokenizer
    OUTPUT/metrics.jsonl               one JSON object per log step (loss, lr, tokens/s, MFU)
    OUTPUT/summary.json                data counts, batch geometry, final loss, throughput

This script never imports prefect: it runs on a GPU box with only the training stack.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", action="append", required=True,
                   help="dataset version directory (manifest.json + data/*.parquet); repeat to mix datasets")
    p.add_argument("--model", required=True, help="hub id or local path of the base model, or 'tiny'")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--random-init", action="store_true",
                   help="build the model from the config in --model with random weights (benchmarks; no weights needed)")
    p.add_argument("--continue-from", default=None,
                   help="start from this trained model's weights (two-stage 'S' recipe: OSS-Instruct, then another dataset)")
    p.add_argument("--instruction-column", default="problem")
    p.add_argument("--response-column", default="solution")
    # the paper's hyperparameters
    p.add_argument("--max-length", type=int, default=1216)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (overrides epochs)")
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--lr-scheduler", default="linear")
    p.add_argument("--warmup-steps", type=int, default=15)
    p.add_argument("--global-batch-size", type=int, default=512)
    p.add_argument("--micro-batch-size", type=int, default=8, help="examples per rank per forward pass")
    p.add_argument("--optim", default="adafactor")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=976)
    # how it runs
    p.add_argument("--packing", action="store_true", help="padding-free packing (DataCollatorWithFlattening)")
    p.add_argument("--attn-implementation", default=None,
                   help="default: flash_attention_2 when installed on GPU, else sdpa")
    p.add_argument("--gradient-checkpointing", choices=["auto", "on", "off"], default="auto",
                   help="auto: on for GPU, off for CPU")
    p.add_argument("--deepspeed-config", default=str(CONFIG_DIR / "zero3.json"))
    p.add_argument("--offload", choices=["none", "optimizer", "param", "both"], default="none",
                   help="ZeRO-3 offload of optimizer state and/or parameters to CPU memory")
    p.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps; 0: no checkpoints")
    p.add_argument("--save-total-limit", type=int, default=2)
    p.add_argument("--logging-steps", type=int, default=1)
    p.add_argument("--no-final-save", action="store_true", help="skip the consolidated model (benchmarks)")
    p.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint, if any")
    p.add_argument("--cpu", action="store_true", help="train on CPU ranks over gloo even if a GPU is present")
    return p.parse_args(argv)


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


# Files of a checkpoint that belong to the Trainer/DeepSpeed state, not to the model.
_TRAINING_STATE = ("global_step", "rng_state", "optimizer", "scheduler", "scaler", "trainer_state", "training_args",
                   "latest", "zero_to_")  # fmt: skip


def export_checkpoint(checkpoint: Path, final_dir: Path) -> None:
    """Copy a checkpoint's consolidated model + tokenizer to final_dir.

    Resuming the Trainer from its last step would train one step more than asked, so a
    finished run's retry exports instead of training.
    """
    import shutil

    final_dir.mkdir(parents=True, exist_ok=True)
    for path in checkpoint.iterdir():
        if path.is_file() and not path.name.startswith(_TRAINING_STATE):
            shutil.copy2(path, final_dir / path.name)
    config = json.loads((final_dir / "config.json").read_text())
    config["use_cache"] = True  # training turned it off; the saved model is for generation
    (final_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def deepspeed_config(path: str, offload: str) -> dict:
    config = json.loads(Path(path).read_text())
    zero = config.setdefault("zero_optimization", {})
    if offload in ("optimizer", "both"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload in ("param", "both"):
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return config


def die_with_launcher() -> None:
    """Ask Linux to SIGTERM this rank when its launcher dies.

    torchrun starts each rank in a session of its own, so killing the launcher's process
    group (a cancelled flow run, a SIGKILL) would otherwise leave orphaned ranks training
    on, holding GPUs and writing into the run directory.
    """
    if sys.platform != "linux" or "LOCAL_RANK" not in os.environ:  # not started by a launcher
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def main(argv=None) -> int:
    args = parse_args(argv)
    die_with_launcher()
    output_dir = Path(args.output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    final_dir = output_dir / "final"

    # --- where we run: decided before deepspeed is imported (it picks its accelerator once) -
    import torch

    on_gpu = torch.cuda.is_available() and not args.cpu
    if not on_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"
    # The HF Trainer only hands the model to DeepSpeed when accelerate is told to use it.
    os.environ.setdefault("ACCELERATE_USE_DEEPSPEED", "true")

    from accelerate import PartialState

    # On CPU the process group must be gloo, and it must exist before TrainingArguments
    # (which is then told to reuse it via use_configured_state).
    state = PartialState(backend=None if on_gpu else "gloo")

    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, set_seed

    from training.data import build_train_dataset, counting_tokens, packing_collator, padded_collator
    from training.metrics import (
        MetricsWriter, TokenCounter, count_parameters, peak_flops, throughput_callback, token_counting_trainer,
    )
    from training.tiny import resolve_model

    set_seed(args.seed)
    writer = MetricsWriter(output_dir / "metrics.jsonl", enabled=state.is_main_process)

    # --- a retry of a run that finished training but not its final save -------------------
    resume_from = latest_checkpoint(checkpoint_dir) if args.resume else None
    if finished(resume_from) and any(resume_from.glob("model*.safetensors")) and not args.no_final_save:
        if state.is_main_process:
            export_checkpoint(resume_from, final_dir)
            step = json.loads((resume_from / "trainer_state.json").read_text())["global_step"]
            summary = {"final_model": str(final_dir), "global_step": step, "exported_from": str(resume_from)}
            (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            writer.write({"event": "done", "final_model": str(final_dir), "global_step": step})
        state.wait_for_everyone()
        return 0

    # --- model and tokenizer sources ------------------------------------------------------
    with state.main_process_first():
        model_path = args.continue_from or resolve_model(args.model, output_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # labels mask padding anyway
    if tokenizer.eos_token_id is None:
        raise SystemExit(f"tokenizer of {model_path} has no EOS token; the loss needs one")

    # --- data: template, masking, truncation ----------------------------------------------
    started = time.perf_counter()
    train_dataset, data_stats = build_train_dataset(
        tokenizer, args.dataset, args.max_length,
        instruction_column=args.instruction_column, response_column=args.response_column,
    )
    if len(train_dataset) == 0:
        raise SystemExit(f"no training examples in {args.dataset}: {data_stats.as_dict()}")
    tokenize_seconds = time.perf_counter() - started

    # --- batch geometry: global batch = micro batch x ranks x accumulation ----------------
    world_size = state.num_processes
    grad_accum = max(1, args.global_batch_size // (args.micro_batch_size * world_size))
    global_batch = args.micro_batch_size * world_size * grad_accum

    gradient_checkpointing = {"auto": on_gpu, "on": True, "off": False}[args.gradient_checkpointing]
    has_flash_attn = importlib.util.find_spec("flash_attn") is not None
    attn = args.attn_implementation or ("flash_attention_2" if on_gpu and has_flash_attn else "sdpa")
    flash_attention = attn == "flash_attention_2"

    # TrainingArguments before the model: with a ZeRO-3 config it arms zero.Init, so the
    # weights are sharded across ranks as they load instead of materialising on each rank.
    training_args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler,
        warmup_steps=args.warmup_steps,
        optim=args.optim,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        bf16=on_gpu,  # bf16 raises on CPU ranks; fp32 there
        gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        deepspeed=deepspeed_config(args.deepspeed_config, args.offload),
        accelerator_config={"use_configured_state": True},
        use_cpu=not on_gpu,
        logging_steps=args.logging_steps,
        include_num_input_tokens_seen="no",  # counted on the CPU instead: see training.metrics.TokenCounter
        logging_nan_inf_filter=False,  # its check reads every micro-batch's loss back from the GPU (a sync)
        save_strategy="steps" if args.save_steps > 0 else "no",
        save_steps=max(args.save_steps, 1),
        save_total_limit=args.save_total_limit,
        seed=args.seed,
        data_seed=args.seed,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,  # line-oriented logs for the orchestrator
        dataloader_drop_last=False,
    )

    dtype = torch.bfloat16 if on_gpu else torch.float32
    if args.random_init:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation=attn)
    # No KV cache in training: with packing, transformers only derives the per-sample
    # (block-diagonal) attention mask from position_ids when no cache is in play.
    model.config.use_cache = False
    n_params = count_parameters(model)
    peak = peak_flops() if on_gpu else peak_flops("cpu")

    if args.packing:
        collator = packing_collator(flash_attention, row_tokens=args.max_length, pad_token_id=tokenizer.pad_token_id)
    else:
        collator = padded_collator(tokenizer)
    counter = TokenCounter()
    trainer = token_counting_trainer(counter)(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=counting_tokens(collator),
        processing_class=tokenizer,
        callbacks=[throughput_callback(writer, n_params, world_size, peak, counter)],
    )

    writer.write({
        "event": "start",
        "model": str(model_path),
        "parameters": n_params,
        "world_size": world_size,
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "peak_flops": peak,
        "micro_batch_size": args.micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "global_batch_size": global_batch,
        "packing": args.packing,
        "attn_implementation": attn,
        "gradient_checkpointing": gradient_checkpointing,
        "max_length": args.max_length,
        "resumed_from": str(resume_from) if resume_from else None,
        "data": data_stats.as_dict(),
        "tokenize_seconds": round(tokenize_seconds, 2),
    })

    # --- train -----------------------------------------------------------------------------
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    # --- consolidated model: ZeRO-3 gathers the shards (stage3_gather_16bit_weights_on_model_save)
    if not args.no_final_save:
        model.config.use_cache = True  # the saved model is for generation
        trainer.save_model(str(final_dir))
        if state.is_main_process:
            tokenizer.save_pretrained(str(final_dir))
    state.wait_for_everyone()

    summary = {
        "final_model": None if args.no_final_save else str(final_dir),
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "metrics": result.metrics,
        "parameters": n_params,
        "world_size": world_size,
        "global_batch_size": global_batch,
        "data": data_stats.as_dict(),
        "resumed_from": str(resume_from) if resume_from else None,
    }
    if state.is_main_process:
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        writer.write({"event": "done", "final_model": summary["final_model"], "global_step": trainer.state.global_step})
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
