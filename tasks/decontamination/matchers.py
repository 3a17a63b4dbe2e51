"""The three ways a sample is found to contain a benchmark item, built once into an index.

- "substring": the paper's rule. A benchmark string, lower-cased, occurs in the lower-cased
  sample. One Aho-Corasick automaton (pyahocorasick) holds every string, so a sample costs
  one pass over its text instead of one `in` per benchmark string.
- "ngram": normalised word 13-grams. Both sides become streams of lower-cased words, with
  identifiers split at `_` and camelCase, and numbers and punctuation dropped, so a changed
  example, a reformatted snippet or `hasCloseElements` vs `has_close_elements` still match.
  A sample is flagged when it shares at least `ngram_min_count` distinct n-grams, or at least
  `ngram_min_ratio` of an item's n-grams, with ONE item.
- "minhash": similarity of the whole text. The sample's problem is compared with benchmark
  problems as a set of content words (stop words dropped, crude stemming: survives reordered
  sentences and reworded glue), the sample's solution with benchmark code as 5-grams of code
  tokens with identifiers canonicalised (survives renamed functions and variables). Both use
  the near-dedup signatures of tasks/dedup/minhash.py; candidates come from LSH banding with
  datasketch's band parameters, and each is confirmed by the exact Jaccard of the shingle
  sets, so the estimate's noise neither removes good rows nor hides close ones.

A whitelist keeps trivial strings (too short, or a one-line solution such as `return a + b`)
out of every matcher: they occur in good data by coincidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np

from tasks.dedup import minhash
from tasks.dedup.shingles import batch_shingle_hashes, code_prose_shingle_hashes, code_prose_token_batch, shingle_hashes
from tasks.dedup.tokens import normalized_tokens
from tasks.decontamination.benchmarks import CODE, PROBLEM, SOLUTION, TEST, BenchmarkItem, problem_family

SUBSTRING, NGRAM, MINHASH = "substring", "ngram", "minhash"
MATCHERS = (SUBSTRING, NGRAM, MINHASH)

SPAN_CHARS = 300  # matched spans in the audit are cut to this length

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")  # subwords: has_close / hasClose -> has, close
_COUNTED_WORD = re.compile(r"[A-Za-z_]\w*|\d+")  # what the whitelist counts as a word

# Words that carry no content in a task statement: English glue plus the vocabulary every
# programming problem uses ("write a function that returns the list of numbers ...").
STOP_WORDS = frozenset(
    """a an the of to in on for and or is are be been being was were that this these those with as by it its at
    from which into than then there their them they he she his her we you your our us i me my if not no do does
    did can will should would could may might must has have had any all each every some such so also only other
    given write function python program method code return returns returned implement create define input output
    list number numbers string strings value values element elements find check whether how what when where who
    much many example examples e g following below above""".split()
)


def _stem(word: str) -> str:
    # Crude on purpose: it only has to make "bakes"/"bake" and "eggs"/"egg" meet.
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    """The ngram matcher's tokens: lower-cased subwords, no numbers, no punctuation."""
    return " ".join(_WORD.findall(text or "")).lower().split()


_FENCED = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)


def code_of(text: str) -> str:
    """The code of a Markdown answer (its fenced blocks), or the whole text when it has none:
    the explanation around the code is not what gets compared with benchmark code."""
    blocks = _FENCED.findall(text or "")
    return "\n".join(blocks) if blocks else (text or "")


_STEMS: dict[str, str] = {}  # memo: a corpus repeats a small vocabulary millions of times


def content_words(text: str, split: list[str] | None = None) -> list[str]:
    """The minhash matcher's view of prose: words without stop words, crudely stemmed.
    `split` is words(text) when the caller already has it."""
    stems = _STEMS
    out = []
    for w in words(text) if split is None else split:
        if w in STOP_WORDS:
            continue
        stem = stems.get(w)
        if stem is None:
            stem = stems[w] = _stem(w) if len(stems) < 1_000_000 else w
        out.append(stem)
    return out


# --- whitelist ------------------------------------------------------------------------


