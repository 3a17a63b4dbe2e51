"""The refresh's Prefect artifacts, rendered from its manifest and shard summaries."""

from __future__ import annotations

from pathlib import Path

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact

from tasks.decontamination.decontaminate import decontamination_report_markdown

# Artifact keys are stable so the UI shows one evolving history per artifact.
SHARDS_KEY = "refresh-shards"
SUMMARY_KEY = "refresh-summary"
REPORT_KEY = "refresh-report"
DECONTAMINATION_KEY = "refresh-decontamination"


def shard_table_rows(summaries: list[dict]) -> list[dict]:
    rows = []
    for s in summaries:
        extra = s["teacher"].get("extra", {})
        rows.append(
            {
                "shard": s["shard"],
                "seeds": s["seeds"],
                "pairs": s["pairs"],
                "teacher_failures": sum(s["teacher"]["dropped"].values()),
                "parse_failures": sum(s["parse"]["dropped"].values()),
                "requests_sent": extra.get("requests", 0),
                "cache_hits": extra.get("cache_hits", 0),
                "retries": extra.get("retries_total", 0),
                "req_per_s": extra.get("req_per_s", 0.0),
                "tokens_in": extra.get("tokens_in", 0) + extra.get("cached_tokens_in", 0),
                "tokens_out": extra.get("tokens_out", 0) + extra.get("cached_tokens_out", 0),
                "cost_usd": round(extra.get("cost_usd", 0.0), 6),
                **({"worker": s.get("worker", "")} if any("worker" in x for x in summaries) else {}),
            }
        )
    return rows


def summary_markdown(manifest: dict) -> str:
    """Per-stage counts (in, out, drops by reason, seconds), tokens and the accounting."""
    lines = [
        f"# OSS-Instruct refresh: {manifest['rows']} rows ({manifest['status']})",
        "",
        f"Config fingerprint `{manifest['config_fingerprint']}`; output `{manifest['config']['output_dir']}`.",
        "",
        "| stage | in | out | dropped | seconds |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for name, stage in manifest["stages"].items():
        dropped = ", ".join(f"{k}: {v}" for k, v in stage["dropped"].items()) or "-"
        lines.append(f"| {name} | {stage['in']} | {stage['out']} | {dropped} | {stage['seconds']} |")
    usage = manifest["usage"]
    lines += [
        "",
        f"Tokens: {usage['prompt_tokens']} in, {usage['completion_tokens']} out; "
        f"requests sent {usage['requests_sent']}, cache hits {usage['cache_hits']}; cost ${usage['cost_usd']}.",
        "",
        f"Accounting: {manifest['accounting']}",
    ]
    return "\n".join(lines)


def render_refresh_artifacts(manifest: dict, summaries: list[dict], out_dir: Path, report: bool) -> dict:
    """Render every refresh artifact (the CPU part: tables, markdown, charts) without creating any."""
    rendered = {
        "shards": shard_table_rows(summaries),
        "summary": summary_markdown(manifest),
        "decontamination": None,
        "report": None,
    }
    if "decontaminate" in manifest["stages"]:
        rendered["decontamination"] = decontamination_report_markdown(manifest["stages"]["decontaminate"])
    if report:
        from tasks.publish.report import render_report

        rendered["report"] = render_report(out_dir, manifest)
    return rendered


async def create_refresh_artifacts(rendered: dict) -> None:
    """Create the rendered artifacts. Called from the flow body, not a task: the UI's flow-run
    page lists only artifacts created by the flow run itself under its Artifacts tab."""
    await acreate_table_artifact(rendered["shards"], key=SHARDS_KEY, description="Per-shard generation figures")
    await acreate_markdown_artifact(rendered["summary"], key=SUMMARY_KEY, description="Refresh summary")
    if rendered["decontamination"] is not None:
        await acreate_markdown_artifact(
            rendered["decontamination"], key=DECONTAMINATION_KEY,
            description="Benchmark decontamination: hits per benchmark and matcher",
        )
    if rendered["report"] is not None:
        await acreate_markdown_artifact(
            rendered["report"], key=REPORT_KEY, description="Dataset report: card, samples, charts"
        )
