"""The `tiny` preset: a Llama-shaped model of a few million parameters, built offline.

Machines with no GPU and no hub access (CI, laptops, this project's tests) still need a
real causal LM and tokenizer to run the whole path: SFT under DeepSpeed, the consolidated
save, evaluation. Everything here is built locally and deterministically:

- the tokenizer is a byte-level BPE trained with `tokenizers` on a fixed set of Python
  standard-library modules (real code, always present, no download);
- the model is `LlamaForCausalLM` from a small `LlamaConfig`, randomly initialised with a
  fixed seed.

`build_tiny_model(out_dir)` writes both with `save_pretrained`, so
`AutoModelForCausalLM.from_pretrained(out_dir)` and `AutoTokenizer.from_pretrained(out_dir)`
load them like any hub model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

TINY = "tiny"  # the --model value that selects this preset
MARKER = "tiny_preset.json"  # written into a complete build

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
# Chat-ish markers so a chat template can be expressed; the paper's template is plain text.
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
SPECIAL_TOKENS = [BOS, EOS, PAD, UNK, *CHAT_TOKENS]

VOCAB_SIZE = 4096
MODEL_SHAPE = dict(
    hidden_size=128,
    intermediate_size=352,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)
SEED = 976  # the paper's seed, for the random init

# Standard-library modules whose source trains the BPE: plenty of real Python, present on
# every interpreter. Missing ones (other Python versions) are skipped, so the list is a floor.
CORPUS_MODULES = [
    "argparse", "ast", "asyncio.base_events", "collections", "configparser", "csv",
    "dataclasses", "difflib", "email.message", "enum", "fractions", "functools",
    "heapq", "http.client", "inspect", "json.decoder", "json.encoder", "logging",
    "os", "pathlib", "pprint", "queue", "random", "shutil", "statistics", "string",
    "subprocess", "tempfile", "textwrap", "threading", "typing", "unittest.case",
    "urllib.parse", "uuid", "zipfile",
]  # fmt: skip

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def corpus_texts() -> list[str]:
    """Source text of the corpus modules, in a fixed order."""
    texts = []
    for name in CORPUS_MODULES:
        spec = importlib.util.find_spec(name)
        origin = getattr(spec, "origin", None) if spec else None
        if origin and origin.endswith(".py") and os.path.exists(origin):
            texts.append(Path(origin).read_text(encoding="utf-8", errors="replace"))
    if not texts:
        raise RuntimeError("no standard-library source found to train the tiny tokenizer")
    return texts


def build_tiny_tokenizer():
    """A byte-level BPE (every string encodes, no unknown bytes) with BOS prepended like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_texts(), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=CHAT_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
        padding_side="right",
    )


def tiny_config(tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        **MODEL_SHAPE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_model(out_dir: str | os.PathLike) -> Path:
    """Write the tiny model + tokenizer to `out_dir` (idempotent: reuses a complete build)."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / MARKER).exists():
        return out_dir
    # Build beside the target and rename into place, so concurrent builders (several ranks,
    # several test workers) never see or write a half-built directory.
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = build_tiny_tokenizer()
    config = tiny_config(tokenizer)
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    params = sum(p.numel() for p in model.parameters())
    (tmp / MARKER).write_text(json.dumps({"preset": TINY, "parameters": params, "vocab_size": len(tokenizer)}) + "\n")
    try:
        os.replace(tmp, out_dir)  # fails if another builder won the race: theirs is as good
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out_dir / MARKER).exists():
            raise
    return out_dir


def resolve_model(name_or_path: str, cache_dir: str | os.PathLike) -> str:
    """`tiny` -> a built tiny model under cache_dir; anything else is passed through."""
    if name_or_path == TINY:
        return str(build_tiny_model(Path(cache_dir) / "tiny-model"))
    return name_or_path


if __name__ == "__main__":
    import sys

    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))