@dataclass(frozen=True)
class Whitelist:
    strings: frozenset[str] = frozenset()  # whitespace-collapsed, lower-cased
    min_chars: int = 20
    min_words: int = 6
    min_single_line_words: int = 12

    def allows(self, text: str, kind: str) -> bool:
        """True when the string is too trivial to count as contamination."""
        norm = " ".join(text.split()).lower()
        if norm in self.strings or len(norm) < self.min_chars:
            return True
        n_words = len(_COUNTED_WORD.findall(norm))
        if n_words < self.min_words:
            return True
        single_line = "\n" not in text.strip()
        return kind in (SOLUTION, TEST, CODE) and single_line and n_words < self.min_single_line_words


@dataclass(frozen=True)
class Hit:
    matcher: str
    item: int  # index into BenchmarkIndex.items
    span: str
    score: float


# A matcher's closest call on a row it did not flag, per benchmark: rows -> {benchmark: Hit}.
# The decontamination report names, per benchmark and matcher, the kept row that came
# nearest (for audit: how far the nearest clean row was from being removed).
NearMisses = list[dict[str, Hit]]


def note_near(near: NearMisses | None, row: int, benchmark: str, hit: Hit) -> None:
    if near is not None:
        current = near[row].get(benchmark)
        if current is None or hit.score > current.score:
            near[row][benchmark] = hit


# --- 1. substring -----------------------------------------------------------------------


class SubstringMatcher:
    def __init__(self, items: list[BenchmarkItem], whitelist: Whitelist):
        import ahocorasick

        owners: dict[str, int] = {}
        self.whitelisted = 0
        for idx, item in enumerate(items):
            for kind, text in item.texts:
                if kind == CODE:  # a similarity-only view of the same code
                    continue
                if whitelist.allows(text, kind):
                    self.whitelisted += 1
                    continue
                owners.setdefault(text.strip().lower(), idx)
        self.patterns = list(owners)
        self.automaton = ahocorasick.Automaton()
        for n, pattern in enumerate(self.patterns):
            self.automaton.add_word(pattern, (n, owners[pattern]))
        if self.patterns:
            self.automaton.make_automaton()

    def match(self, problems: list[str], solutions: list[str], problem_words=None, near=None) -> list[Hit | None]:
        """`near` is accepted for a uniform call and left alone: a string occurs or it does not."""
        if not self.patterns:
            return [None] * len(problems)
        out: list[Hit | None] = []
        search = self.automaton.iter
        for problem, solution in zip(problems, solutions):
            first = next(search(f"{problem}\n{solution}".lower()), None)
            if first is None:
                out.append(None)
            else:
                n, item = first[1]
                out.append(Hit(SUBSTRING, item, self.patterns[n][:SPAN_CHARS], 1.0))
        return out


# --- 2. n-gram overlap --------------------------------------------------------------------

_POLY = np.uint64(0x9E3779B97F4A7C15)


