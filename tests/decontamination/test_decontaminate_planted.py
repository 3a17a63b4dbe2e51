"""Planted contamination: each matcher must find what it is built for, and clean samples
that merely use common idioms must be kept.

The contaminated samples are written the way a teacher model writes OSS-Instruct pairs:
a framed problem statement and a Markdown solution. The verbatim ones embed benchmark text
read from the benchmark files; the paraphrases are rewritten by hand (renamed functions and
variables, reordered sentences, changed examples, a GSM8K question turned into a coding task).
"""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pytest

from tasks.decontamination.decontaminate import DecontaminationConfig, decontaminate


def _humaneval(shared, n: int) -> dict:
    with gzip.open(shared / "HumanEval.jsonl.gz", "rt") as fh:
        return [json.loads(line) for line in fh][n]


def _mbpp(shared, task_id: int) -> dict:
    with open(shared / "mbpp.jsonl") as fh:
        return next(r for r in map(json.loads, fh) if r["task_id"] == task_id)


def _gsm8k(shared, n: int) -> dict:
    with open(shared / "gsm8k_test.jsonl") as fh:
        return [json.loads(line) for line in fh][n]


# --- contaminated samples -----------------------------------------------------------------


def verbatim_humaneval_solution(shared) -> dict:
    item = _humaneval(shared, 0)
    return {
        "id": "planted-verbatim-humaneval",
        "problem": "You are working on a sensor pipeline. Write a function `has_close_elements(numbers, threshold)` "
        "that tells whether any two readings are closer than a threshold.",
        "solution": "Here is a straightforward implementation:\n\n```python\nfrom typing import List\n\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        + item["canonical_solution"] + "```\n\nThe double loop compares every pair of readings.",
    }


def verbatim_mbpp_solution(shared) -> dict:
    item = _mbpp(shared, 11)
    return {
        "id": "planted-verbatim-mbpp",
        "problem": "A text editor needs to strip the first and last occurrence of a marker character. "
        "Implement `remove_Occ(s, ch)`.",
        "solution": "```python\n" + item["code"] + "\n```\nThe loops scan from both ends.",
    }


PARAPHRASED_PAREN_PROBLEM = {
    # HumanEval/1, sentences reordered, function renamed, example changed.
    "id": "planted-paraphrase-humaneval-1",
    "problem": "Ignore any spaces in the input string. Separate groups are balanced (each open brace is properly "
    "closed) and not nested within each other. The input to your function is a string containing multiple "
    "groups of nested parentheses; your goal is to separate those groups into separate strings and return "
    "the list of them.\n\nImplement `split_groups(s: str) -> List[str]`.\n\nExample: "
    "`split_groups('(()) ( ) ((()))')` returns `['(())', '()', '((()))']`.",
    "solution": "```python\ndef split_groups(s):\n    groups, buf, level = [], '', 0\n    for ch in s.replace(' ', ''):\n"
    "        buf += ch\n        level += 1 if ch == '(' else -1\n        if level == 0:\n"
    "            groups.append(buf)\n            buf = ''\n    return groups\n```",
}

RENAMED_HUMANEVAL_SOLUTION = {
    # HumanEval/1's canonical solution with every name changed and a new problem framing.
    "id": "planted-renamed-solution-humaneval-1",
    "problem": "A log parser receives bracket expressions such as `(()) ()`. Write `chunk_brackets(text)` "
    "returning each top-level bracket group as its own string, skipping whitespace.",
    "solution": "```python\nfrom typing import List\n\n\ndef chunk_brackets(text: str) -> List[str]:\n"
    "    out = []\n    buf = []\n    level = 0\n\n    for ch in text:\n        if ch == '(':\n"
    "            level += 1\n            buf.append(ch)\n        elif ch == ')':\n            level -= 1\n"
    "            buf.append(ch)\n\n            if level == 0:\n                out.append(''.join(buf))\n"
    "                buf.clear()\n\n    return out\n```\n\nEach group closes when the depth returns to zero.",
}

RENAMED_DOCSTRING = {
    # HumanEval/12's docstring kept nearly word for word, but re-wrapped, the function renamed
    # (camelCase) and the examples changed: the exact substring is gone, the words are not.
    "id": "planted-reworded-humaneval-12",
    "problem": "Implement `pickLongest(words)`.\n\nOut of a list of strings, return the longest one. "
    "Return the first one in case of multiple strings of the same length.\nReturn None in case the input "
    "list is empty.\n\nExamples: `pickLongest(['x', 'yy'])` gives `'yy'`; `pickLongest([])` gives `None`.",
    "solution": "```python\ndef pickLongest(words):\n    if not words:\n        return None\n"
    "    best = max(len(w) for w in words)\n    return next(w for w in words if len(w) == best)\n```",
}

