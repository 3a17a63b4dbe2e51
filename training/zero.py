"""ZeRO-3 settings and the memory estimate, derived from the model's shape.

The template (configs/zero3.json) holds what never changes; the knobs that should follow
the model are computed here and recorded in metrics.jsonl's start record:

- `stage3_param_persistence_threshold`: parameters at most this big stay whole on every
  GPU instead of being gathered before each use. The default is 10 x hidden (norm weights
  and biases persist). When partitioning parameters saves nothing (one GPU) or little
  (the whole model in bf16 is under 5% of a GPU), every parameter persists: no gather at
  all, while gradients and optimizer state (the bulk: ~12 of every 16 bytes per parameter)
  stay partitioned across GPUs.
- `stage3_prefetch_bucket_size`: one decoder layer's parameters, so the next layer is being
  gathered while this one computes.
- `reduce_bucket_size`: one decoder layer's parameters, so gradients leave in a few large
  reduce-scatters (one per layer) rather than many small ones.
- `stage3_max_live_parameters` / `stage3_max_reuse_distance`: two layers' worth at least,
  so prefetching is not throttled.

Gradient checkpointing costs ~30% more compute, so `auto` turns it on only when a step is
estimated not to fit: model states (16 bytes per parameter with an Adam-class optimizer,
partitioned across GPUs, plus whole bf16 parameters where they persist) plus activations
(~34 x hidden bytes per token per layer in bf16 without checkpointing, the Megatron-LM
estimate with fused attention, plus the logits: 8 bytes per token per vocabulary entry
unless a fused linear cross-entropy never builds them) over 85% of the GPU's memory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

GPU_SHARE_FOR_WHOLE_PARAMS = 0.05  # persist every parameter when the bf16 model is below this share of a GPU
GPU_SHARE_USABLE = 0.85  # leave room for the allocator's fragmentation, NCCL buffers, the CUDA context


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    hidden_size: int
    layers: int
    vocab_size: int
    layer_parameters: int  # one decoder layer
    largest_parameter: int  # numel of the biggest single tensor (the embedding, usually)


def model_shape(config) -> ModelShape:
    """Exact parameter counts of a transformers config, from a model built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    sizes = [p.numel() for p in model.parameters()]
    layers = config.num_hidden_layers
    layer_module = model.get_decoder().layers[0]
    return ModelShape(
        parameters=sum(sizes),
        hidden_size=config.hidden_size,
        layers=layers,
        vocab_size=config.vocab_size,
        layer_parameters=sum(p.numel() for p in layer_module.parameters()),
        largest_parameter=max(sizes),
    )


def zero3_knobs(shape: ModelShape, world_size: int, gpu_bytes: int | None, offload: str) -> dict:
    """The zero_optimization entries derived from the model (see the module docstring)."""
    params_offloaded = offload in ("param", "both")
    whole = (
        gpu_bytes is not None
        and not params_offloaded
        and (world_size == 1 or 2 * shape.parameters <= GPU_SHARE_FOR_WHOLE_PARAMS * gpu_bytes)
    )
    layer = shape.layer_parameters
    return {
        "stage3_param_persistence_threshold": shape.largest_parameter + 1 if whole else 10 * shape.hidden_size,
        "stage3_prefetch_bucket_size": layer,
        "reduce_bucket_size": layer,
        "stage3_max_live_parameters": max(int(1e9), 2 * layer),
        "stage3_max_reuse_distance": max(int(1e9), 2 * layer),
    }


def deepspeed_config(template: str | Path, offload: str, knobs: dict) -> dict:
    """The template with the derived knobs and the offload choice filled in."""
    config = json.loads(Path(template).read_text())
    zero = config.setdefault("zero_optimization", {})
    zero.update(knobs)
    if offload in ("optimizer", "both"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload in ("param", "both"):
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return config


def step_memory_bytes(
    shape: ModelShape, tokens_per_forward: int, world_size: int, whole_params: bool, fused_cross_entropy: bool
) -> int:
    """Estimated peak GPU memory of one training step without gradient checkpointing."""
    states = 16 * shape.parameters // world_size + (2 * shape.parameters if whole_params else 0)
    activations = tokens_per_forward * 34 * shape.hidden_size * shape.layers
    logits = 0 if fused_cross_entropy else tokens_per_forward * 8 * shape.vocab_size
    return states + activations + logits


def needs_checkpointing(setting: str, on_gpu: bool, estimate_bytes: int, gpu_bytes: int | None) -> bool:
    """auto: only when the step is estimated not to fit; never on CPU (memory is not the limit there)."""
    if setting != "auto":
        return setting == "on"
    if not on_gpu or gpu_bytes is None:
        return False
    return estimate_bytes > GPU_SHARE_USABLE * gpu_bytes


def describe(shape: ModelShape) -> dict:
    return asdict(shape)
