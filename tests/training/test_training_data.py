"""Template, masking, truncation counting and packing for SFT (no distributed run)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.training_data import write_toy_dataset  # noqa: E402

from training.data import (  # noqa: E402
    IGNORE_INDEX,
    build_train_dataset,
    dataset_files,
    encode_example,
    format_prompt,
    padded_collator,
    tokenize_rows,
)
from training.packing import PackedRowCollator, pack_examples, pack_lengths  # noqa: E402
from training.tiny import build_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_dir)


def test_tiny_preset_loads_and_generates(tiny_dir, tokenizer):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir)
    params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < params < 10_000_000
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    text = "def add(a, b):\n    return a + b\n"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # byte-level: lossless
    out = model.generate(**tokenizer("def f(x):", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert out.shape[1] > 1
    # rebuilding into the same directory reuses the complete build
    assert build_tiny_model(tiny_dir) == tiny_dir


def test_prompt_is_the_papers_template():
    prompt = format_prompt("Reverse a list.")
    assert prompt.startswith("You are an exceptionally intelligent coding assistant")
    assert prompt.endswith("\n\n@@ Instruction\nReverse a list.\n\n@@ Response\n")


def test_prompt_tokens_are_masked_response_and_eos_are_not(tokenizer):
    example = encode_example(tokenizer, "Add two numbers.", "def add(a, b):\n    return a + b", max_length=1216)
    prompt_len = len(tokenizer(format_prompt("Add two numbers."))["input_ids"])
    labels, ids = example["labels"], example["input_ids"]
    assert len(labels) == len(ids)
    assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    assert IGNORE_INDEX not in labels[prompt_len:]
    assert ids[-1] == tokenizer.eos_token_id and labels[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[prompt_len:-1]) == "def add(a, b):\n    return a + b"
    assert example["truncated"] is False


def test_truncation_is_right_and_counted(tokenizer):
    instruction = "Write a long function."
    prompt_len = len(tokenizer(format_prompt(instruction))["input_ids"])
    long_response = "x = 1\n" * 200
    examples, stats = tokenize_rows(
        tokenizer,
        [instruction, instruction, "q " * 400, ""],
        ["return 1", long_response, "return 2", "orphan response"],
        max_length=prompt_len + 20,
    )
    assert stats.rows_in == 4
    assert stats.examples == 2 == len(examples)
    assert stats.truncated == 1
    # a prompt that fills max_length leaves nothing to learn; an empty instruction is not a sample
    assert dict(stats.dropped) == {"prompt_fills_max_length": 1, "empty_instruction_or_response": 1}
    cut = examples[1]
    assert len(cut["input_ids"]) == prompt_len + 20
    assert cut["input_ids"][-1] != tokenizer.eos_token_id  # right truncation drops the tail, EOS included
    assert stats.label_tokens == sum(sum(1 for x in e["labels"] if x != IGNORE_INDEX) for e in examples)


def test_reads_and_mixes_dataset_versions(tmp_path, tokenizer):
    write_toy_dataset(tmp_path / "a", n=10)
    write_toy_dataset(tmp_path / "b", n=6, offset=100)
    assert len(dataset_files(tmp_path / "a")) == 1
    dataset, stats = build_train_dataset(tokenizer, [str(tmp_path / "a"), str(tmp_path / "b")], max_length=256)
    assert len(dataset) == 16 and stats.rows_in == 16 and stats.truncated == 0


def packed_batch(examples, budget, pad_token_id, seed=0):
    rows = pack_examples([dict(e) for e in examples], budget, seed)
    return rows, PackedRowCollator(budget, pad_token_id)(rows)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_padded_loss(tiny_dir, tokenizer, attn):
    """Packed documents with restarting position_ids see only themselves: same loss as padding.

    use_cache=False as in training (the Trainer sets it): transformers derives the
    per-document mask from position_ids only when no KV cache is in play.
    """
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation=attn).eval()
    examples, _ = tokenize_rows(
        tokenizer,
        ["Add one.", "Write a function that multiplies three numbers together and returns it.", "Sort."],
        ["def f(x):\n    return x + 1", "def mul3(a, b, c):\n    return a * b * c", "sorted(xs)"],
        max_length=256,
    )
    padded = padded_collator(tokenizer)([dict(e) for e in examples])
    rows, packed = packed_batch(examples, 256, tokenizer.pad_token_id)
    assert packed["input_ids"].shape == (1, 256) and "attention_mask" not in packed and len(rows) == 1
    assert padded["input_ids"].shape[1] > max(len(e["input_ids"]) for e in examples) - 1
    with torch.no_grad():
        padded_loss = model(**padded, use_cache=False).loss
        packed_loss = model(**packed, use_cache=False).loss
    assert torch.isfinite(padded_loss)
    assert packed_loss.item() == pytest.approx(padded_loss.item(), rel=1e-4, abs=1e-5)

    # and the control: the same row WITHOUT restarting positions lets documents attend to
    # each other, which changes the loss (so the test would catch cross-document attention)
    flat_positions = torch.arange(packed["input_ids"].shape[1]).unsqueeze(0)
    with torch.no_grad():
        leaky = model(input_ids=packed["input_ids"], labels=packed["labels"], position_ids=flat_positions, use_cache=False).loss
    assert abs(leaky.item() - padded_loss.item()) > 1e-3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bin_packed_rows_give_the_padded_loss(tiny_dir, tokenizer, attn):
    """Several packed rows, each filled to the budget with pad ids: same loss again, exact counts."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation=attn).eval()
    responses = ["return 1", "def f(x):\n    return x * 2", "x = [1, 2, 3]\n" * 6, "pass", "sorted(xs)"]
    examples, _ = tokenize_rows(tokenizer, [f"Task {i}." for i in range(5)], responses, max_length=256)
    longest = max(len(e["input_ids"]) for e in examples)
    rows, packed = packed_batch(examples, longest + 10, tokenizer.pad_token_id)
    n_rows, width = packed["input_ids"].shape
    assert 1 < n_rows < len(examples) and width == longest + 10  # several examples share rows
    # The fill is pad ids, so a count of non-padding ids (tokens/s, MFU) is the real tokens.
    real = sum(len(e["input_ids"]) for e in examples)
    assert (packed["input_ids"] != tokenizer.pad_token_id).sum() == real
    assert (packed["input_ids"] == tokenizer.pad_token_id).sum() == n_rows * width - real
    assert (packed["labels"] != IGNORE_INDEX).sum() == sum(
        sum(1 for x in e["labels"][1:] if x != IGNORE_INDEX) for e in examples
    )
    padded = padded_collator(tokenizer)([dict(e) for e in examples])
    with torch.no_grad():
        padded_loss = model(**padded, use_cache=False).loss
        packed_loss = model(**packed, use_cache=False).loss
    assert packed_loss.item() == pytest.approx(padded_loss.item(), rel=1e-4, abs=1e-5)