GSM8K_AS_CODE = {
    # GSM8K test question 0 rewritten as a coding task, with its numbers changed.
    "id": "planted-gsm8k-as-code",
    "problem": "Write a Python function `market_income()` for the following scenario. Janet has ducks that lay "
    "18 eggs each day. Every morning she eats 3 of them for breakfast, and every day she bakes muffins for her "
    "friends using 5. She sells the remaining eggs at the farmers' market for $3 per fresh duck egg. The "
    "function should return how many dollars Janet makes every day at the farmers' market.",
    "solution": "```python\ndef market_income(laid=18, eaten=3, baked=5, price=3):\n"
    "    return (laid - eaten - baked) * price\n```\n\nCalling `market_income()` returns 30.",
}


def gsm8k_renumbered(shared) -> dict:
    # GSM8K test question 5 word for word with different numbers and a curly quote changed:
    # the lower-cased substring no longer matches, its word n-grams do.
    question = _gsm8k(shared, 5)["question"].replace("$5", "$7").replace("60%", "50%").replace("16", "20")
    return {
        "id": "planted-gsm8k-renumbered",
        "problem": "Solve the following with a short program.\n\n" + question,
        "solution": "```python\nprice, count = 7, 20\nprint(sum(price if i % 2 == 0 else price * 0.5 "
        "for i in range(count)))\n```",
    }


# --- clean samples that use the idioms benchmarks are made of ------------------------------

CLEAN = [
    {
        "id": "clean-kadane",
        "problem": "A trading desk records daily profit and loss as a list of integers. Write "
        "`best_window(pnl)` that returns the largest total of any contiguous run of days, so analysts "
        "can see the best streak. Return 0 for an empty list.",
        "solution": "```python\ndef best_window(pnl):\n    best = cur = 0\n    for x in pnl:\n"
        "        cur = max(0, cur + x)\n        best = max(best, cur)\n    return best\n```\n"
        "This is Kadane's algorithm: one pass, constant memory.",
    },
    {
        "id": "clean-is-prime",
        "problem": "A cryptography tutorial needs a helper that tells whether an integer is prime, used to "
        "pick RSA test primes. Implement `is_prime(n)` with trial division up to the square root.",
        "solution": "```python\nimport math\n\ndef is_prime(n):\n    if n < 2:\n        return False\n"
        "    for k in range(2, math.isqrt(n) + 1):\n        if n % k == 0:\n            return False\n"
        "    return True\n```",
    },
    {
        "id": "clean-word-count",
        "problem": "Given the text of a log file, count how often each word occurs, ignoring case, and "
        "return the ten most common words with their counts.",
        "solution": "```python\nfrom collections import Counter\nimport re\n\ndef top_words(text, k=10):\n"
        "    return Counter(re.findall(r'[a-z]+', text.lower())).most_common(k)\n```",
    },
    {
        "id": "clean-bank-account",
        "problem": "Design a `BankAccount` class with `deposit`, `withdraw` and `balance` methods. A "
        "withdrawal larger than the balance raises `ValueError`. Amounts must be positive.",
        "solution": "```python\nclass BankAccount:\n    def __init__(self):\n        self._balance = 0\n\n"
        "    def deposit(self, amount):\n        if amount <= 0:\n            raise ValueError('amount must be positive')\n"
        "        self._balance += amount\n\n    def withdraw(self, amount):\n        if amount > self._balance:\n"
        "            raise ValueError('insufficient funds')\n        self._balance -= amount\n\n"
        "    def balance(self):\n        return self._balance\n```",
    },
    {
        "id": "clean-dedupe-keep-order",
        "problem": "An event stream can deliver the same event id twice. Write `unique_ids(ids)` returning "
        "the ids with repeats removed, keeping the first occurrence and the original order.",
        "solution": "```python\ndef unique_ids(ids):\n    seen = set()\n    out = []\n    for i in ids:\n"
        "        if i not in seen:\n            seen.add(i)\n            out.append(i)\n    return out\n```",
    },
    {
        "id": "clean-sum-of-two",
        "problem": "Write a function that adds two numbers and a function that returns the longest of two "
        "strings, as warm-up exercises for a Python course.",
        "solution": "```python\ndef add(a, b):\n    return a + b\n\ndef longer(x, y):\n"
        "    return x if len(x) >= len(y) else y\n```",
    },
    {
        "id": "clean-eggs-inventory",
        "problem": "A farm shop tracks eggs: each morning the hens' eggs are added to stock, eggs used in "
        "the bakery are subtracted, and the rest is sold at a fixed price per dozen. Write a class "
        "`EggLedger` that records these movements and reports the day's revenue.",
        "solution": "```python\nclass EggLedger:\n    def __init__(self, price_per_dozen):\n"
        "        self.price = price_per_dozen\n        self.stock = 0\n        self.sold = 0\n\n"
        "    def lay(self, n):\n        self.stock += n\n\n    def use(self, n):\n        self.stock -= n\n\n"
        "    def sell_all(self):\n        self.sold += self.stock\n        self.stock = 0\n"
        "        return self.sold / 12 * self.price\n```",
    },
    {
        "id": "clean-binary-search",
        "problem": "Implement binary search over a sorted list of integers: return the index of the target, "
        "or -1 when it is absent. Do not use the `bisect` module.",
        "solution": "```python\ndef binary_search(xs, target):\n    lo, hi = 0, len(xs) - 1\n    while lo <= hi:\n"
        "        mid = (lo + hi) // 2\n        if xs[mid] == target:\n            return mid\n"
        "        if xs[mid] < target:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n"
        "    return -1\n```",
    },
]


