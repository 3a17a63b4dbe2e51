"""Training throughput: padded batches (the paper) vs token-budget packing vs packing + fused kernels.

Builds a Llama-shaped model from a config (no download, random init: throughput does not
depend on the weights), writes synthetic instruction data whose token lengths follow an
OSS-Instruct-like distribution, and runs the real training path (`training/sft.py` under
torchrun + DeepSpeed ZeRO-3) for a fixed number of steps once per variant. Prints ONE JSON
line: tokens/s/GPU (real tokens) and MFU for each variant, each one's ratio to padded, and
the variant that won. Every variant trains the same examples per optimizer step.

    python bench/train_throughput.py                      # ~1B model, one GPU, ~4 minutes
    python bench/train_throughput.py --size tiny --cpu    # the same path on CPU (padded, packed)
    bench/gpu_check.sh                                    # on a bare GPU box with carried wheels

Synthetic lengths (assumed, not measured from the dataset): instruction ~ lognormal with
median 150 tokens, response ~ lognormal with median 320 tokens (both sigma 0.6), plus the
template's ~30 tokens, truncated at 1216 like training. Text is real code (standard-library
source) cut to those lengths, tokenized by the tiny preset's BPE.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = {
    # ~0.95B parameters: TinyLlama-like width, 16 layers, GQA, a 32k vocabulary.
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
               num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096),
    "tiny": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096, max_position_embeddings=2048),
}  # fmt: skip


def write_model(out_dir: Path, size: str) -> Path:
    """config.json (weights are built at random by sft.py --random-init) + the tiny tokenizer."""
    from transformers import LlamaConfig

    from training.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    shape = dict(SHAPES[size])
    shape["vocab_size"] = max(shape["vocab_size"], len(tokenizer))
    config = LlamaConfig(
        **shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def write_dataset(out_dir: Path, n_samples: int, seed: int = 976) -> dict:
    """Parquet rows (problem, solution) with OSS-Instruct-like token lengths."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.tiny import build_tiny_tokenizer, corpus_texts

    tokenizer = build_tiny_tokenizer()
    stream = tokenizer("\n".join(corpus_texts()), add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(seed)
    prompt_lens = np.clip(rng.lognormal(np.log(150), 0.6, n_samples), 16, 900).astype(int)
    response_lens = np.clip(rng.lognormal(np.log(320), 0.6, n_samples), 16, 1100).astype(int)
    starts = rng.integers(0, len(stream) - 2100, n_samples)
    problems, solutions = [], []
    for start, p_len, r_len in zip(starts, prompt_lens, response_lens):
        problems.append(tokenizer.decode(stream[start : start + p_len]))
        solutions.append(tokenizer.decode(stream[start + p_len : start + p_len + r_len]))
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"problem": problems, "solution": solutions}), out_dir / "data" / "train-00000.parquet")
    return {"samples": n_samples, "median_prompt_tokens": int(np.median(prompt_lens)),
            "median_response_tokens": int(np.median(response_lens))}  # fmt: skip


VARIANTS = {
    # name: the recipe fields that differ between variants (everything else is shared)
    "padded": {"packing": False, "liger": "off"},
    "packed": {"packing": True, "liger": "off"},
    "packed+fused": {"packing": True, "liger": "on"},
}


def variant_recipe(args, model_dir: Path, data_dir: Path, out_dir: Path, variant: str):
    """The recipe of one variant: same model, data, steps and examples per step for all."""
    from training.recipe import TrainRecipe

    return TrainRecipe(
        datasets=[str(data_dir)], model=str(model_dir), random_init=True, output_dir=str(out_dir),
        max_steps=args.warmup_steps + args.steps, warmup_steps=1,
        global_batch_size=args.global_batch_size, micro_batch_size=args.micro_batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        logging_steps=args.warmup_steps, save_steps=0, final_save=False, resume=False,
        gradient_checkpointing=args.gradient_checkpointing, attn_implementation=args.attn, cpu=args.cpu,
        **VARIANTS[variant],
    )  # fmt: skip


