"""The minhash matcher's paraphrase rule: a benchmark item's code contained in the sample
(canonical 4-grams, numbers as 0) AND most of its problem's content words in the sample's
problem. A short MBPP solution paraphrased (renamed, re-spaced, another literal) is found;
the same program under a different problem is kept."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tasks.decontamination.decontaminate import DecontaminationConfig, build_index, decontaminate
from tasks.decontamination.matchers import code_of, words

PARAPHRASED_CODE = """```python
def biggest_from_digits(ds, count):
    # order the digits from high to low first
    ds.sort(reverse=True)
    value = ds[0]
    for k in range(1, count):
        value = value * 10 + ds[k]
    return value
```"""
# MBPP/57: "Write a python function to find the largest number that can be formed with the given digits."
PARAPHRASED_PROBLEM = ("Build a routine that takes a list of digits and its length and gives back the largest "
                       "integer those digits can be formed into.")
NEAR_MISS_PROBLEM = ("A sensor reports a list of single-digit readings. Sort the readings in descending order "
                     "and concatenate them into one integer for the dashboard.")


@pytest.fixture(scope="module")
def cfg(shared_benchmarks) -> DecontaminationConfig:
    return DecontaminationConfig(benchmark_dir=str(shared_benchmarks), allow_hub=False, benchmarks=["mbpp"],
                                 workers=1)


def test_paraphrased_short_solution_is_found_and_attributed(cfg):
    index = build_index(cfg)
    matcher = index.matchers["minhash"]
    scores = matcher.containment_scores([words(PARAPHRASED_PROBLEM)], [code_of(PARAPHRASED_CODE)])
    best = max((s for s in scores if index.items[s[1]].item_id == "mbpp/57"), key=lambda s: s[2])
    assert best[2] >= matcher.CONTAIN_CODE and best[3] >= matcher.CONTAIN_PROSE
    # The substring and n-gram matchers see nothing here: the rule is what finds it.
    table = pa.table({"id": ["p"], "problem": [PARAPHRASED_PROBLEM], "solution": [PARAPHRASED_CODE]})
    _, audit, stats = decontaminate(table, cfg)
    assert audit["benchmark_item"].to_pylist() == ["mbpp/57"]
    assert stats.extra["flagged_per_matcher"] == {"substring": 0, "ngram": 0, "minhash": 1}


def test_same_program_for_a_different_problem_is_kept(cfg):
    table = pa.table({"id": ["n"], "problem": [NEAR_MISS_PROBLEM], "solution": [PARAPHRASED_CODE]})
    kept, audit, _ = decontaminate(table, cfg)
    assert kept.num_rows == 1 and audit.num_rows == 0
