"""The training recipe: every setting of a fine-tuning run, defined once.

`TrainRecipe` is what `training/sft.py` runs. The Prefect flow's `TrainConfig`
(flows/train.py) derives from it and adds only where the launch happens (GPUs per node,
hostfile, retries, timeouts); the flow hands the recipe to the script as a command line
generated from this model (`to_argv`), and the script parses it back with a parser
generated from the same model (`parse_recipe`). So a default, a bound or a help text lives
here and nowhere else, and `python -m training.sft --help` shows the same text as the UI.

Defaults are the Magicoder paper's recipe (NOTES.md, "The method"): its template, loss on
response + EOS, max length 1216, 2 epochs, lr 5e-5 linear with 15 warmup steps, global
batch 512, Adafactor, bf16, no packing.

Fields declared with `operational(...)` change how fast or where a run goes, not the
model it produces; `content_fingerprint()` hashes the others (tasks/core/config.py).
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from tasks.core.config import FingerprintedConfig, operational

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# The row width of token-budget packing when none is given: 16K tokens is ~13 examples of
# the paper's 1216-token maximum, big enough that fixed per-step costs (ZeRO-3 gathers,
# kernel launches) are small next to the matmuls, small enough for a 7B model's activations.
DEFAULT_TOKENS_PER_BATCH = 16_384

Switch = Literal["auto", "on", "off"]


class TrainRecipe(FingerprintedConfig):
    """One fine-tuning run: data, model, the paper's hyperparameters, and how it runs."""

    # --- data ------------------------------------------------------------------------------
    datasets: list[str] = Field(
        min_length=1,
        description="dataset version directories (manifest.json + data/*.parquet); several are mixed",
        json_schema_extra={"flag": "--dataset"},
    )
    instruction_column: str = Field("problem", description="column holding the instruction")
    response_column: str = Field("solution", description="column holding the response (the only text with loss)")

    # --- model -----------------------------------------------------------------------------
    model: str = Field("tiny", description="hub id or local path of the base model, or 'tiny' (built locally)")
    continue_from: Optional[str] = Field(
        None, description="start from this trained model (the 'S' recipe: OSS-Instruct first, then another dataset)"
    )
    random_init: bool = Field(
        False, description="build the model from the config in --model with random weights (benchmarks)"
    )

    # --- the paper's hyperparameters -------------------------------------------------------
    max_length: int = Field(1216, ge=16, description="tokens per example; longer ones are cut on the right and counted")
    epochs: float = Field(2.0, gt=0, description="passes over the data")
    max_steps: Optional[int] = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate")
    lr_scheduler: str = Field("linear", description="any transformers lr_scheduler_type")
    warmup_steps: int = Field(15, ge=0, description="linear warmup steps")
    global_batch_size: int = Field(
        512, ge=1, description="examples per optimizer step (with packing: on average); accumulation is derived"
    )
    optim: str = Field("adafactor", description="any transformers optim name")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    seed: int = Field(976, description="seed of the model init, the data order and the packing")

    # --- batching ----------------------------------------------------------------------------
    # Packing changes which examples share an optimizer step, so it is part of the output.
    packing: bool = Field(
        False,
        description="token-budget packing: examples of the whole shuffled dataset bin-packed into rows of "
        "--max-tokens-per-batch tokens (documents kept apart); the paper padded",
    )
    max_tokens_per_batch: int = Field(
        DEFAULT_TOKENS_PER_BATCH, ge=16, description="with --packing: tokens per packed row, one row per GPU per forward"
    )
    micro_batch_size: int = operational(8, ge=1, description="without --packing: examples per GPU per forward pass")

    # --- how it runs (none of these changes the model) ------------------------------------
    attn_implementation: Optional[str] = operational(
        None,
        description="default: flash_attention_2 when installed on GPU, flex_attention for packed rows on GPU, else sdpa",
    )
    liger: Switch = operational(
        "auto", description="Liger Kernel's fused Triton kernels (RMSNorm, SwiGLU, RoPE, linear+cross-entropy); "
        "auto: on for GPU when installed, off on CPU",
    )  # fmt: skip
    gradient_checkpointing: Switch = operational(
        "auto", description="auto: on only when the estimated memory of a step does not fit the GPU"
    )
    deepspeed_config: str = operational(str(CONFIG_DIR / "zero3.json"), description="ZeRO-3 config template")
    offload: Literal["none", "optimizer", "param", "both"] = operational(
        "none", description="ZeRO-3 offload of optimizer state and/or parameters to CPU memory"
    )
    save_steps: int = operational(500, ge=0, description="checkpoint every N steps (0: no checkpoints)")
    save_total_limit: int = operational(2, ge=1, description="checkpoints kept (the newest)")
    logging_steps: int = operational(1, ge=1, description="a metrics record every N optimizer steps")
    final_save: bool = operational(True, description="write the consolidated model to OUTPUT/final")
    resume: bool = operational(True, description="continue from the latest complete checkpoint in output_dir, if any")
    cpu: bool = operational(False, description="CPU ranks over gloo, fp32 (no GPU needed; the tiny preset)")
    output_dir: str = operational(description="checkpoints/, final/, metrics.jsonl, summary.json")

    @field_validator("datasets", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _row_holds_an_example(self):
        if self.packing and self.max_tokens_per_batch < self.max_length:
            raise ValueError(
                f"max_tokens_per_batch ({self.max_tokens_per_batch}) must hold one example of max_length "
                f"({self.max_length})"
            )
        return self

    def recipe(self) -> TrainRecipe:
        """Only the recipe's fields (a subclass, such as the flow's config, carries more)."""
        return TrainRecipe.model_validate(self.model_dump(include=set(TrainRecipe.model_fields)))


# --- the command line, generated from the model -------------------------------------------


def _flag(name: str) -> str:
    extra = TrainRecipe.model_fields[name].json_schema_extra
    return (extra or {}).get("flag") or "--" + name.replace("_", "-")


def _kind(annotation) -> tuple[str, tuple | None]:
    """('bool' | 'list' | 'value', Literal choices or None) of a field annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is bool:
        return "bool", None
    if typing.get_origin(annotation) is list:
        return "list", None
    if typing.get_origin(annotation) is Literal:
        return "value", typing.get_args(annotation)
    return "value", None


def recipe_parser() -> argparse.ArgumentParser:
    """An argparse parser with one option per field; values are validated by the model."""
    parser = argparse.ArgumentParser(
        prog="python -m training.sft", description=TrainRecipe.__doc__, argument_default=argparse.SUPPRESS
    )
    for name, field in TrainRecipe.model_fields.items():
        kind, choices = _kind(field.annotation)
        help_text = field.description or ""
        if not field.is_required():
            help_text += f" (default: {field.get_default(call_default_factory=True)})"
        options = {"dest": name, "help": help_text}
        if kind == "bool":
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **options)
        elif kind == "list":
            parser.add_argument(_flag(name), action="append", required=field.is_required(), **options)
        else:
            parser.add_argument(_flag(name), choices=choices, required=field.is_required(), **options)
    return parser


def parse_recipe(argv: list[str] | None = None) -> TrainRecipe:
    """The recipe a command line describes; a bad value exits with one line naming the field."""
    values = vars(recipe_parser().parse_args(argv))
    try:
        return TrainRecipe.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "recipe"
        raise SystemExit(f"invalid training recipe: {where}: {first['msg']}") from None


def to_argv(recipe: TrainRecipe) -> list[str]:
    """The command line that `parse_recipe` turns back into this recipe (every field spelled out)."""
    argv: list[str] = []
    for name, field in TrainRecipe.model_fields.items():
        value = getattr(recipe, name)
        kind, _ = _kind(field.annotation)
        if value is None:
            continue
        if kind == "bool":
            argv.append(_flag(name) if value else "--no-" + _flag(name)[2:])
        elif kind == "list":
            for item in value:
                argv += [_flag(name), str(item)]
        else:
            argv += [_flag(name), str(value)]
    return argv
