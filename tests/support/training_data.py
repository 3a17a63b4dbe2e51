"""Small datasets and a shared tiny model for the training tests.

The rows are deliberately repetitive (a handful of arithmetic functions), so a few dozen
optimizer steps on the tiny model visibly lower the loss.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from tasks.core.schema import DATASET_SCHEMA
from tasks.publish.publish import publish_dataset

OPERATIONS = [("add", "x + {k}"), ("mul", "x * {k}"), ("sub", "x - {k}"), ("pow", "x ** {k}")]


def toy_rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        name, template = OPERATIONS[i % len(OPERATIONS)]
        k = i % 7 + 2
        expr = template.format(k=k)
        rows.append(
            {
                "id": f"row-{i}",
                "seed_index": i,
                "seed": f"y = {expr}",
                "lang": "python",
                "problem": f"Write a Python function `{name}_{k}(x)` that returns {expr}.",
                "solution": f"```python\ndef {name}_{k}(x):\n    return {expr}\n```\n",
                "teacher_model": "toy",
            }
        )
    return rows


def write_toy_dataset(out_dir: str | Path, n: int = 64, offset: int = 0, shard_size: int = 32) -> dict:
    """A dataset version as the refresh flow writes it: data/*.parquet + manifest.json."""
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in DATASET_SCHEMA.names} for row in toy_rows(n, offset)],
        schema=DATASET_SCHEMA,
    )
    return publish_dataset(out_dir, [table], shard_size=shard_size, manifest={"name": "toy"}, schema=DATASET_SCHEMA)
