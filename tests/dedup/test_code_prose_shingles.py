"""The code + prose view of near-dedup (tasks/dedup/shingles.py, canonicalize_identifiers=True):
rewrites a person or a teacher makes keep the similarity high, different programs keep it low."""

from __future__ import annotations

import numpy as np

from tasks.dedup.shingles import CODE_WEIGHT, batch_shingle_hashes, code_prose_tokens, shingle_hashes

PROBLEM = (
    "You maintain an inventory service. Write a function that merges two price tables, keeping the "
    "cheaper offer for every product, and reports which products changed supplier."
)
CODE = """```python
def merge_prices(current, incoming):
    changed = []
    for product, offer in incoming.items():
        best = current.get(product)
        if best is None or offer.price < best.price:
            current[product] = offer
            changed.append(product)
    return current, sorted(changed)
```"""


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    x = set(shingle_hashes(a, ngram, True).tolist())
    y = set(shingle_hashes(b, ngram, True).tolist())
    return len(x & y) / len(x | y)


def test_reworded_reordered_problem_with_renamed_code_stays_similar():
    original = PROBLEM + "\n" + CODE
    reworded = (
        "Report which products switched supplier, after you merge two price tables and keep the cheaper "
        "offer for each product. Your team runs an inventory service.\n"
        + CODE.replace("current", "table").replace("incoming", "updates").replace("changed", "moved")
    )
    # Word 5-grams of the whole text share almost nothing here; the code + prose view keeps most.
    assert jaccard(original, reworded) >= 0.7


def test_operators_and_called_names_tell_programs_apart():
    add = "```python\ndef combine(a, b):\n    total = a + b\n    return normalize(total)\n```"
    sub = add.replace("a + b", "a - b")
    other_call = add.replace("normalize(", "serialize(")
    assert code_prose_tokens(add)[0] != code_prose_tokens(sub)[0]
    assert b"normalize" in code_prose_tokens(add)[0] and b"combine" not in code_prose_tokens(add)[0]
    assert jaccard(add, sub, 3) < 1.0 and jaccard(add, other_call, 3) < 1.0
    # A renamed definition or variable is the same program.
    assert jaccard(add, add.replace("combine", "merge_two").replace("total", "acc"), 3) == 1.0


def test_prose_drops_stop_words_numbers_and_the_codes_identifiers():
    text = "Write a function that returns 42 tokens of `buf` from my_stream quickly.\n```c\nint buf = 0;\n```"
    code, prose = code_prose_tokens(text)
    assert prose == [b"tokens", b"quickly"]
    assert code == [b"int", b"_", b"=", b"0"]


def test_code_shingles_count_code_weight_times_and_weight_one_keeps_code_jaccard():
    text = PROBLEM + "\n" + CODE
    heavy, counts = batch_shingle_hashes([text], 5, True)
    light, light_counts = batch_shingle_hashes([text], 5, True, code_weight=1)
    _, prose = code_prose_tokens(text)
    assert counts[0] - len(prose) == CODE_WEIGHT * (light_counts[0] - len(prose))
    a, b = CODE, CODE.replace("sorted(changed)", "changed")
    j1 = jaccard(a, b)
    x = set(shingle_hashes(a, 5, True, code_weight=1).tolist())
    y = set(shingle_hashes(b, 5, True, code_weight=1).tolist())
    assert np.isclose(j1, len(x & y) / len(x | y))


def test_batch_equals_one_by_one():
    texts = [PROBLEM + "\n" + CODE, "", "just prose, no code at all", CODE, "x = 1"]
    hashes, counts = batch_shingle_hashes(texts, 4, True)
    parts = np.split(hashes, np.cumsum(counts)[:-1])
    for text, part in zip(texts, parts):
        assert np.array_equal(np.sort(part), np.sort(shingle_hashes(text, 4, True)))
