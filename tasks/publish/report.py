"""The refresh report: a markdown artifact with the dataset card, sample previews and charts.

Charts are small PNGs drawn with matplotlib and embedded as `data:image/png;base64,...`
URIs: the Prefect UI renders markdown artifacts in the browser, which cannot read files on
the worker's disk, so a `file://` image would show as broken there; an embedded image
travels inside the artifact itself (checked in headless Chromium by
tests/test_deployments_e2e.py). The PNGs are also written beside the dataset
(OUTPUT/report/*.png) for readers of the directory.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.publish.dataset_card import render_dataset_card

SAMPLE_ROWS = 3
PREVIEW_CHARS = 600
CHART_DPI = 80


def _fence(text: str, lang: str = "") -> str:
    """A fenced block that the text cannot close early, whatever backticks it holds."""
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _clip(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + f"\n… ({len(text) - limit} more characters)"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI, bbox_inches="tight")
    return buf.getvalue()


def draw_charts(langs: Counter, problem_lens: list[int], solution_lens: list[int]) -> dict[str, bytes]:
    """PNG bytes of: language distribution, problem length and solution length histograms."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    from matplotlib.figure import Figure  # the OO API: no global pyplot state between runs

    charts = {}
    counts = langs.most_common(15)
    fig = Figure(figsize=(5, 2.6))
    ax = fig.subplots()
    ax.bar([c[0] for c in counts], [c[1] for c in counts], color="#3b82f6")
    ax.set_title("rows per language")
    ax.tick_params(axis="x", labelrotation=45)
    charts["languages"] = _png(fig)
    for key, values, title in (
        ("problem_length", problem_lens, "problem length (characters)"),
        ("solution_length", solution_lens, "solution length (characters)"),
    ):
        fig = Figure(figsize=(5, 2.4))
        ax = fig.subplots()
        ax.hist(values or [0], bins=min(30, max(5, len(values) // 4)), color="#10b981")
        ax.set_title(title)
        ax.set_ylabel("rows")
        charts[key] = _png(fig)
    return charts


def draw_validation_chart(by_language: dict[str, dict[str, int]]) -> bytes:
    """PNG bytes of validation outcomes per language (stacked: passed, then each failure reason)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    langs = list(by_language)
    outcomes = sorted({o for counts in by_language.values() for o in counts}, key=lambda o: (o != "passed", o))
    fig = Figure(figsize=(5, 2.6))
    ax = fig.subplots()
    bottom = [0] * len(langs)
    for outcome in outcomes:
        values = [by_language[lang].get(outcome, 0) for lang in langs]
        ax.bar(langs, values, bottom=bottom, label=outcome, color="#10b981" if outcome == "passed" else None)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_title("validation outcomes per language")
    ax.legend(fontsize=6)
    return _png(fig)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def render_report(out_dir: str | Path, manifest: dict, sample_rows: int = SAMPLE_ROWS) -> str:
    """Markdown for the refresh report; also writes OUTPUT/report/*.png."""
    out_dir = Path(out_dir)
    langs: Counter = Counter()
    problem_lens: list[int] = []
    solution_lens: list[int] = []
    samples: list[dict] = []
    for f in manifest.get("files", []):
        # Lengths are computed in Arrow, one shard at a time: a million rows never become
        # Python strings here, only the few sample rows do.
        table = pq.read_table(out_dir / f["path"], columns=["lang", "seed", "problem", "solution"])
        langs.update({v["values"]: v["counts"] for v in table["lang"].value_counts().to_pylist()})
        problem_lens += pc.utf8_length(table["problem"]).to_pylist()
        solution_lens += pc.utf8_length(table["solution"]).to_pylist()
        if len(samples) < sample_rows:
            samples += table.slice(0, sample_rows - len(samples)).to_pylist()

    charts = draw_charts(langs, problem_lens, solution_lens)
    validated = manifest["stages"].get("validate", {}).get("extra", {}).get("by_language")
    if validated:
        charts["validation"] = draw_validation_chart(validated)
    report_dir = out_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    for name, png in charts.items():
        (report_dir / f"{name}.png").write_bytes(png)

    acct = manifest["accounting"]
    lines = [
        f"# Dataset report: {manifest['rows']} rows",
        "",
        f"Status **{manifest['status']}**; {acct['seeds']} seeds = {acct['rows']} rows + {acct['dropped']} dropped. "
        f"Output `{manifest['config']['output_dir']}`.",
        "",
        "## Charts",
        "",
        f"![rows per language]({_data_uri(charts['languages'])})",
        "",
        f"![problem length]({_data_uri(charts['problem_length'])})",
        "",
        f"![solution length]({_data_uri(charts['solution_length'])})",
        "",
        *([f"![validation outcomes per language]({_data_uri(charts['validation'])})", ""] if validated else []),
        "## Samples",
        "",
    ]
    if not samples:
        lines.append("_No rows._")
    for i, row in enumerate(samples, 1):
        lines += [
            f"### Sample {i} ({row['lang']})",
            "",
            "Seed:",
            "",
            _fence(_clip(row["seed"]), row["lang"] or ""),
            "",
            "Problem:",
            "",
            _fence(_clip(row["problem"])),
            "",
            "Solution:",
            "",
            _fence(_clip(row["solution"])),
            "",
        ]
    card = render_dataset_card(manifest)
    if card.startswith("---"):  # the YAML header is for the Hugging Face hub, not for readers
        card = card.split("---", 2)[2].lstrip()
    lines += ["## Dataset card", "", card]
    return "\n".join(lines)
