"""What a training run shows a person: log lines, the final figures, the markdown of its artifacts.

Pure functions of the metric records (training/metrics.py) and summary.json, so the flow
only publishes what these return.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

METRIC_COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s_per_gpu", "mfu")


def describe(record: dict) -> str:
    """One readable log line per metrics record."""
    event = record.get("event")
    if event == "log":
        parts = [f"step {record['step']}", f"loss {record.get('loss', float('nan')):.4f}"]
        if record.get("lr") is not None:
            parts.append(f"lr {record['lr']:.3g}")
        if record.get("tokens_per_s_per_gpu") is not None:
            parts.append(f"{record['tokens_per_s_per_gpu']:.0f} tok/s/GPU")
        if record.get("mfu") is not None:
            parts.append(f"MFU {100 * record['mfu']:.1f}%")
        return " | ".join(parts)
    if event == "start":
        data = record.get("data", {})
        return (
            f"training {record.get('parameters', 0) / 1e6:.1f}M parameters on {record.get('world_size')} x "
            f"{record.get('device')}: {data.get('examples')} examples ({data.get('truncated')} truncated, dropped "
            f"{data.get('dropped')}), global batch {record.get('global_batch_size')}"
            + (f", resuming from {record['resumed_from']}" if record.get("resumed_from") else "")
        )
    return json.dumps(record)


def final_figures(points: list[dict], summary: dict, png: Path | None) -> dict:
    """The numbers a finished run is judged by (the flow's return value and summary artifact)."""
    last = points[-1] if points else {}
    throughput = [p["tokens_per_s_per_gpu"] for p in points if p.get("tokens_per_s_per_gpu")]
    data = summary.get("data", {})
    return {
        "global_step": summary.get("global_step"),
        "final_loss": last.get("loss"),
        "train_loss": summary.get("train_loss"),
        "first_loss": points[0]["loss"] if points else None,
        "mean_tokens_per_s_per_gpu": sum(throughput) / len(throughput) if throughput else None,
        "last_mfu": last.get("mfu"),
        "examples": data.get("examples"),
        "truncated": data.get("truncated"),
        "dropped": data.get("dropped"),
        "final_model": summary.get("final_model"),
        "loss_curve_png": str(png) if png else None,
    }


def metrics_rows(points: list[dict]) -> list[dict]:
    return [{key: point.get(key) for key in METRIC_COLUMNS} for point in points]


def curve_markdown(png: Path | None, points: list[dict], summary: dict) -> str:
    lines = ["# Training loss", ""]
    if png is not None:
        encoded = base64.b64encode(png.read_bytes()).decode()
        lines += [f"![loss curve](data:image/png;base64,{encoded})", "", f"PNG: `{png}`", ""]
    if points:
        lines += [f"{len(points)} logged steps; first loss {points[0]['loss']:.4f}, last {points[-1]['loss']:.4f}."]
    lines += ["", f"Final model: `{summary.get('final_model')}`"]
    return "\n".join(lines)


def summary_markdown(final: dict, datasets: list[dict]) -> str:
    rows = "\n".join(f"| {key} | {value} |" for key, value in final.items())
    sources = "\n".join(f"- `{d['path']}`: {d['rows']} rows, {d['files']} shards" for d in datasets)
    return f"# Training run\n\n| metric | value |\n| --- | --- |\n{rows}\n\n## Datasets\n\n{sources}\n"