def run_variant(args, recipe) -> tuple[dict, dict]:
    """One training run through the real launcher; its metrics.jsonl gives the figures."""
    from training.recipe import to_argv

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
           "-m", "training.sft", *to_argv(recipe)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}, {}
    if proc.returncode != 0:  # report it in the JSON line and go on with the other variants
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        return {"error": f"exit code {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}, {}
    records = [json.loads(line) for line in (Path(recipe.output_dir) / "metrics.jsonl").read_text().splitlines()]
    start = next(r for r in records if r["event"] == "start")
    logs = [r for r in records if r["event"] in ("log", "train_end") and "tokens_per_s_per_gpu" in r]
    # The first logging window holds start-up (allocator warm-up, kernel compilation): skip it.
    timed = logs[1:] or logs
    tokens_per_s = sum(r["tokens_per_s_per_gpu"] for r in timed) / len(timed)
    mfus = [r["mfu"] for r in timed if r.get("mfu") is not None]
    return {
        "tokens_per_s_per_gpu": round(tokens_per_s, 1),
        "mfu": round(sum(mfus) / len(mfus), 4) if mfus else None,
        "final_loss": timed[-1].get("loss"),
        "attn_implementation": start["attn_implementation"],
        "liger": start["liger"],
        "gradient_checkpointing": start["gradient_checkpointing"],
        "examples_per_step": start["global_batch_size"],
        "gradient_accumulation": start["gradient_accumulation_steps"],
        "packing": start["packing"],
        "memory_estimate_gb": start["memory_estimate_gb"],
        "peak_memory_gb": next((r.get("peak_memory_gb") for r in records if r["event"] == "train_end"), None),
        "wall_s": round(time.perf_counter() - started, 1),
    }, start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SHAPES), default="1b")
    p.add_argument("--steps", type=int, default=6, help="timed optimizer steps per variant")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before them (one logging window)")
    p.add_argument("--global-batch-size", type=int, default=128, help="examples per optimizer step, every variant")
    p.add_argument("--micro-batch-size", type=int, default=16, help="padded: examples per forward")
    p.add_argument("--max-tokens-per-batch", type=int, default=16384, help="packed: tokens per row (per forward)")
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--attn", default=None, help="attention implementation (default: sft.py's choice per variant)")
    p.add_argument("--gradient-checkpointing", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--variants", default=None, help="comma-separated (default: all; packed+fused only on GPU)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--timeout", type=int, default=300, help="seconds per variant (a cold flex_attention compile takes minutes)")
    args = p.parse_args()

    import tempfile

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ossforge-train-bench-"))
    model_dir = write_model(work / "model", args.size)
    # Enough examples that no variant runs out before its last step (packing keeps ~all).
    n_samples = int(args.global_batch_size * (args.warmup_steps + args.steps) * 1.1) + args.nproc
    data = write_dataset(work / "dataset", n_samples)
    variants = args.variants.split(",") if args.variants else [v for v in VARIANTS if not (args.cpu and "fused" in v)]

    results, start = {}, {}
    for variant in variants:
        recipe = variant_recipe(args, model_dir, work / "dataset", work / variant.replace("+", "_"), variant)
        results[variant], started = run_variant(args, recipe)
        start = started or start
    figures = {
        "bench": "train_throughput",
        "device": start.get("device"),
        "parameters": start.get("parameters"),
        "nproc": args.nproc,
        "global_batch_size": args.global_batch_size,
        "micro_batch_size": args.micro_batch_size,
        "max_tokens_per_batch": args.max_tokens_per_batch,
        "timed_steps": args.steps,
        "zero3": start.get("zero3"),
        "data": data,
        **results,
    }
    measured = {v: r["tokens_per_s_per_gpu"] for v, r in results.items() if "tokens_per_s_per_gpu" in r}
    if "padded" in measured:
        for variant in measured:
            if variant != "padded":
                figures[f"{variant}_over_padded"] = round(measured[variant] / measured["padded"], 3)
    if measured:
        figures["best"] = max(measured, key=measured.get)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
