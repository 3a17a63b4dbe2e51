"""Token-budget packing: the whole shuffled dataset bin-packed into rows of a fixed width.

Packing inside one micro-batch (8-16 examples) barely shrinks a step: the row is about as
long as the padded batch was, and fixed per-step costs stay. Here every example of the
dataset is placed, once, before training, into a row of at most `budget` tokens (best fit,
longest first, ties in seeded shuffled order), so rows come out >95% full and one forward
pass carries `budget` tokens whatever the example lengths. The Trainer's seeded sampler
shuffles the rows every epoch; which examples share a row is fixed for the run.

Inside a row, documents stay apart:
- `position_ids` restart at 0 for each example, and no attention mask is passed. transformers
  turns restarting positions into per-document attention: cu_seqlens for FlashAttention-2,
  a block mask for flex_attention (blocks across documents are skipped, never computed),
  a block-diagonal mask for sdpa/eager.
- the first label of each example is -100, so no token is trained to predict the next
  document (it is the prompt's first token, masked anyway: this only makes it certain).
- the tail of a row is a filler segment of pad ids, its own "document" with labels -100.
Rows are filled to exactly `budget` tokens so every forward has the same shape: compiled
kernels (flex_attention) are built once, not once per length.
"""

from __future__ import annotations

import bisect
import random

from training.data import IGNORE_INDEX


def pack_lengths(lengths: list[int], budget: int, seed: int) -> list[list[int]]:
    """Indices of the examples in each row: best-fit decreasing over the shuffled dataset.

    Best fit (the fullest row the example still fits in) keeps the few big gaps for the
    long examples still to come. Rows are kept in a list sorted by free room, so each
    placement is a binary search: 75K examples pack in well under a second.
    """
    if any(n > budget for n in lengths):
        raise ValueError(f"an example of {max(lengths)} tokens does not fit a row of {budget}")
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: lengths[i], reverse=True)  # stable: equal lengths keep the shuffle
    rows: list[list[int]] = []
    by_room: list[tuple[int, int]] = []  # (free tokens, row index), ascending
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(by_room, (n, -1))
        if at == len(by_room):
            rows.append([i])
            bisect.insort(by_room, (budget - n, len(rows) - 1))
        else:
            room, row = by_room.pop(at)
            rows[row].append(i)
            bisect.insort(by_room, (room - n, row))
    random.Random(seed + 1).shuffle(rows)  # the first rows would otherwise hold the longest examples
    return rows


def pack_examples(examples: list[dict], budget: int, seed: int) -> list[dict]:
    """Packed rows (input_ids, labels, position_ids, all real tokens, no filler yet)."""
    rows = []
    for members in pack_lengths([len(e["input_ids"]) for e in examples], budget, seed):
        ids, labels, positions = [], [], []
        for i in members:
            example = examples[i]
            ids += example["input_ids"]
            labels += [IGNORE_INDEX] + list(example["labels"][1:])
            positions += range(len(example["input_ids"]))
        rows.append({"input_ids": ids, "labels": labels, "position_ids": positions, "documents": len(members)})
    return rows


class PackedRowCollator:
    """Stacks packed rows, each filled to exactly `width` tokens with a pad-id segment.

    The filler is pad ids with positions restarting at 0 (its own document, labels -100),
    so no real token attends to it, and a count of non-pad ids counts only real tokens.
    """

    def __init__(self, width: int, pad_token_id: int = 0):
        self.width = width
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        input_ids, labels, position_ids = [], [], []
        for row in rows:
            fill = self.width - len(row["input_ids"])
            if fill < 0:
                raise ValueError(f"a packed row of {len(row['input_ids'])} tokens is wider than {self.width}")
            input_ids.append(list(row["input_ids"]) + [self.pad_token_id] * fill)
            labels.append(list(row["labels"]) + [IGNORE_INDEX] * fill)
            position_ids.append(list(row["position_ids"]) + list(range(fill)))
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(position_ids, dtype=torch.long),
        }


def packing_stats(rows: list[dict], budget: int) -> dict:
    """How full the rows are: the share of a packed step's tokens that are real."""
    tokens = sum(len(r["input_ids"]) for r in rows)
    return {
        "rows": len(rows),
        "row_tokens": budget,
        "fill": round(tokens / (len(rows) * budget), 4) if rows else 0.0,
        "examples_per_row": round(sum(r["documents"] for r in rows) / len(rows), 2) if rows else 0.0,
    }