def _window_keys(values: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash of every window of n consecutive 64-bit token values (wrapping)."""
    span = max(values.shape[0] - n + 1, 0)
    acc = np.zeros(span, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            acc = acc * _POLY + values[k : k + span]
    return acc


class NgramMatcher:
    UNKNOWN = 0  # vocabulary id of a word no benchmark item uses: no shared n-gram can hold it

    def __init__(self, items: list[BenchmarkItem], whitelist: Whitelist, n: int, min_count: int,
                 min_ratio: float, max_items_per_ngram: int):
        self.n, self.min_count, self.min_ratio = n, min_count, min_ratio
        self.benchmark_of = [item.benchmark for item in items]
        names = sorted(set(self.benchmark_of))
        self.benchmark_names = names
        self.benchmark_ids = np.array([names.index(b) for b in self.benchmark_of], dtype=np.int64)
        self.vocab: dict[str, int] = {}
        self.inverse = ["?"]
        per_text_ids: list[tuple[int, np.ndarray]] = []
        self.whitelisted = 0
        for idx, item in enumerate(items):
            for kind, text in item.texts:
                # Tests are mostly literals: once numbers are dropped their n-grams look all alike.
                if kind not in (PROBLEM, SOLUTION):
                    continue
                if whitelist.allows(text, kind):
                    self.whitelisted += 1
                    continue
                ids = [self.vocab.setdefault(w, len(self.vocab) + 1) for w in words(text)]
                if len(ids) >= n:
                    per_text_ids.append((idx, np.array(ids, dtype=np.int64)))
        self.inverse += list(self.vocab)
        rng = np.random.default_rng(0x5EED)
        self.token_values = rng.integers(1, 2**63, size=len(self.vocab) + 1, dtype=np.uint64)
        keys, owners = [], []
        for idx, ids in per_text_ids:
            k = _window_keys(self.token_values[ids], n)
            keys.append(k)
            owners.append(np.full(k.shape[0], idx, dtype=np.int64))
        if keys:
            pairs = np.unique(np.stack([np.concatenate(keys).view(np.int64), np.concatenate(owners)]), axis=1)
            key_col, item_col = pairs[0].view(np.uint64), pairs[1]
        else:
            key_col, item_col = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        # Boilerplate n-grams ("write a python function to check whether the given ...") that
        # many problems share say nothing about which item a sample copied: drop them. Counted
        # per problem family, so HumanEval/0's n-grams are not boilerplate merely because
        # HumanEval+ and eight MultiPL-E translations repeat them.
        families = {f: i for i, f in enumerate(sorted({problem_family(it) for it in items}))}
        family_of = np.array([families[problem_family(it)] for it in items], dtype=np.int64)
        if key_col.shape[0]:
            per_family = np.unique(np.stack([key_col.view(np.int64), family_of[item_col]]), axis=1)[0]
            uniq, counts = np.unique(per_family.view(np.uint64), return_counts=True)
        else:
            uniq, counts = key_col, np.zeros(0, np.int64)
        common = uniq[counts > max_items_per_ngram]
        keep = ~np.isin(key_col, common)
        key_col, item_col = key_col[keep], item_col[keep]
        order = np.argsort(key_col, kind="stable")  # unique() sorted the int64 view; searches need uint64 order
        self.keys, self.key_items = key_col[order], item_col[order]
        self.item_ngrams = np.bincount(self.key_items, minlength=len(items))

    def match(self, problems: list[str], solutions: list[str], problem_words=None,
              near: NearMisses | None = None) -> list[Hit | None]:
        """`problem_words`, when given, is [words(p) for p in problems] (shared with minhash).
        `near`, when given (one dict per row), gets each row's closest unflagged (item, share)."""
        out: list[Hit | None] = [None] * len(problems)
        if self.keys.shape[0] == 0 or not problems:
            return out
        vocab_get = self.vocab.get
        if problem_words is None:
            problem_words = [words(p) for p in problems]
        # words(p + "\n" + s) == words(p) + words(s): no word spans the line break.
        id_lists = [list(map(vocab_get, chain(pw, words(s)), repeat(0))) for pw, s in zip(problem_words, solutions)]
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        ids = np.fromiter(chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum()))
        n = self.n
        if ids.shape[0] < n:
            return out
        doc_of = np.repeat(np.arange(len(id_lists)), lengths)
        keys = _window_keys(self.token_values[ids], n)
        span = keys.shape[0]
        unknown = np.concatenate(([0], np.cumsum(ids == self.UNKNOWN)))
        valid = (doc_of[:span] == doc_of[n - 1 :]) & (unknown[n : n + span] == unknown[:span])
        pos = np.flatnonzero(valid)
        found = np.searchsorted(self.keys, keys[pos])
        found_ok = found < self.keys.shape[0]
        found_ok[found_ok] = self.keys[found[found_ok]] == keys[pos[found_ok]]
        pos, found = pos[found_ok], found[found_ok]
        if pos.shape[0] == 0:
            return out
        # Expand each matched window to every item holding that n-gram (keys are sorted).
        right = np.searchsorted(self.keys, self.keys[found], side="right")
        reps = right - found
        win = np.repeat(pos, reps)
        entry = np.repeat(found - np.cumsum(reps) + reps, reps) + np.arange(reps.sum())
        item = self.key_items[entry]
        doc = doc_of[win]
        key_of = self.keys[entry]
        # Distinct n-grams shared per (document, item).
        triples = np.unique(np.stack([doc, item, key_of.view(np.int64)]), axis=1)
        pair_keys, shared = np.unique(triples[0] * (len(self.item_ngrams) + 1) + triples[1], return_counts=True)
        pair_doc, pair_item = np.divmod(pair_keys, len(self.item_ngrams) + 1)
        ratio = shared / np.maximum(self.item_ngrams[pair_item], 1)
        hit = (shared >= self.min_count) | (ratio >= self.min_ratio)
        if near is not None:
            self._note_near(near, pair_doc[~hit], pair_item[~hit], ratio[~hit], shared[~hit])
        for d, it, r, c in zip(pair_doc[hit], pair_item[hit], ratio[hit], shared[hit]):
            current = out[d]
            if current is None or r > current.score:
                first_win = win[(doc == d) & (item == it)][0]
                start = first_win - (np.searchsorted(doc_of, d))
                words_of_doc = id_lists[d]
                span = " ".join(self.inverse[i] for i in words_of_doc[start : start + n])
                out[d] = Hit(NGRAM, int(it), f"{c} shared {n}-grams ({r:.0%} of item), e.g. '{span}'"[:SPAN_CHARS],
                             float(r))
        return out


    def _note_near(self, near: NearMisses, doc: np.ndarray, item: np.ndarray, ratio: np.ndarray,
                   shared: np.ndarray) -> None:
        """Each row's best unflagged (item, share) per benchmark: picked with numpy first,
        since a batch has many (row, item) pairs that share one n-gram or two."""
        if not doc.shape[0]:
            return
        group = doc * len(self.benchmark_names) + self.benchmark_ids[item]
        order = np.lexsort((-ratio, group))
        first = order[np.concatenate(([True], group[order][1:] != group[order][:-1]))]
        for d, it, r, c in zip(doc[first], item[first], ratio[first], shared[first]):
            note_near(near, int(d), self.benchmark_of[it],
                      Hit(NGRAM, int(it), f"{c} shared {self.n}-grams ({r:.0%} of item)", float(r)))


