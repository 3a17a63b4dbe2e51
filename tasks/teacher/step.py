"""The teacher stage's Prefect task runs: `forecast-cost`, the dry run of a refresh.

Samples the seeds the run would sample (the same sampler, the same exclusion of seeds
earlier versions generated), builds every request, and forecasts requests, tokens, cost
and wall time (tasks/teacher/forecast.py). Writes OUTPUT/forecast.json and a Prefect
markdown artifact; sends nothing to the teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.core.step import run_step
from tasks.core.stats import StageStats
from tasks.seeds.exclusion import SeedExcluder
from tasks.seeds.sampling import SeedConfig, sample_seeds
from tasks.teacher.config import TeacherConfig
from tasks.teacher.forecast import forecast

FORECAST_KEY = "refresh-forecast"


def sampled_seed_tables(seed_cfg: SeedConfig, per_shard: int, exclude_digests: list[str] | None):
    """The seed tables a run would hand to generation, one per generation shard."""
    batches, _ = sample_seeds(seed_cfg, batch_size=per_shard)
    if not exclude_digests:
        return batches
    excluder, stats = SeedExcluder(exclude_digests), StageStats("seeds")
    return (run_step(excluder, batch, stats).kept for batch in batches)


def render_forecast(f: dict) -> str:
    """The forecast as a short markdown table (the artifact and the CLI's lines say the same)."""
    wall = f["wall_time_s"]["live"]
    est = f["completion_estimate"]
    lines = [
        "| | live | batch |", "| --- | --- | --- |",
        f"| requests | {f['requests']:,} | {f['requests']:,} ({f['batches']} batches) |",
        f"| prompt tokens | {f['prompt_tokens']:,} | {f['prompt_tokens']:,} |",
        f"| completion tokens (est.) | {f['completion_tokens']:,} | {f['completion_tokens']:,} |",
        f"| cost USD | {f['cost_usd']['live']:.4f} | {f['cost_usd']['batch']:.4f} |",
        f"| wall time | ~{wall['expected']:,.0f} s ({wall['limited_by']}) | within {f['wall_time_s']['batch_window']} |",
        "",
        f"{f['seeds']:,} seeds; {f['cached']:,} already answered in the reply cache (free); "
        f"{f['prompt_too_long']:,} too long to send. Completion tokens: {est['tokens_per_reply']} per reply "
        f"({est['source']}{', ' + str(est['history_replies']) + ' replies' if est['history_replies'] else ''}).",
    ]
    if not f["priced"]:
        lines.append("The model has no known price: give --price-in/--price-out for a cost.")
    return "\n".join(lines)


@task(name="forecast-cost", cache_policy=NO_CACHE)
async def forecast_task(seed_cfg: SeedConfig, teacher: TeacherConfig, per_shard: int,
                        exclude_digests: list[str] | None, cache_path: Path, output_dir: Path) -> dict:
    """Forecast the refresh (no request sent); record it as forecast.json and an artifact."""
    import asyncio

    tables = sampled_seed_tables(seed_cfg, per_shard, exclude_digests)
    result = await asyncio.to_thread(forecast, teacher, tables, cache_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "forecast.json").write_text(json.dumps(result, indent=2) + "\n")
    await acreate_markdown_artifact(render_forecast(result), key=FORECAST_KEY, description="Refresh cost forecast")
    get_run_logger().info("forecast: %d requests, %d + ~%d tokens, USD %.4f live / %.4f batch", result["requests"],
                          result["prompt_tokens"], result["completion_tokens"], result["cost_usd"]["live"],
                          result["cost_usd"]["batch"])
    return result
