"""Turning dataset shards into training examples: the paper's template, masking, packing.

An example is `input_ids` = BOS? + prompt + response + EOS and `labels` = -100 over the prompt,
the token ids over response + EOS (Magicoder trains on the response and EOS only). Examples
longer than `max_length` are cut on the right and counted; an example left with no response
token (its prompt alone fills `max_length`) teaches nothing and is dropped with that reason.

Batches are either padded (the paper; `padded_collator`) or token-budget packed rows
(training/packing.py). Either way `counting_tokens` attaches the exact count of real tokens.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.chat_template import INSTRUCTION_COLUMN, PROMPT_TEMPLATE, RESPONSE_COLUMN, SYSTEM, format_prompt  # noqa: F401
from training.metrics import TOKENS_KEY

IGNORE_INDEX = -100


@dataclass
class DataStats:
    """What tokenization did to the rows: nothing disappears without a counted reason."""

    rows_in: int = 0
    examples: int = 0
    truncated: int = 0  # kept, but cut at max_length (loss on the response's head only)
    dropped: Counter = field(default_factory=Counter)  # reason -> rows
    tokens: int = 0  # tokens in kept examples after truncation
    label_tokens: int = 0  # of those, tokens that carry loss

    def as_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "examples": self.examples,
            "truncated": self.truncated,
            "dropped": dict(self.dropped),
            "tokens": self.tokens,
            "label_tokens": self.label_tokens,
        }


def encode_example(tokenizer, instruction: str, response: str, max_length: int) -> dict:
    """Token ids and labels for one row; `truncated` tells whether max_length cut it.

    Prompt and response are tokenized separately, so the mask boundary is exact whatever
    the tokenizer merges across the "@@ Response\\n" line break.
    """
    prompt_ids = tokenizer(format_prompt(instruction), add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = prompt_ids + response_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    truncated = len(input_ids) > max_length
    return {
        "input_ids": input_ids[:max_length],
        "labels": labels[:max_length],
        "truncated": truncated,
    }


def tokenize_rows(tokenizer, instructions, responses, max_length: int) -> tuple[list[dict], DataStats]:
    """Encode rows into examples, counting truncations and drops."""
    stats = DataStats()
    examples = []
    for instruction, response in zip(instructions, responses, strict=True):
        stats.rows_in += 1
        if not instruction or not response:
            stats.dropped["empty_instruction_or_response"] += 1
            continue
        example = encode_example(tokenizer, instruction, response, max_length)
        n_labels = sum(1 for label in example["labels"] if label != IGNORE_INDEX)
        if n_labels == 0:
            stats.dropped["prompt_fills_max_length"] += 1
            continue
        stats.truncated += example.pop("truncated")
        stats.examples += 1
        stats.tokens += len(example["input_ids"])
        stats.label_tokens += n_labels
        examples.append(example)
    return examples, stats


# --- reading dataset versions -----------------------------------------------------------


def dataset_files(dataset_dir: str | os.PathLike) -> list[Path]:
    """Parquet shards of a dataset version: those its manifest lists, else data/*.parquet."""
    dataset_dir = Path(dataset_dir)
    manifest = dataset_dir / "manifest.json"
    if manifest.exists():
        files = [dataset_dir / f["path"] for f in json.loads(manifest.read_text())["files"]]
    elif dataset_dir.is_file():
        files = [dataset_dir]
    else:
        files = sorted((dataset_dir / "data").glob("*.parquet")) or sorted(dataset_dir.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet shards in {dataset_dir}")
    return files


def load_rows(
    dataset_dirs: list[str],
    instruction_column: str = INSTRUCTION_COLUMN,
    response_column: str = RESPONSE_COLUMN,
) -> tuple[list[str], list[str]]:
    """Instructions and responses of one or more dataset versions, concatenated.

    Several directories mix datasets that share the two text columns (OSS-Instruct plus
    another instruction set). Only the text columns are read, straight from Parquet with
    pyarrow: no `datasets` cache directory for ranks to race over, one dependency fewer on
    the GPU box. The Trainer's sampler shuffles (seeded), so mixing order does not matter.
    """
    import pyarrow.parquet as pq

    instructions, responses = [], []
    for dataset_dir in dataset_dirs:
        for path in dataset_files(dataset_dir):
            table = pq.read_table(path, columns=[instruction_column, response_column])
            instructions += table.column(instruction_column).to_pylist()
            responses += table.column(response_column).to_pylist()
    return instructions, responses


def build_train_dataset(tokenizer, dataset_dirs: list[str], max_length: int, **columns) -> tuple[list[dict], DataStats]:
    """Tokenized, masked examples (a list is a map-style dataset for the Trainer) and DataStats."""
    instructions, responses = load_rows(dataset_dirs, **columns)
    return tokenize_rows(tokenizer, instructions, responses, max_length)


# --- collators ----------------------------------------------------------------------------


def counting_tokens(collator):
    """The collator, plus each batch's real token count (the examples' lengths: padding and
    packing filler never count) under training.metrics.TOKENS_KEY, as a Python int."""

    def collate(features):
        tokens = sum(len(f["input_ids"]) for f in features)
        batch = collator(features)
        batch[TOKENS_KEY] = tokens
        return batch

    return collate


def padded_collator(tokenizer, pad_to_multiple_of: int | None = 8):
    """Right-padded batches with an attention mask; padded label positions are -100."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(
        tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=pad_to_multiple_of
    )