def test_token_count_rides_with_the_batch_and_excludes_padding(tokenizer):
    from training.data import counting_tokens
    from training.metrics import TOKENS_KEY

    examples, stats = tokenize_rows(tokenizer, ["Add one.", "Sort a list."], ["x + 1", "sorted(xs)\n" * 5], max_length=128)
    padded = counting_tokens(padded_collator(tokenizer))([dict(e) for e in examples])
    rows = pack_examples([dict(e) for e in examples], 256, seed=0)
    packed = counting_tokens(PackedRowCollator(256, tokenizer.pad_token_id))(rows)
    assert padded[TOKENS_KEY] == packed[TOKENS_KEY] == stats.tokens
    assert padded["input_ids"].numel() > stats.tokens  # the padded batch is bigger than its count
    assert packed["input_ids"].numel() > stats.tokens  # and so is the filled row


def test_packing_places_every_example_once_across_the_whole_dataset():
    import random

    rng = random.Random(1)
    lengths = [min(1216, int(rng.lognormvariate(6.3, 0.5))) for _ in range(5000)]
    rows = pack_lengths(lengths, 16384, seed=976)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(len(lengths)))  # nothing lost, nothing twice
    assert all(sum(lengths[i] for i in row) <= 16384 for row in rows)
    fill = sum(lengths) / (len(rows) * 16384)
    assert fill > 0.95, fill  # across the dataset, not within a micro-batch: rows come out nearly full
    assert pack_lengths(lengths, 16384, seed=976) == rows  # seeded
    assert pack_lengths(lengths, 16384, seed=977) != rows
    with pytest.raises(ValueError, match="does not fit"):
        pack_lengths([10, 300], 256, seed=0)


