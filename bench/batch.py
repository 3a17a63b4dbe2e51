"""Batch mode's client-side cost against live mode's, and the forecast's error; one JSON line.

Starts the fake teacher in its own process (`python -m tests.support.fake_teacher`, replies
of ~1.5 KB, 0.05 s latency live, batches done 0.5 s after creation) and measures, each side
in a fresh client process, the CPU seconds of the client per 10,000 requests:

- batch: `run_batches` (build every request and the JSONL, upload through the openai SDK,
  create, poll, download output, match by custom_id, write the reply cache) and then
  `complete_shard` answering every seed from the cache;
- live: `complete_shard` sending the same requests (TeacherSession, 256 in flight).

Both count the client process's CPU (threads included, `time.process_time`), not the
server's. Then the forecast on a 5,000-seed refresh of real code (the stdlib seed source):
an earlier run of 500 other seeds gives the reply cache its history, the forecast counts
the 5,000 requests, then they are sent live; the error is (forecast - actual) / actual for
tokens and cost, with history and with the per-format default.

    .venv/bin/python bench/batch.py [--requests 10000] [--forecast-seeds 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from bench.process_stats import stop_processes  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_teacher(latency: float, reply_chars: int, batch_delay: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "tests.support.fake_teacher", "--port", str(port), "--latency", str(latency),
           "--reply-chars", str(reply_chars), "--batch-delay", str(batch_delay)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fake teacher exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(root + "/stats", timeout=1).read()
            return proc, root + "/v1"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("fake teacher did not start")


# ------------------------------------------------------------------ one side, in its own process
def config(url: str, mode: str, **kw):
    from support.batch_shards import teacher_config

    return teacher_config(url, mode, concurrency=256, batch_poll_s=0.2, batch_poll_max_s=0.5,
                          price_per_mtok_in=0.5, price_per_mtok_out=1.5, **kw)


async def side(url: str, mode: str, requests: int, work: Path) -> dict:
    from support.batch_shards import seeds_table
    from tasks.teacher.batch_run import run_batches
    from tasks.teacher.session import TeacherSession

    import openai  # noqa: F401  imports are paid once per process, not per request: not timed

    seeds = seeds_table(requests)
    cfg = config(url, mode)
    async with TeacherSession(cfg, cache_path=work / ".cache" / "requests.sqlite") as session:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        settled = await run_batches(session, seeds) if mode == "batch" else None
        cpu1 = time.process_time()
        replies, stats = await session.complete_shard(seeds, settled=settled)
        cpu2, wall2 = time.process_time(), time.perf_counter()
    assert sum(r.error is None for r in replies) == requests, stats.dropped
    per_10k = 10_000 / requests
    out = {"cpu_s_per_10k": round((cpu2 - cpu0) * per_10k, 3), "wall_s": round(wall2 - wall0, 2)}
    if mode == "batch":
        out["cpu_s_per_10k_batch_api"] = round((cpu1 - cpu0) * per_10k, 3)  # build, upload, poll, ingest
        out["cpu_s_per_10k_from_cache"] = round((cpu2 - cpu1) * per_10k, 3)
        out["batch_api_calls"] = settled.stats["batch_api_calls"]
    return out


async def forecast_error(url: str, seeds: int, work: Path) -> dict:
    from tasks.seeds.sampling import SeedConfig, sample_seeds
    from tasks.teacher.forecast import forecast
    from tasks.teacher.session import TeacherSession

    tables, _ = sample_seeds(SeedConfig(source="stdlib", num_seeds=seeds + 500, random_seed=976), batch_size=500)
    tables = list(tables)
    earlier, later = tables[:1], tables[1:]
    cfg = config(url, "live")
    cache = work / ".cache" / "requests.sqlite"
    no_history = forecast(cfg, later, None)
    async with TeacherSession(cfg, cache_path=cache) as session:
        await session.complete_shard(earlier[0])  # the history: an earlier refresh of other seeds
    with_history = forecast(cfg, later, cache)
    async with TeacherSession(cfg, cache_path=cache) as session:
        for table in later:
            await session.complete_shard(table)
        actual = session.summary().extra

    def error(f: dict) -> dict:
        tokens = f["prompt_tokens"] + f["completion_tokens"]
        real = actual["tokens_in"] + actual["tokens_out"]
        return {"prompt_tokens": round((f["prompt_tokens"] - actual["tokens_in"]) / actual["tokens_in"], 4),
                "completion_tokens": round((f["completion_tokens"] - actual["tokens_out"]) / actual["tokens_out"], 4),
                "tokens": round((tokens - real) / real, 4),
                "cost": round((f["cost_usd"]["live"] - actual["cost_usd"]) / actual["cost_usd"], 4)}

    return {"seeds": with_history["requests"], "actual_tokens_in": actual["tokens_in"],
            "actual_tokens_out": actual["tokens_out"], "actual_cost_usd": actual["cost_usd"],
            "forecast_cost_usd": with_history["cost_usd"]["live"],
            "error_with_history": error(with_history), "error_default": error(no_history),
            "default_tokens_per_reply": no_history["completion_estimate"]["tokens_per_reply"],
            "history_tokens_per_reply": with_history["completion_estimate"]["tokens_per_reply"]}


def run_side(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], cwd=REPO, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"{args[:2]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--forecast-seeds", type=int, default=5_000)
    parser.add_argument("--side", choices=["live", "batch", "forecast"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        work = Path(args.work)
        if args.side == "forecast":
            result = asyncio.run(forecast_error(args.url, args.forecast_seeds, work))
        else:
            result = asyncio.run(side(args.url, args.side, args.requests, work))
        print(json.dumps(result))
        return

    proc, url = start_teacher(latency=0.05, reply_chars=1500, batch_delay=0.5)
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    result: dict = {"requests": args.requests, "cpus": os.cpu_count(), "load_avg_start": round(os.getloadavg()[0], 2)}
    try:
        common = ["--url", url, "--requests", str(args.requests)]
        result["live"] = run_side("--side", "live", *common, "--work", str(tmp / "live"))
        result["batch"] = run_side("--side", "batch", *common, "--work", str(tmp / "batch"))
        result["batch_vs_live_cpu"] = round(result["batch"]["cpu_s_per_10k"] / result["live"]["cpu_s_per_10k"], 3)
        result["forecast"] = run_side("--side", "forecast", "--url", url, "--forecast-seeds", str(args.forecast_seeds),
                                      "--work", str(tmp / "forecast"))
    finally:
        stop_processes([proc])
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
