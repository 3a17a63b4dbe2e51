"""Greedy completions from a trained model: vLLM on a GPU worker when installed, else
transformers `generate` in batches (CPU or GPU).

One completion per prompt, temperature 0 (pass@1 by greedy decoding, as the Magicoder
paper reports). Generation stops at the closing ``` of the code block the prompt opened,
or at EOS, or at `max_new_tokens`.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

from tasks.core.errors import UserError

STOP = "```"  # the response prefix opens a ```python block; its end is the end of the code


@dataclass
class GenerationSettings:
    max_new_tokens: int = 512
    batch_size: int = 8
    backend: str = "auto"  # auto | transformers | vllm


def choose_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    if importlib.util.find_spec("vllm") is not None:
        import torch

        if torch.cuda.is_available():
            return "vllm"
    return "transformers"


def generate_completions(model_path: str, prompts: list[str], settings: GenerationSettings) -> tuple[list[str], dict]:
    """Completions in prompt order, plus figures: backend, device, seconds, tokens, too_long."""
    backend = choose_backend(settings.backend)
    start = time.perf_counter()
    if backend == "vllm":
        completions, stats = _generate_vllm(model_path, prompts, settings)
    elif backend == "transformers":
        completions, stats = _generate_transformers(model_path, prompts, settings)
    else:
        raise ValueError(f"unknown generation backend {backend!r}")
    stats.update(backend=backend, seconds=round(time.perf_counter() - start, 3), prompts=len(prompts))
    return completions, stats


def _generate_vllm(model_path: str, prompts: list[str], settings: GenerationSettings) -> tuple[list[str], dict]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=settings.max_new_tokens, stop=[STOP])
    outputs = llm.generate(prompts, params)
    completions = [o.outputs[0].text for o in outputs]
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return completions, {"device": "cuda", "generated_tokens": tokens, "too_long": 0}


def _generate_transformers(model_path: str, prompts: list[str], settings: GenerationSettings) -> tuple[list[str], dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    except (OSError, ValueError) as exc:  # missing files, no hub access, not a causal LM
        raise UserError(f"cannot load model {model_path}: {str(exc).strip().splitlines()[0]}") from None
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    max_positions = getattr(model.config, "max_position_embeddings", None) or 1 << 30

    # Encode as training did (tokenizer(...) with its special tokens, e.g. BOS).
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    completions = [""] * len(prompts)
    too_long = 0
    generated = 0
    # Longest first, so each batch holds prompts of similar length (little padding).
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    runnable = []
    for i in order:
        if len(encoded[i]) >= max_positions:
            too_long += 1  # left empty: scored as failed ("no_code")
        else:
            runnable.append(i)
    for start in range(0, len(runnable), settings.batch_size):
        batch = runnable[start : start + settings.batch_size]
        longest = max(len(encoded[i]) for i in batch)
        budget = min(settings.max_new_tokens, max_positions - longest)
        inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt").to(device)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=budget,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                stop_strings=[STOP],
                tokenizer=tokenizer,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        generated += int((new_tokens != tokenizer.pad_token_id).sum())
        for i, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            completions[i] = text
    return completions, {"device": device, "generated_tokens": generated, "too_long": too_long}
