"""Supervised fine-tuning of a causal code model on OSS-Instruct data with DeepSpeed ZeRO-3.

Run it under a launcher, one process per GPU (or per CPU rank):

    torchrun --nproc_per_node 8 -m training.sft --dataset DS_DIR --model deepseek-ai/deepseek-coder-6.7b-base \\
        --output-dir runs/magicoder-ds
    DS_ACCELERATOR=cpu torchrun --nproc_per_node 2 -m training.sft --dataset DS_DIR --model tiny --output-dir /tmp/run

Every option is a field of `training.recipe.TrainRecipe` (`--help` lists them with their
help text); the defaults are the Magicoder paper's recipe. Output:

    OUTPUT/checkpoints/checkpoint-N/   resumable ZeRO-3 checkpoints (the latest is resumed)
    OUTPUT/final/                      consolidated safetensors model + tokenizer
    OUTPUT/metrics.jsonl               one JSON object per log step (loss, lr, tokens/s, MFU)
    OUTPUT/summary.json                data counts, batch geometry, final loss, throughput

This script never imports prefect: it runs on a GPU box with only the training stack.
The script reads top to bottom: main() at the end is the list of phases defined above it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from training.checkpoints import export_checkpoint, finished, latest_checkpoint  # noqa: F401 (tests import them here)
from training.data import DataStats, build_train_dataset, counting_tokens, padded_collator
from training.kernels import attention_implementation, share_output_weight_with_root, use_liger
from training.metrics import (
    MetricsWriter, TokenCounter, count_parameters, peak_flops, throughput_callback, token_counting_trainer,
)  # fmt: skip
from training.packing import PackedRowCollator, pack_examples, packing_stats
from training.recipe import TrainRecipe, parse_recipe
from training.zero import ModelShape, deepspeed_config, model_shape, needs_checkpointing, step_memory_bytes, zero3_knobs


# -----------------------------------------------------------------------------------------
# Where we run
# -----------------------------------------------------------------------------------------


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


def start_processes(recipe: TrainRecipe):
    """(on_gpu, accelerate PartialState): decided before deepspeed is imported, which picks its
    accelerator once, at import."""
    import torch

    on_gpu = torch.cuda.is_available() and not recipe.cpu
    if not on_gpu:
        os.environ["DS_ACCELERATOR"] = "cpu"
    # The HF Trainer only hands the model to DeepSpeed when accelerate is told to use it.
    os.environ.setdefault("ACCELERATE_USE_DEEPSPEED", "true")
    from accelerate import PartialState

    # On CPU the process group must be gloo, and it must exist before TrainingArguments
    # (which is then told to reuse it via use_configured_state).
    return on_gpu, PartialState(backend=None if on_gpu else "gloo")


# -----------------------------------------------------------------------------------------
# A retry of a run that finished training but not its final save
# -----------------------------------------------------------------------------------------


def export_finished_run(checkpoint: Path, output_dir: Path, writer: MetricsWriter, state) -> None:
    if state.is_main_process:
        final_dir = output_dir / "final"
        export_checkpoint(checkpoint, final_dir)
        step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        summary = {"final_model": str(final_dir), "global_step": step, "exported_from": str(checkpoint)}
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        writer.write({"event": "done", "final_model": str(final_dir), "global_step": step})
    state.wait_for_everyone()


# -----------------------------------------------------------------------------------------
# Data: template, masking, truncation; then padded batches or token-budget packed rows
# -----------------------------------------------------------------------------------------


@dataclass
class TrainData:
    dataset: list[dict]  # examples (padded) or packed rows
    collator: object
    stats: DataStats
    per_device_batch: int  # examples or rows per GPU per forward
    gradient_accumulation: int
    examples_per_step: float  # exact when padded, the mean when packed
    tokens_per_forward: int  # the widest forward pass, for the memory estimate
    packing: dict | None
    tokenize_seconds: float


def load_tokenizer(recipe: TrainRecipe, output_dir: Path, state):
    from transformers import AutoTokenizer

    from training.tiny import resolve_model

    with state.main_process_first():  # one rank builds `tiny`, the others load it
        model_path = recipe.continue_from or resolve_model(recipe.model, output_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # labels mask padding anyway
    if tokenizer.eos_token_id is None:
        raise SystemExit(f"tokenizer of {model_path} has no EOS token; the loss needs one")
    return model_path, tokenizer


def prepare_data(recipe: TrainRecipe, tokenizer, world_size: int) -> TrainData:
    started = time.perf_counter()
    examples, stats = build_train_dataset(
        tokenizer, recipe.datasets, recipe.max_length,
        instruction_column=recipe.instruction_column, response_column=recipe.response_column,
    )  # fmt: skip
    if not examples:
        raise SystemExit(f"no training examples in {recipe.datasets}: {stats.as_dict()}")
    if not recipe.packing:
        # The paper's geometry: global batch = micro batch x ranks x accumulation.
        accumulation = max(1, recipe.global_batch_size // (recipe.micro_batch_size * world_size))
        return TrainData(
            dataset=examples, collator=counting_tokens(padded_collator(tokenizer)), stats=stats,
            per_device_batch=recipe.micro_batch_size, gradient_accumulation=accumulation,
            examples_per_step=recipe.micro_batch_size * world_size * accumulation,
            tokens_per_forward=recipe.micro_batch_size * recipe.max_length, packing=None,
            tokenize_seconds=time.perf_counter() - started,
        )  # fmt: skip
    # Packed: one row of max_tokens_per_batch tokens per GPU per forward. Accumulation is
    # chosen so that a step holds global_batch_size examples on average, as the recipe says.
    budget = recipe.max_tokens_per_batch
    rows = pack_examples(examples, budget, recipe.seed)
    accumulation = max(1, round(recipe.global_batch_size * len(rows) / (len(examples) * world_size)))
    return TrainData(
        dataset=rows, collator=counting_tokens(PackedRowCollator(budget, tokenizer.pad_token_id)), stats=stats,
        per_device_batch=1, gradient_accumulation=accumulation,
        examples_per_step=round(len(examples) / len(rows) * world_size * accumulation, 1),
        tokens_per_forward=budget, packing=packing_stats(rows, budget),
        tokenize_seconds=time.perf_counter() - started,
    )  # fmt: skip


# -----------------------------------------------------------------------------------------
# The step plan: kernels, ZeRO-3 knobs and checkpointing, all derived before the model loads
# -----------------------------------------------------------------------------------------


@dataclass
class StepPlan:
    attention: str
    liger: bool
    gradient_checkpointing: bool
    deepspeed: dict
    shape: ModelShape
    memory_estimate_gb: float


def plan_step(recipe: TrainRecipe, model_path: str, on_gpu: bool, world_size: int, data: TrainData) -> StepPlan:
    import torch
    from transformers import AutoConfig

    shape = model_shape(AutoConfig.from_pretrained(model_path))
    gpu_bytes = torch.cuda.get_device_properties(0).total_memory if on_gpu else None
    liger = use_liger(recipe.liger, on_gpu)
    knobs = zero3_knobs(shape, world_size, gpu_bytes, recipe.offload)
    whole = knobs["stage3_param_persistence_threshold"] > shape.largest_parameter
    estimate = step_memory_bytes(shape, data.tokens_per_forward, world_size, whole, fused_cross_entropy=liger)
    return StepPlan(
        attention=attention_implementation(recipe.attn_implementation, on_gpu, recipe.packing),
        liger=liger,
        gradient_checkpointing=needs_checkpointing(recipe.gradient_checkpointing, on_gpu, estimate, gpu_bytes),
        deepspeed=deepspeed_config(recipe.deepspeed_config, recipe.offload, knobs),
        shape=shape,
        memory_estimate_gb=round(estimate / 2**30, 1),
    )


def training_arguments(recipe: TrainRecipe, on_gpu: bool, data: TrainData, plan: StepPlan):
    """The Trainer's arguments. Built before the model: with a ZeRO-3 config they arm
    zero.Init, so weights are sharded across ranks as they load instead of materialising
    whole on each rank."""
    from transformers import TrainingArguments

    checkpointing = plan.gradient_checkpointing
    return TrainingArguments(
        output_dir=str(Path(recipe.output_dir) / "checkpoints"),
        per_device_train_batch_size=data.per_device_batch,
        gradient_accumulation_steps=data.gradient_accumulation,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps or -1,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup_steps,
        optim=recipe.optim,
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        bf16=on_gpu,  # bf16 raises on CPU ranks; fp32 there
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        use_liger_kernel=plan.liger,  # the Trainer patches the model instance when training starts
        deepspeed=plan.deepspeed,
        accelerator_config={"use_configured_state": True},
        use_cpu=not on_gpu,
        logging_steps=recipe.logging_steps,
        include_num_input_tokens_seen="no",  # counted on the CPU instead: see training.metrics.TokenCounter
        logging_nan_inf_filter=False,  # its check reads every micro-batch's loss back from the GPU (a sync)
        save_strategy="steps" if recipe.save_steps > 0 else "no",
        save_steps=max(recipe.save_steps, 1),
        save_total_limit=recipe.save_total_limit,
        seed=recipe.seed,
        data_seed=recipe.seed,
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,  # line-oriented logs for the orchestrator
        dataloader_drop_last=False,
    )


# -----------------------------------------------------------------------------------------
# Model and trainer
# -----------------------------------------------------------------------------------------


def build_model(recipe: TrainRecipe, model_path: str, on_gpu: bool, plan: StepPlan):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = torch.bfloat16 if on_gpu else torch.float32
    if recipe.random_init:
        config = AutoConfig.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=plan.attention)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation=plan.attention)
    # No KV cache in training: with packing, transformers derives the per-document
    # attention from position_ids only when no cache is in play.
    model.config.use_cache = False
    if plan.liger:
        share_output_weight_with_root(model)
    return model


def build_trainer(model, training_args, data: TrainData, tokenizer, writer, world_size: int, on_gpu: bool):
    counter = TokenCounter()
    n_params = count_parameters(model)
    peak = peak_flops() if on_gpu else peak_flops("cpu")
    trainer = token_counting_trainer(counter)(
        model=model,
        args=training_args,
        train_dataset=data.dataset,
        data_collator=data.collator,
        processing_class=tokenizer,
        callbacks=[throughput_callback(writer, n_params, world_size, peak, counter)],
    )
    return trainer, n_params, peak


# -----------------------------------------------------------------------------------------
# Records: what the run is, and what it did
# -----------------------------------------------------------------------------------------


def start_record(recipe, model_path, on_gpu, n_params, world_size, peak, data: TrainData, plan: StepPlan, resume_from):
    import torch

    return {
        "event": "start",
        "model": str(model_path),
        "parameters": n_params,
        "world_size": world_size,
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "peak_flops": peak,
        "micro_batch_size": data.per_device_batch,
        "gradient_accumulation_steps": data.gradient_accumulation,
        "global_batch_size": data.examples_per_step,
        "packing": data.packing,
        "attn_implementation": plan.attention,
        "liger": plan.liger,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "memory_estimate_gb": plan.memory_estimate_gb,
        "zero3": {k: v for k, v in plan.deepspeed["zero_optimization"].items() if k.startswith(("stage3_", "reduce_"))},
        "max_length": recipe.max_length,
        "resumed_from": str(resume_from) if resume_from else None,
        "data": data.stats.as_dict(),
        "tokenize_seconds": round(data.tokenize_seconds, 2),
        "recipe": recipe.model_dump(mode="json"),
        "recipe_fingerprint": recipe.content_fingerprint(),
    }


def save_final_model(recipe: TrainRecipe, trainer, model, tokenizer, state) -> Path | None:
    """The consolidated model: ZeRO-3 gathers the shards (stage3_gather_16bit_weights_on_model_save)."""
    if not recipe.final_save:
        return None
    final_dir = Path(recipe.output_dir) / "final"
    model.config.use_cache = True  # the saved model is for generation
    trainer.save_model(str(final_dir))
    if state.is_main_process:
        tokenizer.save_pretrained(str(final_dir))
    return final_dir


def write_summary(output_dir: Path, trainer, result, final_dir, n_params, world_size, data, resume_from, writer, state):
    summary = {
        "final_model": str(final_dir) if final_dir else None,
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "metrics": result.metrics,
        "parameters": n_params,
        "world_size": world_size,
        "global_batch_size": data.examples_per_step,
        "packing": data.packing,
        "data": data.stats.as_dict(),
        "resumed_from": str(resume_from) if resume_from else None,
    }
    if state.is_main_process:
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        writer.write({"event": "done", "final_model": summary["final_model"], "global_step": summary["global_step"]})


# -----------------------------------------------------------------------------------------
# main: the phases, in order
# -----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    recipe = parse_recipe(argv)
    die_with_launcher()
    output_dir = Path(recipe.output_dir)
    on_gpu, state = start_processes(recipe)
    from transformers import set_seed

    set_seed(recipe.seed)
    writer = MetricsWriter(output_dir / "metrics.jsonl", enabled=state.is_main_process)

    resume_from = latest_checkpoint(output_dir / "checkpoints") if recipe.resume else None
    if finished(resume_from) and any(resume_from.glob("model*.safetensors")) and recipe.final_save:
        export_finished_run(resume_from, output_dir, writer, state)
        return 0

    model_path, tokenizer = load_tokenizer(recipe, output_dir, state)
    data = prepare_data(recipe, tokenizer, state.num_processes)
    plan = plan_step(recipe, model_path, on_gpu, state.num_processes, data)
    training_args = training_arguments(recipe, on_gpu, data, plan)  # before the model: arms zero.Init
    model = build_model(recipe, model_path, on_gpu, plan)
    trainer, n_params, peak = build_trainer(model, training_args, data, tokenizer, writer, state.num_processes, on_gpu)
    writer.write(start_record(recipe, model_path, on_gpu, n_params, state.num_processes, peak, data, plan, resume_from))

    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    final_dir = save_final_model(recipe, trainer, model, tokenizer, state)
    state.wait_for_everyone()
    write_summary(output_dir, trainer, result, final_dir, n_params, state.num_processes, data, resume_from, writer, state)
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
