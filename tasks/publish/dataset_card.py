"""The dataset card (OUTPUT/README.md), rendered from the manifest."""

from __future__ import annotations



def validation_lines(stage: dict | None) -> str:
    """What execution validation found, for the card: isolation, pass rate and outcomes per
    language, the repair round. Says plainly when the pairs were not executed."""
    if stage is None:
        return ("- Validation: **not run** — the pairs were not executed (the output format asked the teacher "
                "for no tests, or validation was off).")
    extra = stage.get("extra", {})
    rates = ", ".join(f"{lang} {rate:.1%}" for lang, rate in extra.get("pass_rate", {}).items()) or "none ran"
    outcomes = "; ".join(
        f"{lang}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) for lang, counts in extra.get("by_language", {}).items()
    )
    lines = [f"- Validation: each solution ran against the teacher's tests in the sandbox (isolation "
             f"`{extra.get('isolation')}`); pass rate {rates}; outcomes {outcomes or '-'}."]
    if "repair" in extra:
        r = extra["repair"]
        lines.append(f"  Repair round: {r['attempted']} failed pairs sent back once, {r['recovered']} recovered, "
                     f"{r['still_failing']} still failing.")
    return "\n".join(lines)


def render_dataset_card(manifest: dict) -> str:
    config = manifest["config"]
    teacher, seeds = config["teacher"], config["seeds"]
    langs = manifest["stages"]["seeds"].get("extra", {}).get("seeds_per_lang", {})  # what the seeds stage counts
    stage_rows = "\n".join(
        f"| {name} | {s['in']} | {s['out']} | {', '.join(f'{k}: {v}' for k, v in s['dropped'].items()) or '-'} |"
        for name, s in manifest["stages"].items()
    )
    not_checked = manifest.get("benchmarks_not_checked") or []
    decontamination = "on" if config.get("decontamination") else "off"
    if config.get("decontamination") and not_checked:
        decontamination = f"partial: **not checked against {', '.join(not_checked)}** (could not be loaded)"
    files = "\n".join(f"| `{f['path']}` | {f['rows']} | `{f['sha256'][:16]}…` |" for f in manifest["files"])
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/*.parquet
task_categories:
- text-generation
tags:
- code
- oss-instruct
- synthetic
---

# OSS-Instruct dataset ({manifest['rows']} rows)

Made by ossforge {manifest['ossforge_version']} on {manifest['created_at']} with the
OSS-Instruct method of *Magicoder: Source Code Is All You Need*: each row is a coding problem and its
solution written by a teacher model that was shown a 1–{seeds.get('max_lines', 15)} line snippet of real
open-source code (the `seed` column, with its provenance).

Status: **{manifest['status']}** · config fingerprint `{manifest['config_fingerprint']}`

## How it was made

- Seeds: `{seeds['source']}`, {manifest['stages']['seeds']['out']} snippets, random seed {seeds.get('random_seed')};
  languages: {', '.join(f'{lang} {n}' for lang, n in langs.items()) if langs else 'see the lang column'}.
- Teacher: `{teacher['model']}`, temperature {teacher['temperature']}, top_p {teacher['top_p']},
  request seed = {teacher['seed_offset']} + seed index, output format `{teacher['output_format']}`.
- Cleaning: exact dedup on normalised problem + solution, MinHash near-dedup
  ({'on' if config.get('near_dedup') else 'off'}), benchmark decontamination
  ({decontamination}).
{validation_lines(manifest["stages"].get("validate"))}

## Counts

| stage | in | out | dropped (reason: count) |
| --- | ---: | ---: | --- |
{stage_rows}

Every seed is either a row or a counted drop: {manifest['accounting']}.
Removed rows are listed, with the reason, under `audit/`.

## Files

| file | rows | sha256 |
| --- | ---: | --- |
{files}

```python
from datasets import load_dataset
ds = load_dataset("parquet", data_files="data/*.parquet", split="train")
```

## Licence and provenance

Seeds keep their source path, line range and licence where known (`seed_*` columns). Generated text
is subject to the teacher provider's terms of use.
"""
