"""Prices and the cost budget (issue 14): a budget never runs on an unknown price.

Through the CLI, as a user meets it: `--max-cost` for a model with no known price is a
one-line error (exit 2) before any request; `--price-in/--price-out` price any model; a
dated snapshot takes its family's price only where OpenAI documents the same price; the
manifest says where each price came from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.errors import UserError
from tasks.teacher.config import TeacherConfig

REPO = Path(__file__).resolve().parents[2]


def refresh(url: str, out: Path, model: str, *extra: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "ossforge.cli", "refresh", "--num-seeds", "6", "--teacher-base-url", url,
        "--teacher-model", model, "--api-key-env", "", "--output-dir", str(out), "--no-progress",
        "--no-decontaminate", "--no-near-dedup", *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


@pytest.mark.parametrize("model", ["deepseek-coder-6.7b-instruct", "gpt-4o-2024-05-13", "gpt-4o-mini-2099-01-01"])
def test_max_cost_without_a_known_price_is_one_line_and_sends_nothing(fake_teacher, tmp_path, model):
    result = refresh(fake_teacher.base_url, tmp_path / "out", model, "--max-cost", "1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--price-in" in lines[0] and "--price-out" in lines[0] and model in lines[0]
    assert fake_teacher.stats()["requests"] == 0
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_only_the_missing_price_is_asked_for(fake_teacher, tmp_path):
    result = refresh(fake_teacher.base_url, tmp_path / "out", "my-vllm-model", "--max-cost", "1", "--price-in", "0.2")
    assert result.returncode == 2 and "--price-out" in result.stderr and "--price-in " not in result.stderr
    assert fake_teacher.stats()["requests"] == 0


def test_dated_snapshots_resolve_to_their_family_only_where_documented():
    def sources(model, **kw):
        return TeacherConfig(base_url="http://127.0.0.1:1/v1", model=model, **kw).price_sources()

    assert sources("gpt-4o-mini-2024-07-18") == {"in": 0.15, "out": 0.60, "source_in": "family:gpt-4o-mini",
                                                  "source_out": "family:gpt-4o-mini"}
    assert sources("gpt-4o")["source_in"] == "table:gpt-4o"
    assert sources("gpt-4o-2024-05-13")["in"] is None  # priced $5/$15, not gpt-4o's: no guess
    assert sources("gpt-4o-2024-05-13", price_per_mtok_in=5, price_per_mtok_out=15)["source_out"] == "flag"
    with pytest.raises(UserError):
        TeacherConfig(base_url="http://127.0.0.1:1/v1", model="gpt-4o-2024-05-13", max_cost_usd=1).check_priced()
    # a token budget needs no price
    TeacherConfig(base_url="http://127.0.0.1:1/v1", model="x", max_total_tokens=10).check_priced()


def test_the_manifest_says_where_each_price_came_from(prefect_server, fake_teacher, tmp_path):
    out = tmp_path / "out"
    result = refresh(fake_teacher.base_url, out, "gpt-4o-mini-2024-07-18", "--max-cost", "100", "--price-out", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    usage = json.loads((out / "manifest.json").read_text())["usage"]
    assert usage["price_per_mtok"] == [0.15, 2.0]
    assert usage["price_source"] == {"in": "family:gpt-4o-mini", "out": "flag"}
    expected = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 2.0) / 1e6
    assert usage["cost_usd"] == pytest.approx(expected, rel=1e-4)
