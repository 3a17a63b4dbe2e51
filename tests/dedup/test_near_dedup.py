"""tasks/dedup/near.py: clusters, representatives, audit, incremental index, Redis index."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time

import pyarrow as pa
import pytest

from tasks.core.errors import UserError
from tasks.core.schema import AUDIT_SCHEMA
from tasks.dedup.near import REASON_DUPLICATE, REASON_PUBLISHED, NearDedupConfig, near_dedup

BOILERPLATE_TOP = "```python\nimport argparse\nimport sys\n\n\n"
BOILERPLATE_END = (
    "\n\ndef main(argv=None):\n    parser = argparse.ArgumentParser()\n    parser.add_argument('path')\n"
    "    args = parser.parse_args(argv)\n    print(run(args.path))\n\n\nif __name__ == '__main__':\n"
    "    sys.exit(main())\n```\n"
)

MEAN = (
    "Write a function `mean` that returns the arithmetic mean of a list of numbers read from a file, "
    "one number per line, and returns 0 for an empty file.",
    "def run(path):\n    # read every number\n    values = [float(line) for line in open(path)]\n"
    "    if not values:\n        return 0\n    total = 0\n    for value in values:\n        total += value\n"
    "    return total / len(values)",
)
LONGEST = (
    "Write a function that finds the longest word in a text file and returns it together with its "
    "length, ignoring punctuation and treating upper and lower case the same.",
    "def run(path):\n    best = ''\n    with open(path) as handle:\n        for line in handle:\n"
    "            for word in line.split():\n                word = word.strip('.,;:!?').lower()\n"
    "                if len(word) > len(best):\n                    best = word\n    return best, len(best)",
)
COUNT = (
    "Given a CSV file of orders with columns customer and amount, compute the total amount per "
    "customer and return the customers sorted by decreasing total.",
    "def run(path):\n    totals = {}\n    with open(path) as handle:\n        next(handle)\n"
    "        for row in handle:\n            customer, amount = row.rstrip().split(',')\n"
    "            totals[customer] = totals.get(customer, 0.0) + float(amount)\n"
    "    return sorted(totals.items(), key=lambda kv: -kv[1])",
)


def solution(body: str) -> str:
    return "Here is a complete program.\n\n" + BOILERPLATE_TOP + body + BOILERPLATE_END + "\nIt reads the file once."


def renamed(body: str) -> str:
    """A near-duplicate: variables renamed consistently, comments edited, whitespace changed."""
    out = body
    for old, new in (("values", "numbers"), ("total", "acc"), ("value", "x"), ("best", "longest"),
                     ("totals", "sums"), ("handle", "fh")):
        out = out.replace(old, new)
    out = out.replace("# read every number", "#   parse the input file, one float per line")
    return out.replace("    ", "  ")


def table(rows) -> pa.Table:
    return pa.table(
        {
            "id": [r[0] for r in rows],
            "seed_index": pa.array([r[1] for r in rows], pa.int64()),
            "problem": [r[2] for r in rows],
            "solution": [r[3] for r in rows],
            "lang": ["python"] * len(rows),
        }
    )


def planted_rows():
    return [
        ("mean-a", 0, MEAN[0], solution(MEAN[1])),
        ("longest-a", 1, LONGEST[0], solution(LONGEST[1])),
        ("count-a", 2, COUNT[0], solution(COUNT[1])),
        ("mean-b", 3, MEAN[0].replace("Write a function", "Implement a function"), solution(renamed(MEAN[1]))),
        ("longest-b", 4, LONGEST[0], solution(renamed(LONGEST[1]))),
    ]


CFG = NearDedupConfig(workers=1)


def test_renamed_copies_are_dropped_and_boilerplate_siblings_kept():
    kept, audit, stats = near_dedup(table(planted_rows()), CFG)
    assert sorted(kept["id"].to_pylist()) == ["count-a", "longest-a", "mean-a"]
    assert dict(zip(audit["id"].to_pylist(), audit["duplicate_of"].to_pylist())) == {
        "mean-b": "mean-a",
        "longest-b": "longest-a",
    }
    assert set(audit["reason"].to_pylist()) == {REASON_DUPLICATE}
    sizes = dict(zip(kept["id"].to_pylist(), kept["cluster_size"].to_pylist()))
    assert sizes == {"mean-a": 2, "longest-a": 2, "count-a": 1}
    assert kept["cluster_id"].to_pylist() == kept["id"].to_pylist()
    assert stats.rows_in == 5 and stats.rows_out == 3 and stats.dropped == {REASON_DUPLICATE: 2}
    assert stats.extra["bands"] * stats.extra["rows_per_band"] <= 128


def test_without_canonicalisation_renamed_copy_survives():
    kept, _, _ = near_dedup(table(planted_rows()), CFG.model_copy(update={"canonicalize_identifiers": False}))
    assert "mean-b" in kept["id"].to_pylist()


def test_kept_rows_keep_every_column_and_audit_points_at_kept_ids():
    src = table(planted_rows())
    kept, audit, _ = near_dedup(src, CFG)
    assert kept.column_names == src.column_names + ["cluster_id", "cluster_size"]
    assert audit.schema == AUDIT_SCHEMA
    assert set(audit["duplicate_of"].to_pylist()) <= set(kept["id"].to_pylist())
    assert set(audit["stage"].to_pylist()) == {"near_dedup"}
    assert kept.num_rows + audit.num_rows == src.num_rows
    assert audit["problem"].to_pylist()[0]  # the dropped text is in the audit


def test_representative_is_smallest_seed_index_whatever_the_row_order():
    rows = planted_rows()
    results = set()
    for seed in range(4):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        kept, audit, _ = near_dedup(table(shuffled), CFG)
        results.add((tuple(sorted(kept["id"].to_pylist())), tuple(sorted(zip(audit["id"].to_pylist(), audit["duplicate_of"].to_pylist())))))
    assert len(results) == 1
    # Swap seed indexes: the renamed copy now comes first in sampling order and is kept.
    swapped = [(i, 3 - s if i in ("mean-a", "mean-b") else s, p, q) for i, s, p, q in rows]
    kept, audit, _ = near_dedup(table(swapped), CFG)
    assert "mean-b" in kept["id"].to_pylist() and "mean-a" in audit["id"].to_pylist()


def test_no_seed_index_falls_back_to_smallest_id():
    src = table(planted_rows()).drop_columns(["seed_index"])
    kept, audit, _ = near_dedup(src, CFG)
    assert "mean-a" in kept["id"].to_pylist()  # "mean-a" < "mean-b"


def test_empty_texts_are_never_duplicates():
    src = table([("e1", 0, "", ""), ("e2", 1, "", ""), *planted_rows()[:1]])
    kept, _, stats = near_dedup(src, CFG)
    assert {"e1", "e2"} <= set(kept["id"].to_pylist()) and stats.extra["empty_documents"] == 2


def test_bad_config_and_columns_are_user_errors():
    with pytest.raises(UserError, match="not columns"):
        near_dedup(table(planted_rows()), CFG.model_copy(update={"fields": ("question",)}))
    with pytest.raises(UserError, match="'id'"):
        near_dedup(table(planted_rows()).drop_columns(["id"]), CFG)


def test_incremental_refresh_against_persisted_signatures(tmp_path):
    cfg = CFG.model_copy(update={"index_dir": str(tmp_path / "index")})
    first = table(planted_rows()[:3])
    kept1, audit1, _ = near_dedup(first, cfg.model_copy(update={"version": "v1"}))
    assert kept1.num_rows == 3 and audit1.num_rows == 0
    assert (tmp_path / "index" / "signatures-v1.parquet").exists()

    second = table(planted_rows()[3:] + [("fresh", 7, "Reverse a linked list in place and return its new head node.",
                                           "```python\ndef rev(h):\n    p = None\n    while h:\n        h.next, p, h = p, h, h.next\n    return p\n```")])
    kept2, audit2, stats2 = near_dedup(second, cfg.model_copy(update={"version": "v2"}))
    assert kept2["id"].to_pylist() == ["fresh"]
    assert dict(zip(audit2["id"].to_pylist(), audit2["duplicate_of"].to_pylist())) == {
        "mean-b": "mean-a",
        "longest-b": "longest-a",
    }
    assert set(audit2["reason"].to_pylist()) == {REASON_PUBLISHED}
    assert stats2.extra["published_signatures"] == 3

    # Rerunning the first refresh gives the same answer: rows are not duplicates of themselves.
    again, audit_again, _ = near_dedup(first, cfg.model_copy(update={"version": "v1"}))
    assert again.num_rows == 3 and audit_again.num_rows == 0

    with pytest.raises(UserError, match="other near-dedup settings"):
        near_dedup(first, cfg.model_copy(update={"num_perm": 64}))


# --- Redis: a real redis-server on a free loopback port ---------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


def test_redis_index_is_shared_between_workers(redis_url):
    cfg = CFG.model_copy(update={"lsh_storage": redis_url})
    # Worker 1 dedups its shard and publishes into the shared index.
    kept1, audit1, _ = near_dedup(table(planted_rows()[:3]), cfg)
    assert kept1.num_rows == 3 and audit1.num_rows == 0
    # Worker 2 (another shard) finds the copies of worker 1's rows through Redis.
    kept2, audit2, stats2 = near_dedup(table(planted_rows()[3:]), cfg)
    assert kept2.num_rows == 0
    assert dict(zip(audit2["id"].to_pylist(), audit2["duplicate_of"].to_pylist())) == {
        "mean-b": "mean-a",
        "longest-b": "longest-a",
    }
    assert set(audit2["reason"].to_pylist()) == {REASON_PUBLISHED}
    assert stats2.extra["published_signatures"] == 2  # the candidates fetched from Redis

    # The index is datasketch's own: a plain MinHashLSH on the same storage answers queries.
    from tasks.dedup.lsh_index import RedisLSH
    from tasks.dedup.minhash import minhash_signatures, to_lean_minhash

    index = RedisLSH(redis_url, cfg.threshold, cfg.num_perm, cfg.seed, cfg.fingerprint(), "affine32")
    assert len(index) == 3
    sig = minhash_signatures(["\n".join(planted_rows()[0][2:4])], canonicalize_identifiers=True)[0]
    assert "mean-a" in index.lsh.query(to_lean_minhash(sig))

    # Different settings use a different index: nothing found, nothing dropped.
    other = cfg.model_copy(update={"threshold": 0.8})
    kept3, _, _ = near_dedup(table(planted_rows()[3:4]), other)
    assert kept3.num_rows == 1


def test_redis_workers_racing_on_copies_keep_one(redis_url):
    """Worker B dedups copies of worker A's rows while A is between its query and its insert:
    B waits for A's lock and then finds A's rows, so only one of each pair is kept."""
    import threading

    from tasks.dedup.lsh_index import RedisLSH
    from tasks.dedup.minhash import minhash_signatures

    cfg = CFG.model_copy(update={"lsh_storage": redis_url, "threshold": 0.75})  # an index of its own
    index = RedisLSH(redis_url, cfg.threshold, cfg.num_perm, cfg.seed, cfg.fingerprint(), "affine32")
    rows_a, rows_b = planted_rows()[:2], planted_rows()[3:]
    result = {}
    worker_b = threading.Thread(target=lambda: result.update(b=near_dedup(table(rows_b), cfg)))
    with index.exclusive():  # worker A has queried the index and found nothing yet
        worker_b.start()
        worker_b.join(timeout=2)
        assert worker_b.is_alive(), "worker B went ahead while A held the index"
        sigs = minhash_signatures(["\n".join(r[2:4]) for r in rows_a], canonicalize_identifiers=True)
        index.insert_many([r[0] for r in rows_a], sigs)  # A keeps its rows and inserts them
    worker_b.join(timeout=60)
    kept_b, audit_b, _ = result["b"]
    assert kept_b.num_rows == 0
    assert dict(zip(audit_b["id"].to_pylist(), audit_b["duplicate_of"].to_pylist())) == {
        "mean-b": "mean-a",
        "longest-b": "longest-a",
    }


def test_bad_redis_url_is_a_user_error():
    with pytest.raises(UserError, match="redis://"):
        near_dedup(table(planted_rows()), CFG.model_copy(update={"lsh_storage": "http://x"}))
    with pytest.raises(UserError, match="cannot reach Redis"):
        near_dedup(table(planted_rows()), CFG.model_copy(update={"lsh_storage": f"redis://127.0.0.1:{_free_port()}/0"}))


def test_borderline_candidates_are_settled_by_exact_jaccard():
    from tasks.dedup.shingles import shingle_hashes

    rng = random.Random(5)
    vocab = [f"w{i}" for i in range(5000)]
    rows = []
    for k in range(30):
        words = [rng.choice(vocab) for _ in range(200)]
        copy = words[:]
        for _ in range(2 + k // 2):  # from a few to many edited words: Jaccard ~0.9 down to ~0.5
            copy[rng.randrange(len(copy))] = rng.choice(vocab)
        rows += [(f"p{k:02d}-a", 2 * k, " ".join(words), ""), (f"p{k:02d}-b", 2 * k + 1, " ".join(copy), "")]
    src = table(rows)
    kept, audit, stats = near_dedup(src, CFG)
    assert stats.extra["exact_jaccard_checks"] > 0
    text = dict(zip(src["id"].to_pylist(), src["problem"].to_pylist()))

    def jaccard(a, b):
        # The step's own shingles (its ngram and canonicalisation), not the defaults.
        x = set(shingle_hashes(text[a], CFG.ngram, CFG.canonicalize_identifiers).tolist())
        y = set(shingle_hashes(text[b], CFG.ngram, CFG.canonicalize_identifiers).tolist())
        return len(x & y) / len(x | y)

    for dropped, of in zip(audit["id"].to_pylist(), audit["duplicate_of"].to_pylist()):
        assert jaccard(dropped, of) >= CFG.threshold
    # Pairs well above the threshold are all found.
    for k in range(30):
        if jaccard(f"p{k:02d}-a", f"p{k:02d}-b") >= 0.8:
            assert f"p{k:02d}-b" in audit["id"].to_pylist()


def test_worker_processes_give_the_same_answer_as_one_process():
    from tasks.dedup.near import CHUNK_ROWS

    rng = random.Random(11)
    vocab = [f"w{i}" for i in range(3000)]
    rows = []
    for k in range(CHUNK_ROWS + 400):  # more than one chunk, so the pool is used
        if k % 10 == 9:  # every tenth row: a lightly edited copy of the row before
            words = rows[-1][2].split()
            words[rng.randrange(len(words))] = "edited"
        else:
            words = rng.choices(vocab, k=60)
        rows.append((f"r{k:05d}", k, " ".join(words), ""))
    src = table(rows)
    one = near_dedup(src, CFG)
    two = near_dedup(src, CFG.model_copy(update={"workers": 2}))
    assert one[0].equals(two[0]) and one[1].equals(two[1])
    assert one[1].num_rows >= 0.9 * (len(rows) // 10)
