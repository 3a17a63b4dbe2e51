"""End to end: the whole `ossforge refresh` CLI at the teacher's pace.

Starts a Prefect server and the project's fake teacher (`python -m tests.support.fake_teacher
--latency 2`, its own process) on free loopback ports, then runs the refresh CLI with every
cleaning stage on (exact dedup, near-dedup, decontamination against ../shared/benchmarks)
at 2,000 requests in flight, for each seed count asked (default 75,000, then 20,000 and
200,000). The baseline is the provider-bound limit of the same run: seeds x latency /
in-flight, the wall time of a client that did nothing but keep every slot busy.

The fake replies are varied (`--replies varied`): like a real teacher's, most of a pair's
text is its own: 40-80 words of prose chosen by its seed's first line, the seed quoted, and
a solution carrying the seed as data. Pairs of near-identical seeds are near-duplicates (as
real ones are; ~11% of 75,000 stdlib seeds), unrelated ones share little.
`--replies template` gives every pair one short template instead: near-dedup then folds
75,000 rows into a few hundred clusters with buckets of thousands of distinct documents, a
stress case for the clustering step rather than a refresh anyone runs. Validation is not on here
(the paper's output format asks for no tests): on 2 cores the sandbox runs ~100 programs/s,
a tenth of this teacher's 1,000 replies/s; `bench/validation.py --refresh-seeds` measures
what it adds at a teacher pace it can follow.

Prints ONE JSON line: per seed count, wall seconds, the limit, their ratio (target <= 1.15),
seconds to the first request and from the last reply to the end, CPU seconds per stage
(the per-row work done in the shard workers as shards landed, from the manifest, and the
end stages' seconds), CPU seconds of the CLI's process tree, of the fake teacher and of the
Prefect server, peak RSS of the CLI's main process and of its whole tree, and the load
average before and after (the machine is shared: compare ratios measured in one run).

    .venv/bin/python bench/end_to_end.py                       # 75,000 then 20,000 and 200,000
    .venv/bin/python bench/end_to_end.py --seeds 20000 --also ""   # one quick size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from process_stats import TreeRss, stop_processes  # bench/ is sys.path[0] when a benchmark runs

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(os.environ.get("OSSFORGE_SHARED_BENCHMARKS", REPO.parent / "shared" / "benchmarks"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.3)
    raise TimeoutError(url)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


# --- /proc sampling --------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (its own threads, not its children)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


# --- one refresh ---------------------------------------------------------------------------
def run_refresh(seeds: int, teacher_url: str, stats_url: str, in_flight: int, latency: float, work: Path,
                env: dict, teacher_pid: int, server_pid: int, log_dir: str | None = None) -> dict:
    out = work / f"refresh-{seeds}"
    shutil.rmtree(out, ignore_errors=True)
    args = [
        sys.executable, "-m", "ossforge.cli", "refresh", "--num-seeds", str(seeds),
        "--teacher-base-url", teacher_url, "--teacher-model", "fake-teacher", "--api-key-env", "",
        "--concurrency", str(in_flight), "--output-dir", str(out), "--benchmark-dir", str(BENCHMARKS),
        "--no-progress",
    ]
    before = get_json(f"{stats_url}?window=1")
    teacher_cpu0, server_cpu0 = cpu_seconds(teacher_pid), cpu_seconds(server_pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    # The CLI's output goes to a file: a pipe read only at the end would fill and stall it.
    log_path = work / f"refresh-{seeds}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    rss = TreeRss(proc.pid)
    rss.start()
    first_request = last_reply = None
    # Replies the server sent (200s), not distinct keys: a smaller run after a larger one
    # asks for the same first seeds again (the cache is per output directory).
    expected = sum(before["by_outcome"].values()) + seeds
    while proc.poll() is None:
        time.sleep(0.25 if first_request is None else 1.0)
        now = time.perf_counter() - started
        seen = get_json(f"{stats_url}?window=1")
        if first_request is None and seen["requests"] > before["requests"]:
            first_request = now
        if last_reply is None and sum(seen["by_outcome"].values()) >= expected:
            last_reply = now
    wall = time.perf_counter() - started
    log.close()
    stderr = log_path.read_text()
    peak = rss.stop()
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy(log_path, Path(log_dir) / log_path.name)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"refresh of {seeds} seeds failed ({proc.returncode}):\n{stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    limit = seeds * latency / in_flight
    stage_seconds = {name: stage.get("seconds", 0.0) for name, stage in manifest["stages"].items()}
    result = {
        "seeds": seeds,
        "rows": manifest["rows"],
        "balanced": manifest["accounting"]["balanced"],
        "wall_s": round(wall, 1),
        "limit_s": round(limit, 1),
        "ratio": round(wall / limit, 3),
        "first_request_s": round(first_request, 1) if first_request is not None else None,
        "after_last_reply_s": round(wall - last_reply, 1) if last_reply is not None else None,
        # CPU per stage: per-row work in the shard workers (measured there), plus the
        # end stages' seconds in the flow's process (CPU-bound: wall ~ CPU).
        "cpu_s_per_stage_in_shard_workers": manifest.get("prepared_cpu_seconds", {}),
        "stage_seconds": stage_seconds,
        "cpu_s_cli_tree": round(children.ru_utime + children.ru_stime - children0.ru_utime - children0.ru_stime, 1),
        "cpu_s_fake_teacher": round(cpu_seconds(teacher_pid) - teacher_cpu0, 1),
        "cpu_s_prefect_server": round(cpu_seconds(server_pid) - server_cpu0, 1),
        "peak_rss_mb": peak,
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
    }
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=75_000)
    parser.add_argument("--also", default="20000,200000", help="more seed counts, comma-separated ('' for none)")
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--in-flight", type=int, default=2000)
    parser.add_argument("--replies", choices=("varied", "template"), default="varied",
                        help="varied: each problem quotes its seed (pairs differ as real ones do); template: one "
                        "template for all, which near-dedup folds into a few hundred clusters (a stress case)")
    parser.add_argument("--log-dir", default=None, help="keep each refresh's stderr (its Prefect log) here")
    args = parser.parse_args()
    sizes = [args.seeds] + [int(s) for s in args.also.split(",") if s.strip()]

    work = Path(tempfile.mkdtemp(prefix="ossforge-e2e-"))
    server_port, teacher_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{server_port}/api"
    env = {
        **os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(server_port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
        "PYTHONPATH": str(REPO),
    }
    procs = []
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(server_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        procs.append(server)
        teacher = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_teacher", "--port", str(teacher_port),
             "--latency", str(args.latency), *(["--varied-replies"] if args.replies == "varied" else [])],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        procs.append(teacher)
        stats_url = f"http://127.0.0.1:{teacher_port}/stats"
        wait_for(stats_url, 60, teacher)
        wait_for(f"{api_url}/health", 180, server)
        runs = [run_refresh(n, f"http://127.0.0.1:{teacher_port}/v1", stats_url, args.in_flight, args.latency,
                            work, env, teacher.pid, server.pid, args.log_dir) for n in sizes]
    finally:
        stop_processes(procs)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "bench": "end_to_end",
        "latency_s": args.latency,
        "in_flight": args.in_flight,
        "replies": args.replies,
        "cores": os.cpu_count(),
        "target_ratio": 1.15,
        "runs": runs,
    }))


if __name__ == "__main__":
    main()