def per_document_nll(model, examples):
    """Summed next-token NLL and label count of each example, run alone (no padding, no packing)."""
    total, count = 0.0, 0
    for e in examples:
        ids = torch.tensor([e["input_ids"]])
        labels = torch.tensor([e["labels"]])
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1]
        targets = labels[0, 1:]
        keep = targets != IGNORE_INDEX
        total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
        count += int(keep.sum())
    return total, count


ATTENTIONS = ["sdpa", pytest.param("flex_attention", marks=pytest.mark.slow)]  # flex compiles its kernel (~1 min on CPU)


@pytest.mark.parametrize("attn", ATTENTIONS)
def test_packed_loss_is_the_mean_over_the_examples_run_alone(tiny_dir, tokenizer, attn):
    """The loss of a packed batch is the token mean over the same examples, each run unpacked."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation=attn).eval()
    responses = ["return 1", "def f(x):\n    return x * 2", "x = [1, 2, 3]\n" * 6, "pass", "sorted(xs)", "y = 2"]
    examples, _ = tokenize_rows(tokenizer, [f"Task {i}." for i in range(6)], responses, max_length=256)
    rows, packed = packed_batch(examples, 256, tokenizer.pad_token_id)
    assert sum(r["documents"] for r in rows) == len(examples) and len(rows) >= 2
    with torch.no_grad():
        packed_loss = model(**packed, use_cache=False).loss.item()
    total, count = per_document_nll(model, examples)
    assert packed_loss == pytest.approx(total / count, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("attn", ATTENTIONS)
def test_no_token_attends_across_documents(tiny_dir, tokenizer, attn):
    """Changing one document of a packed row leaves every other document's logits as they were."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation=attn).eval()
    examples, _ = tokenize_rows(tokenizer, ["Add one.", "Sort.", "Reverse."], ["x + 1", "sorted(xs)", "xs[::-1]"], 128)
    row = pack_examples([dict(e) for e in examples], 256, seed=0)[0]
    batch = PackedRowCollator(256, tokenizer.pad_token_id)([row])
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
    first_end = starts[1]
    altered = batch["input_ids"].clone()
    altered[0, 1:first_end] = (altered[0, 1:first_end] + 7) % len(tokenizer)  # rewrite document 1 (not its BOS)
    with torch.no_grad():
        before = model(**batch, use_cache=False).logits[0]
        after = model(input_ids=altered, position_ids=batch["position_ids"], use_cache=False).logits[0]
        leaky = model(input_ids=altered, position_ids=torch.arange(256).unsqueeze(0), use_cache=False).logits[0]
        leaky_before = model(input_ids=batch["input_ids"], position_ids=torch.arange(256).unsqueeze(0), use_cache=False).logits[0]
    assert not torch.allclose(before[1:first_end], after[1:first_end])  # document 1 did change
    torch.testing.assert_close(after[first_end:], before[first_end:], rtol=1e-5, atol=1e-5)  # the others did not
    # control: with positions that do not restart, the same edit reaches the later documents
    assert (leaky[first_end:] - leaky_before[first_end:]).abs().max() > 1e-3