def _config(shared, matchers, **kw) -> DecontaminationConfig:
    return DecontaminationConfig(benchmark_dir=str(shared), allow_hub=False, matchers=matchers, **kw)


def _run(rows, cfg):
    kept, audit, stats = decontaminate(pa.Table.from_pylist(rows), cfg)
    return set(kept.column("id").to_pylist()), {r["id"]: r for r in audit.to_pylist()}, stats


@pytest.fixture(scope="module")
def planted(shared_benchmarks):
    s = shared_benchmarks
    return {
        "verbatim_humaneval": verbatim_humaneval_solution(s),
        "verbatim_mbpp": verbatim_mbpp_solution(s),
        "paraphrased_problem": PARAPHRASED_PAREN_PROBLEM,
        "renamed_solution": RENAMED_HUMANEVAL_SOLUTION,
        "renamed_docstring": RENAMED_DOCSTRING,
        "gsm8k_as_code": GSM8K_AS_CODE,
        "gsm8k_renumbered": gsm8k_renumbered(s),
    }


# Which planted case each matcher is built to catch, and the benchmark item it must name.
EXPECTED = {
    "substring": {"verbatim_humaneval": "HumanEval/0", "verbatim_mbpp": "mbpp/11"},
    "ngram": {"verbatim_humaneval": "HumanEval/0", "verbatim_mbpp": "mbpp/11", "renamed_docstring": "HumanEval/12",
              "gsm8k_renumbered": "gsm8k/test/5", "paraphrased_problem": "HumanEval/1"},
    "minhash": {"verbatim_humaneval": "HumanEval/0", "verbatim_mbpp": "mbpp/11", "paraphrased_problem": "HumanEval/1",
                "gsm8k_renumbered": "gsm8k/test/5",
                "renamed_solution": "HumanEval/1", "gsm8k_as_code": "gsm8k/test/0",
                "renamed_docstring": "HumanEval/12"},
}


@pytest.mark.parametrize("matcher", ["substring", "ngram", "minhash"])
def test_each_matcher_finds_its_planted_cases_and_keeps_clean_samples(shared_benchmarks, planted, matcher):
    rows = list(planted.values()) + CLEAN
    kept, audit, stats = _run(rows, _config(shared_benchmarks, [matcher]))
    for case, item in EXPECTED[matcher].items():
        row_id = planted[case]["id"]
        assert row_id in audit, f"{matcher} missed {case}"
        record = audit[row_id]
        assert record["matcher"] == matcher and record["stage"] == "decontaminate"
        assert record["benchmark_item"].split("/", 1)[-1] == item.split("/", 1)[-1], record
        assert record["matched_span"]
    clean_ids = {r["id"] for r in CLEAN}
    assert clean_ids <= kept, f"{matcher} removed clean samples: {clean_ids - kept}"
    assert stats.rows_in == len(rows) and stats.rows_out + stats.dropped_total == len(rows)


