"""Which attention and fused kernels a run uses, decided once from what is installed.

Attention (when the recipe names none):
- FlashAttention-2 when the `flash_attn` package is installed on a GPU: its varlen kernel
  takes packed rows as they are (transformers derives cu_seqlens from the restarting
  position_ids).
- else, for packed rows on a GPU, PyTorch's FlexAttention through transformers'
  `flex_attention`: restarting position_ids become a block mask, and blocks that would
  attend across documents are skipped, not computed and masked. (SDPA would need a dense
  row x row mask, which also rules out its flash kernel.)
- else SDPA (padded batches; CPU ranks).

Liger Kernel replaces RMSNorm, SwiGLU, RoPE and the output projection + cross-entropy with
fused Triton kernels; the last never materialises the logits. Triton kernels need a GPU,
so `auto` means on for GPU when the package is installed and off on CPU. The kernels
change no parameter, so checkpoints and the consolidated model are the same.
"""

from __future__ import annotations

import importlib.util


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def attention_implementation(requested: str | None, on_gpu: bool, packing: bool) -> str:
    if requested:
        return requested
    if on_gpu and installed("flash_attn"):
        return "flash_attention_2"
    if on_gpu and packing:
        return "flex_attention"
    return "sdpa"


def use_liger(setting: str, on_gpu: bool) -> bool:
    """auto: on for GPU when installed; `on` where it cannot run is a one-line error, not a silent no-op."""
    if setting == "off":
        return False
    if setting == "on":
        if not on_gpu:
            raise SystemExit("--liger on needs a GPU (its kernels are Triton); use --liger off or auto on CPU")
        if not installed("liger_kernel"):
            raise SystemExit("--liger on: liger-kernel is not installed (pip install liger-kernel)")
        return True
    return on_gpu and installed("liger_kernel")


def share_output_weight_with_root(model) -> None:
    """Let ZeRO-3 gather the output projection for the model's own forward.

    Liger's fused linear cross-entropy reads `lm_head.weight` inside the model's forward
    without calling the `lm_head` module, so ZeRO-3's gather hook on that module never
    fires and the kernel would see an empty shard. Registered as an external parameter of
    the root module, the weight is gathered for the root's forward and backward.
    """
    import deepspeed

    weight = model.get_output_embeddings().weight
    if hasattr(weight, "ds_id"):  # partitioned by zero.Init
        deepspeed.zero.register_external_parameter(model, weight)
