"""The packing guarantee, and the transformers floor it rests on (issue 14).

Packed rows carry no attention mask: documents are kept apart only by position_ids that
restart at 0, which transformers turns into per-document attention for sdpa/eager/flex
since 4.54 (huggingface/transformers#39194); `dtype=` (training/sft.py) is accepted since
4.56 (#39782). pyproject.toml's lower bound is the first version with both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from training.data import tokenize_rows  # noqa: E402
from training.packing import PackedRowCollator, pack_examples  # noqa: E402
from training.tiny import build_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_the_transformers_floor_is_the_first_version_that_masks_packed_rows_and_takes_dtype():
    from packaging.version import Version

    bound = re.search(r'"transformers>=([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert Version(bound) >= Version("4.56")  # packed masks (4.54) and dtype= (4.56)
    assert Version(transformers.__version__) >= Version(bound)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_each_document_of_a_packed_row_has_the_logits_it_has_alone(tiny_dir, attn):
    """A tiny model from its config, loaded with dtype=: the logits of every document inside a
    packed row equal its logits run on its own."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32,
                                                              attn_implementation=attn).eval()
    examples, _ = tokenize_rows(tokenizer, ["Add one.", "Sort a list.", "Reverse it."],
                                ["x + 1", "sorted(xs)", "def rev(xs):\n    return xs[::-1]"], 128)
    row = pack_examples([dict(e) for e in examples], 256, seed=0)[0]
    assert row["documents"] == 3
    batch = PackedRowCollator(256, tokenizer.pad_token_id)([row])
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        for begin, end in zip(starts, starts[1:]):
            alone = model(input_ids=batch["input_ids"][:, begin:end], use_cache=False).logits[0]
            torch.testing.assert_close(packed[begin:end], alone, rtol=1e-4, atol=1e-4)