def test_paper_substring_rule_misses_the_paraphrases(shared_benchmarks, planted):
    """The reason for matchers 2 and 3: exact substrings do not see rewritten problems."""
    rows = [planted[c] for c in ("paraphrased_problem", "renamed_solution", "gsm8k_as_code", "renamed_docstring")]
    kept, audit, _ = _run(rows, _config(shared_benchmarks, ["substring"]))
    assert not audit and len(kept) == len(rows)


def test_all_matchers_together_remove_every_planted_case_once(shared_benchmarks, planted):
    rows = list(planted.values()) + CLEAN
    kept, audit, stats = _run(rows, _config(shared_benchmarks, ["substring", "ngram", "minhash"]))
    assert kept == {r["id"] for r in CLEAN}
    assert set(audit) == {r["id"] for r in planted.values()}
    # Attribution follows the matcher order; every removal is counted under one reason.
    assert audit[planted["verbatim_humaneval"]["id"]]["matcher"] == "substring"
    assert audit[planted["renamed_solution"]["id"]]["matcher"] == "minhash"
    assert sum(stats.dropped.values()) == len(planted)
    removed = stats.extra["removed"]
    assert sum(n for per in removed.values() for n in per.values()) == len(planted)
    assert stats.extra["flagged"]["humaneval"]["substring"] >= 1
    assert "gsm8k" in removed


def test_whitelist_keeps_one_line_canonical_solutions(shared_benchmarks):
    # HumanEval/53's canonical solution is `return x + y`: the paper's rule would drop this row.
    row = {"id": "adder", "problem": "Add two integers.", "solution": "def add(x, y):\n    return x + y\n"}
    kept, audit, stats = _run([row], _config(shared_benchmarks, ["substring", "ngram", "minhash"]))
    assert kept == {"adder"} and not audit
    assert stats.extra["whitelisted_strings"]["substring"] > 0
    # A user can whitelist a longer string too, and lower the bar to see the paper's behaviour.
    loose = _config(shared_benchmarks, ["substring"], min_pattern_chars=0, min_pattern_words=0,
                    min_single_line_words=0)
    _, audit, _ = _run([row], loose)
    assert audit["adder"]["benchmark_item"] == "HumanEval/53"


def test_python_stdlib_functions_are_not_flagged(shared_benchmarks):
    """Real code with docstrings, full of common idioms, is not benchmark data."""
    import ast
    import sysconfig
    from pathlib import Path

    rows = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:80]:
        source = path.read_text(errors="replace")
        lines = source.splitlines()
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            doc = ast.get_docstring(node) if isinstance(node, ast.FunctionDef) else None
            if doc and len(doc) > 80:
                rows.append({"id": f"{path.stem}.{node.name}", "problem": "Implement this:\n" + doc,
                             "solution": "```python\n" + "\n".join(lines[node.lineno - 1 : node.end_lineno]) + "\n```"})
    assert len(rows) > 300
    kept, audit, _ = _run(rows, _config(shared_benchmarks, ["substring", "ngram", "minhash"]))
    assert not audit, {k: (v["matcher"], v["benchmark_item"], v["matched_span"]) for k, v in audit.items()}


def test_translations_of_a_problem_do_not_make_its_ngrams_boilerplate(shared_benchmarks, tmp_path):
    """MultiPL-E repeats each HumanEval docstring in many languages; the n-gram matcher counts
    shared n-grams per problem family, so loading it must not hide HumanEval/12."""
    root = tmp_path / "bench"
    (root / "MultiPL-E").mkdir(parents=True)
    (root / "HumanEval.jsonl.gz").symlink_to(shared_benchmarks / "HumanEval.jsonl.gz")
    docstring = ("Out of list of strings, return the longest one. Return the first one in case of multiple\n"
                 "strings of the same length. Return None in case the input list is empty.")
    for lang in ("cpp", "java", "ts", "sh", "cs", "rs", "php", "swift"):
        comment = "\n".join("// " + line for line in docstring.splitlines())
        (root / "MultiPL-E" / f"humaneval-{lang}.jsonl").write_text(json.dumps(
            {"name": "HumanEval_12_longest", "language": lang, "prompt": comment + "\nfunction longest(strings) {\n"}
        ) + "\n")
    cfg = DecontaminationConfig(benchmarks=["humaneval", "multipl_e"], benchmark_dir=str(root), allow_hub=False,
                                matchers=["ngram"])
    kept, audit, stats = _run([RENAMED_DOCSTRING] + CLEAN, cfg)
    assert stats.extra["loaded"]["multipl_e"]["items"] == 8
    assert RENAMED_DOCSTRING["id"] in audit and RENAMED_DOCSTRING["id"] not in kept