# --- 3. MinHash near match ------------------------------------------------------------------


def _mix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: spreads band keys over all bits (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> np.uint64(33))


def _band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) 64-bit keys, one per LSH band; the band number is folded in."""
    n = sigs.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            acc = np.full(n, np.uint64(b + 1) * _POLY, dtype=np.uint64)
            for c in range(rows):
                acc = acc * _POLY + sigs[:, b * rows + c].astype(np.uint64)
            keys[:, b] = _mix64(acc)
    return keys


class _SignatureIndex:
    """Benchmark signatures plus their LSH band keys, sorted for a vectorised join."""

    def __init__(self, sigs: np.ndarray, owners: np.ndarray, bands: int, rows: int):
        self.sigs, self.owners, self.bands, self.rows = sigs, owners, bands, rows
        keys = _band_keys(sigs, bands, rows)
        flat = keys.ravel()
        order = np.argsort(flat, kind="stable")
        self.keys = flat[order]
        self.rows_of_keys = (order // bands).astype(np.int64)  # row into sigs

    def candidates_above(self, query: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query row, index row, estimated Jaccard) for candidate pairs at or above threshold."""
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        if query.shape[0] == 0 or self.keys.shape[0] == 0:
            return empty
        qkeys = _band_keys(query, self.bands, self.rows).ravel()
        left = np.searchsorted(self.keys, qkeys, side="left")
        right = np.searchsorted(self.keys, qkeys, side="right")
        reps = right - left
        if reps.sum() == 0:
            return empty
        qrow = np.repeat(np.arange(qkeys.shape[0]) // self.bands, reps)
        entry = np.repeat(left - np.cumsum(reps) + reps, reps) + np.arange(reps.sum())
        irow = self.rows_of_keys[entry]
        pairs = np.unique(qrow * self.sigs.shape[0] + irow)
        qrow, irow = np.divmod(pairs, self.sigs.shape[0])
        jac = np.empty(qrow.shape[0])
        for lo in range(0, qrow.shape[0], 65536):  # bounded memory for the row gathers
            hi = lo + 65536
            jac[lo:hi] = np.mean(query[qrow[lo:hi]] == self.sigs[irow[lo:hi]], axis=1)
        keep = jac >= threshold
        return qrow[keep], irow[keep], jac[keep]


class _ContainmentIndex:
    """Benchmark code as sets of canonical token n-grams (every number "0": example values and
    constants are the first thing a paraphrase changes) in one sorted table. A batch of
    samples is joined against it with numpy to count, per (sample, item text), how many
    distinct shingles of the item text the sample holds: containment, not Jaccard, because
    a benchmark solution usually sits inside a longer answer.

    A shingle found in the code of more than `max_families` problem families is boilerplate
    (`for _ in range ( _`) and says nothing about which item a sample copied: dropped, the
    n-gram equivalent of a low IDF.
    """

    def __init__(self, sets: list[np.ndarray], families: list[str], max_families: int):
        sizes = np.fromiter(map(len, sets), dtype=np.int64, count=len(sets))
        keys = np.concatenate(sets) if sets else np.zeros(0, np.uint64)
        rows = np.repeat(np.arange(len(sets), dtype=np.int64), sizes)
        fam_ids = {f: i for i, f in enumerate(sorted(set(families)))}
        fam_of_row = np.array([fam_ids[f] for f in families], dtype=np.int64)
        if keys.shape[0]:
            per_family = np.unique(np.stack([keys.view(np.int64), fam_of_row[rows]]), axis=1)[0]
            uniq, counts = np.unique(per_family.view(np.uint64), return_counts=True)
            keep = ~np.isin(keys, uniq[counts > max_families])
            keys, rows = keys[keep], rows[keep]
        order = np.argsort(keys, kind="stable")
        self.keys, self.rows = keys[order], rows[order]
        self.sizes = np.bincount(self.rows, minlength=len(sets))

    def shared(self, hashes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sample, item text row, distinct shared shingles) for every pair sharing one."""
        empty = (np.zeros(0, np.int64),) * 3
        if self.keys.shape[0] == 0 or hashes.shape[0] == 0:
            return empty
        doc = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        with np.errstate(over="ignore"):  # one distinct key per (sample, shingle): a 1-D unique, not a 2-D one
            salted = hashes ^ (doc.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        _, first = np.unique(salted, return_index=True)
        doc, hashes = doc[first], hashes[first]
        left = np.searchsorted(self.keys, hashes, side="left")
        right = np.searchsorted(self.keys, hashes, side="right")
        reps = right - left
        if reps.sum() == 0:
            return empty
        entry = np.repeat(left - np.cumsum(reps) + reps, reps) + np.arange(reps.sum())
        width = len(self.sizes) + 1
        keys, shared = np.unique(np.repeat(doc, reps) * width + self.rows[entry], return_counts=True)
        sample, row = np.divmod(keys, width)
        return sample, row, shared


class MinhashMatcher:
    # Candidates whose signature estimate is this close below the threshold still get the exact
    # check: with 128 permutations the estimate's standard deviation near 0.5 is about 0.044.
    ESTIMATE_SLACK = 0.1

    def __init__(self, items: list[BenchmarkItem], whitelist: Whitelist, threshold: float, num_perm: int,
                 code_ngram: int, seed: int, min_words: int, min_code_tokens: int, verify_exact: bool = True):
        from datasketch import MinHashLSH

        self.threshold, self.num_perm, self.code_ngram, self.seed = threshold, num_perm, code_ngram, seed
        self.benchmark_of = [item.benchmark for item in items]
        self.min_words, self.min_code_tokens, self.verify_exact = min_words, min_code_tokens, verify_exact
        self.candidate_threshold = max(threshold - self.ESTIMATE_SLACK, 0.05) if verify_exact else threshold
        # datasketch picks the bands x rows split; false negatives weigh more than candidates.
        lsh = MinHashLSH(threshold=self.candidate_threshold, num_perm=num_perm, weights=(0.1, 0.9))
        self.bands, self.rows = lsh.b, lsh.r
        prose, prose_owner, code, code_owner = [], [], [], []
        self.whitelisted = 0
        for idx, item in enumerate(items):
            for text in item.of_kind(PROBLEM):
                bag = self.prose_text(text)
                if bag is None or whitelist.allows(text, PROBLEM):
                    self.whitelisted += 1
                    continue
                prose.append(bag)
                prose_owner.append(idx)
            for text in item.of_kind(CODE) or item.of_kind(SOLUTION):
                if not self.code_is_substantial(text) or whitelist.allows(text, CODE):
                    self.whitelisted += 1
                    continue
                code.append(text)
                code_owner.append(idx)
        self.prose = _SignatureIndex(self._prose_sigs(prose), np.array(prose_owner, np.int64), self.bands, self.rows)
        self.code = _SignatureIndex(self._code_sigs(code), np.array(code_owner, np.int64), self.bands, self.rows)
        self.prose_sets = [self._prose_set(t) for t in prose] if verify_exact else []
        self.code_sets = [self._code_set(t) for t in code] if verify_exact else []
        self._build_containment(items, whitelist)

    # --- paraphrase rule: the item's code inside the sample, and its problem's words too ---
    # Why two sides: a short benchmark solution (most of MBPP) shares its shape with many
    # unrelated programs, and a reworded one-sentence problem shares its topic with many
    # unrelated problems; both at once is what a paraphrase of the item looks like.
    CONTAIN_NGRAM = 4  # canonical code tokens per shingle: MBPP solutions are 20-60 tokens
    CONTAIN_MAX_FAMILIES = 10  # a shingle in more problem families than this is boilerplate
    CONTAIN_MIN_SHINGLES = 4  # item code with fewer distinctive shingles is not compared
    CONTAIN_CODE = 0.7  # share of the item's distinctive code shingles the sample must hold
    CONTAIN_PROSE = 0.6  # ...and share of the item problem's content words
    CONTAIN_MIN_WORDS = 3  # an item problem with fewer content words ("count the integers") says too little

    def _build_containment(self, items: list[BenchmarkItem], whitelist: Whitelist) -> None:
        texts, owners = [], []
        self.item_words: list[frozenset[str]] = []
        for idx, item in enumerate(items):
            self.item_words.append(frozenset(w for t in item.of_kind(PROBLEM) for w in content_words(t)))
            for text in item.of_kind(CODE) or item.of_kind(SOLUTION):
                if whitelist.allows(text, CODE):
                    continue
                texts.append(text)
                owners.append(idx)
        hashes, counts = batch_shingle_hashes(texts, self.CONTAIN_NGRAM, canonicalize_identifiers=True, code_weight=1,
                                              numbers_as_zero=True)
        sets = [np.unique(part) for part in np.split(hashes, np.cumsum(counts)[:-1])] if texts else []
        self.contain_owner = np.array(owners, dtype=np.int64)
        self.contain = _ContainmentIndex(sets, [problem_family(items[i]) for i in owners], self.CONTAIN_MAX_FAMILIES)

    def containment_scores(self, problem_words: list[list[str]], codes: list[str], tokens=None):
        """(sample, item, code containment, prose containment) of every pair worth a look.
        `tokens`: code_prose_token_batch(codes) when the caller has it."""
        tokens = code_prose_token_batch(codes) if tokens is None else tokens
        hashes, counts = code_prose_shingle_hashes(tokens, len(codes), self.CONTAIN_NGRAM, code_weight=1,
                                                   numbers_as_zero=True)
        sample, row, shared = self.contain.shared(hashes, counts)
        sizes = self.contain.sizes[row]
        code_share = shared / np.maximum(sizes, 1)
        look = (sizes >= self.CONTAIN_MIN_SHINGLES) & (code_share >= self.CONTAIN_CODE)
        words: dict[int, set[str]] = {}
        out = []
        for d, r, c in zip(sample[look], row[look], code_share[look]):
            item = int(self.contain_owner[r])
            want = self.item_words[item]
            if len(want) < self.CONTAIN_MIN_WORDS:
                continue
            if d not in words:
                words[d] = set(content_words("", problem_words[d]))
            prose_share = len(want & words[d]) / max(len(want), 1)
            out.append((int(d), item, float(c), prose_share))
        return out

    def prose_text(self, text: str, split: list[str] | None = None) -> str | None:
        """Content words as one space-separated string (the minhash tokenizer splits it again)."""
        bag = content_words(text, split)
        return " ".join(bag) if len(set(bag)) >= self.min_words else None

    def code_is_substantial(self, text: str) -> bool:
        return len(normalized_tokens(text, canonicalize_identifiers=True)) >= self.min_code_tokens

    def _prose_sigs(self, texts: list[str]) -> np.ndarray:
        return minhash.minhash_signatures(texts, num_perm=self.num_perm, ngram=1, seed=self.seed)

    def _code_sigs(self, texts: list[str]) -> np.ndarray:
        return minhash.minhash_signatures(texts, num_perm=self.num_perm, ngram=self.code_ngram, seed=self.seed,
                                          canonicalize_identifiers=True, code_weight=1)

    def _prose_set(self, text: str) -> np.ndarray:
        return np.unique(shingle_hashes(text, 1))

    def _code_set(self, text: str) -> np.ndarray:
        return np.unique(shingle_hashes(text, self.code_ngram, canonicalize_identifiers=True, code_weight=1))

    def match(self, problems: list[str], solutions: list[str], problem_words=None,
              near: NearMisses | None = None) -> list[Hit | None]:
        """`near`, when given (one dict per row), gets each row's closest unflagged candidate per
        benchmark: a Jaccard below the threshold, or an item whose code the row holds but
        whose problem words fall short (score: that word share)."""
        out: list[Hit | None] = [None] * len(problems)
        if problem_words is None:
            problem_words = [None] * len(problems)
        bags = [self.prose_text(p, pw) for p, pw in zip(problems, problem_words)]
        rows = [i for i, b in enumerate(bags) if b is not None]
        codes = [code_of(s) for s in solutions]
        tokens = code_prose_token_batch(codes)  # one pass for the code signatures and the containment check

        def code_sigs(texts: list[str]) -> np.ndarray:
            hashes, counts = code_prose_shingle_hashes(tokens, len(texts), self.code_ngram, code_weight=1)
            return minhash.signatures_of_hashes(hashes, counts, self.num_perm, self.seed)
        sides = [
            ("problem", self.prose, rows, [bags[i] for i in rows], self._prose_sigs, self._prose_set, self.prose_sets),
            ("solution", self.code, list(range(len(codes))), codes, code_sigs, self._code_set, self.code_sets),
        ]
        for side, index, doc_rows, texts, sign, shingle_set, item_sets in sides:
            if not texts:
                continue
            qrow, irow, jac = index.candidates_above(sign(texts), self.candidate_threshold)
            sample_sets: dict[int, np.ndarray] = {}
            for q, i, j in zip(qrow, irow, jac):
                if self.verify_exact:
                    if q not in sample_sets:
                        sample_sets[q] = shingle_set(texts[q])
                    a, b = sample_sets[q], item_sets[i]
                    inter = np.intersect1d(a, b, assume_unique=True).shape[0]
                    j = inter / max(a.shape[0] + b.shape[0] - inter, 1)
                d = doc_rows[q]
                if j < self.threshold:
                    item = int(index.owners[i])
                    note_near(near, d, self.benchmark_of[item], Hit(MINHASH, item, f"{side} ~ Jaccard {j:.2f}", float(j)))
                    continue
                if out[d] is None or j > out[d].score:
                    how = "exact" if self.verify_exact else "estimated"
                    out[d] = Hit(MINHASH, int(index.owners[i]), f"{side} ~ {how} Jaccard {j:.2f}", float(j))
        split = [words(p) if pw is None else pw for p, pw in zip(problems, problem_words)]
        for d, item, code_share, prose_share in self.containment_scores(split, codes, tokens):
            if prose_share < self.CONTAIN_PROSE:
                note_near(near, d, self.benchmark_of[item],
                          Hit(MINHASH, item, f"code contained {code_share:.2f}, problem words {prose_share:.2f}",
                              prose_share))
                continue
            if out[d] is not None:
                continue
            out[d] = Hit(MINHASH, item, f"code contained {code_share:.2f}, problem words {prose_share:.2f}",
                         code_share)
        return out
