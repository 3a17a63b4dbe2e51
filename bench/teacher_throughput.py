"""Teacher fan-out throughput: ossforge's teacher path against a bare AsyncOpenAI loop.

Starts the project's fake teacher (`python -m tests.support.fake_teacher`, its own process, fixed 0.2 s
latency, ~1.5 KB replies) and sends the same N requests (default 20,000) in one run:

- baseline: bare `AsyncOpenAI` + `DefaultAioHttpClient` (aiohttp transport) +
  `asyncio.Semaphore`, `chat.completions.create`, connection pool sized to the in-flight cap;
- ossforge: the refresh flow's teacher path, `TeacherSession.complete_shard` over shards of
  1,000 seeds on one event loop, as many at once as the flow runs (enough to fill the
  in-flight cap, plus one), with token counting, content addressing, the limiter,
  retries, SQLite cache writes, and parsing each reply with tasks/generation/parsing.py;

at 1,000 and 5,000 in flight, and the SDK's default (httpx) transport on fewer requests
for the >= 10x comparison. Each measurement runs in a fresh subprocess (clean loop, its
own peak RSS). Prints ONE JSON line: req/s per side, ratio (target >= 0.9), client CPU ms
per request (steadier than wall time on a shared machine), peak RSS.

    .venv/bin/python bench/teacher_throughput.py            # full run, a few minutes
    .venv/bin/python bench/teacher_throughput.py --requests 4000 --in-flight 1000   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "fake-teacher"
SHARD_SIZE = 1000


def snippets(n: int) -> list[str]:
    """n deterministic 1-15 line snippets of the running interpreter's standard library."""
    import random

    rng = random.Random(976)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py"))[:200]
    docs = [p.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True) for p in files]
    docs = [d for d in docs if len(d) > 20]
    out = []
    while len(out) < n:
        lines = rng.choice(docs)
        start = rng.randrange(len(lines))
        text = "".join(lines[start : start + rng.randint(1, 15)])
        if text.strip():
            out.append(text)
    return out


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ------------------------------------------------------------------------ one phase
async def run_baseline(url: str, seeds: list[str], in_flight: int, transport: str) -> float:
    from openai import AsyncOpenAI, DefaultAioHttpClient
    from openai._constants import DEFAULT_CONNECTION_LIMITS, DEFAULT_TIMEOUT

    from tasks.teacher.prompts import build_messages

    # The SDK's defaults (2 retries), a pool as large as the in-flight cap, and a connect
    # timeout long enough for thousands of connections opening at once on a busy machine.
    timeout = type(DEFAULT_TIMEOUT)(600, connect=60)
    if transport == "aiohttp":
        limits = type(DEFAULT_CONNECTION_LIMITS)(max_connections=in_flight, max_keepalive_connections=in_flight)
        http_client = DefaultAioHttpClient(limits=limits, timeout=timeout)
        client = AsyncOpenAI(base_url=url, api_key="bench", timeout=timeout, http_client=http_client)
    else:
        client = AsyncOpenAI(base_url=url, api_key="bench", timeout=timeout)
    sem = asyncio.Semaphore(in_flight)

    async def one(i: int, snippet: str) -> str | None:
        async with sem:
            reply = await client.chat.completions.create(
                model=MODEL,
                messages=build_messages(snippet),
                temperature=0.0,
                top_p=1.0,
                n=1,
                seed=976 + i,
                max_tokens=2500,
            )
            return reply.choices[0].message.content

    started = time.perf_counter()
    await asyncio.gather(*(one(i, s) for i, s in enumerate(seeds)))
    seconds = time.perf_counter() - started
    await client.close()
    return seconds


