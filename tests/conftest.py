"""Shared fixtures: a real Prefect server on loopback for the whole test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = Path(os.environ.get("OSSFORGE_SHARED_BENCHMARKS", REPO.parent / "shared" / "benchmarks"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except Exception:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="session")
def shared_benchmarks() -> Path:
    if not SHARED_BENCHMARKS.is_dir():
        pytest.skip(f"benchmark files not found at {SHARED_BENCHMARKS}")
    return SHARED_BENCHMARKS


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on a free loopback port, with its own PREFECT_HOME.

    Sets PREFECT_API_URL for this process (and the subprocesses tests start), and yields it.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": os.environ.get("PREFECT_SERVER_UI_ENABLED", "true"),
    }
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_http(f"{api_url}/health", timeout=120, proc=proc)
    except Exception:
        proc.kill()
        raise RuntimeError((home / "server.log").read_text()[-3000:]) from None
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ["PREFECT_API_URL"] = api_url  # for the subprocesses tests start
    os.environ["PREFECT_HOME"] = str(home)
    # Prefect reads its settings once, at import: point this process at the server too.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield api_url
        # Send the flow logs still queued while the server is up (else they fail at exit
        # with "Error logging to API").
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def fake_teacher():
    """A fresh fake OpenAI-compatible teacher (tests/support/fake_teacher.py), a real HTTP server on loopback.

    Served from a thread of this process. Yields a FakeTeacherClient: `.base_url` (the /v1 URL
    to give a client), `.stats(window=60)`, `.configure(latency=..., rate_429=..., api_key=...)`,
    `.reset()`; `.server` is the FakeTeacher itself.
    """
    from support.fake_teacher import FakeTeacher, FakeTeacherClient

    server = FakeTeacher()
    url = server.start_in_thread()
    yield FakeTeacherClient(url, server)
    server.stop_thread()
