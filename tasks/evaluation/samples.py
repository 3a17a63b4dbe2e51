"""Completions made anywhere (vLLM, an API, another tool), in EvalPlus' samples format.

A samples file is JSONL, one object per line: `task_id` ("HumanEval/0", "Mbpp/2") and
either `solution` (the whole program, run as it is) or `completion` (code that continues
the problem's prompt: the program is prompt + completion). These are EvalPlus' rules
(`evalplus.evaluate`), so a samples file scores the same here as there: no Markdown
stripping, no code extraction (sanitize first if the text holds prose).

One sample per task (pass@1). A task of a scored benchmark with no sample counts as
failed (`no_code`), as a missing answer would; a benchmark with no sample at all is not
scored. Bad input is a UserError naming the line: a missing file, a line that is not a JSON
object, a task_id no selected benchmark has, neither field, a task given twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import UserError
from tasks.evaluation.benchmarks import Problem

FIELDS = ("solution", "completion")


@dataclass(frozen=True)
class Sample:
    task_id: str
    field: str  # "solution" or "completion"
    text: str
    line: int

    def program(self, problem: Problem) -> str:
        return self.text if self.field == "solution" else problem.prompt + self.text


def read_samples(path: str | os.PathLike) -> dict[str, Sample]:
    """task_id -> its sample, in file order; UserError on anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"samples file {path} not found")
    samples: dict[str, Sample] = {}
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UserError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected a JSON object with task_id and solution or completion")
            task_id = row.get("task_id")
            if not isinstance(task_id, str) or not task_id:
                raise UserError(f"{where}: no task_id")
            field = next((f for f in FIELDS if f in row), None)
            if field is None:
                raise UserError(f"{where}: {task_id} has neither 'solution' nor 'completion'")
            if not isinstance(row[field], str):
                raise UserError(f"{where}: {task_id}: {field} must be a string")
            if task_id in samples:
                raise UserError(f"{where}: {task_id} appears again (line {samples[task_id].line}); "
                                "one sample per task: pass@1")  # fmt: skip
            samples[task_id] = Sample(task_id, field, row[field], number)
    if not samples:
        raise UserError(f"samples file {path} holds no samples")
    return samples


def check_task_ids(samples: dict[str, Sample], known: set[str], benchmarks: list[str]) -> None:
    """Every sample must be a task of a selected benchmark (the whole benchmark, not only --limit)."""
    unknown = [s for s in samples.values() if s.task_id not in known]
    if unknown:
        first = unknown[0]
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise UserError(f"line {first.line}: unknown task_id {first.task_id!r}{more} for benchmarks {', '.join(benchmarks)}")


def programs_for(problems: list[Problem], samples: dict[str, Sample]) -> tuple[list[Problem], list[str], list[str]]:
    """(problems scored, completion text, program) for each benchmark that has any sample;
    a problem without one gets an empty program (scored `no_code`)."""
    with_samples = {p.benchmark for p in problems if p.task_id in samples}
    chosen = [p for p in problems if p.benchmark in with_samples]
    texts = [samples[p.task_id].text if p.task_id in samples else "" for p in chosen]
    programs = [samples[p.task_id].program(p) if p.task_id in samples else "" for p in chosen]
    return chosen, texts, programs