async def run_ossforge(url: str, seeds: list[str], in_flight: int, cache_dir: str) -> dict:
    import pyarrow as pa

    from tasks.generation.parsing import parse_reply
    from tasks.teacher.config import TeacherConfig
    from tasks.teacher.session import TeacherSession

    cfg = TeacherConfig(base_url=url, model=MODEL, api_key_env="", concurrency=in_flight)
    table = pa.table({"seed_index": list(range(len(seeds))), "seed": seeds})
    shards = [table.slice(start, SHARD_SIZE) for start in range(0, len(seeds), SHARD_SIZE)]
    pairs = 0

    async def shard(seed_rows):
        nonlocal pairs
        replies, _ = await session.complete_shard(seed_rows)
        for reply in replies:
            if reply.error is None and hasattr(parse_reply(reply.content, reply.finish_reason), "problem"):
                pairs += 1

    # As the refresh flow does: enough shards at once to fill the in-flight cap, one more
    # so the next shard's requests are queued when one ends; memory is per shard, not per run.
    gate = asyncio.Semaphore(max(2, -(-in_flight // SHARD_SIZE) + 1))

    async def gated(seed_rows):
        async with gate:
            await shard(seed_rows)

    async with TeacherSession(cfg, cache_path=Path(cache_dir) / "requests.sqlite") as session:
        started = time.perf_counter()
        await asyncio.gather(*(gated(s) for s in shards))
        seconds = time.perf_counter() - started
        summary = session.summary()
    return {"seconds": seconds, "pairs": pairs, "failed": summary.dropped_total, "sent": summary.extra["requests"]}


def phase(args) -> None:
    """Runs in a subprocess: one side at one in-flight cap; prints one JSON line."""
    seeds = snippets(args.requests)
    extra: dict = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        # Timed: from the first request to the last reply (imports and client/session
        # construction excluded on both sides). CPU: the whole phase.
        cpu0 = time.process_time()
        if args.phase == "ossforge":
            extra = asyncio.run(run_ossforge(args.url, seeds, args.in_flight, cache_dir))
            wall = extra.pop("seconds")
        else:
            wall = asyncio.run(run_baseline(args.url, seeds, args.in_flight, args.phase))
        cpu = time.process_time() - cpu0
    print(
        json.dumps(
            {
                "rps": round(args.requests / wall, 1),
                "cpu_ms_per_req": round(cpu / args.requests * 1000, 3),
                "peak_rss_mib": peak_rss_mib(),
                **extra,
            }
        )
    )


# ------------------------------------------------------------------------ driver
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_teacher(latency: float, reply_chars: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "tests.support.fake_teacher", "--port", str(port)]
    cmd += ["--latency", str(latency), "--reply-chars", str(reply_chars)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fake teacher exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(root + "/stats", timeout=1).read()
            return proc, root
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("fake teacher did not start")


def run_phase(name: str, url: str, requests: int, in_flight: int) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--url", url]
    cmd += ["--requests", str(requests), "--in-flight", str(in_flight)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--reply-chars", type=int, default=1500)
    parser.add_argument("--default-transport-requests", type=int, default=2000)
    parser.add_argument("--default-transport-in-flight", type=int, default=1000)
    parser.add_argument("--phase", choices=["aiohttp", "httpx", "ossforge"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        args.in_flight = args.in_flight[0]
        phase(args)
        return

    proc, root = start_teacher(args.latency, args.reply_chars)
    url = root + "/v1"
    result: dict = {
        "requests": args.requests,
        "latency_s": args.latency,
        "reply_chars": args.reply_chars,
        "shard_size": SHARD_SIZE,
        "cpus": os.cpu_count(),
        "load_avg_start": round(os.getloadavg()[0], 2),
    }
    try:
        for k in args.in_flight:
            base = run_phase("aiohttp", url, args.requests, k)
            ours = run_phase("ossforge", url, args.requests, k)
            result[f"in_flight_{k}"] = {
                "baseline_rps": base["rps"],
                "ossforge_rps": ours["rps"],
                "ratio": round(ours["rps"] / base["rps"], 3),
                "baseline_cpu_ms_per_req": base["cpu_ms_per_req"],
                "ossforge_cpu_ms_per_req": ours["cpu_ms_per_req"],
                "baseline_peak_rss_mib": base["peak_rss_mib"],
                "ossforge_peak_rss_mib": ours["peak_rss_mib"],
                "ossforge_pairs": ours["pairs"],
                "ossforge_failed": ours["failed"],
            }
        default = run_phase("httpx", url, args.default_transport_requests, args.default_transport_in_flight)
        result["default_transport"] = {
            "requests": args.default_transport_requests,
            "in_flight": args.default_transport_in_flight,
            "rps": default["rps"],
            "cpu_ms_per_req": default["cpu_ms_per_req"],
        }
        best_ours = max(result[f"in_flight_{k}"]["ossforge_rps"] for k in args.in_flight)
        result["ossforge_vs_default_transport_x"] = round(best_ours / default["rps"], 1)
        # The same comparison in client CPU per request: steadier on a shared machine.
        ours_cpu = min(result[f"in_flight_{k}"]["ossforge_cpu_ms_per_req"] for k in args.in_flight)
        result["ossforge_vs_default_transport_cpu_x"] = round(default["cpu_ms_per_req"] / ours_cpu, 1)
        result["ratio_target_met"] = all(result[f"in_flight_{k}"]["ratio"] >= 0.9 for k in args.in_flight)
        result["default_10x_met"] = result["ossforge_vs_default_transport_x"] >= 10
        result["load_avg_end"] = round(os.getloadavg()[0], 2)
    finally:
        proc.terminate()
        proc.wait(10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
