"""Filling a flow's one config model from the CLI: defaults < --config JSON file < options.

Options are given as dotted paths ("teacher.model") so nested models are set in place;
a None value means "not given". Validation errors become one-line UserErrors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from tasks.core.errors import UserError


def read_config_file(config_file: Path | None) -> dict:
    if config_file is None:
        return {}
    try:
        data = json.loads(Path(config_file).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read config file {config_file}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {config_file} must hold a JSON object")
    return data


def apply_overrides(data: dict, overrides: dict) -> dict:
    for dotted, value in overrides.items():
        if value is None or value == []:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return data


def build_config(
    model: type[BaseModel],
    config_file: Path | None,
    overrides: dict,
    defaults: Callable[[dict], None] | None = None,
) -> BaseModel:
    """`defaults(data)` may fill what neither the file nor the options set."""
    data = apply_overrides(read_config_file(config_file), overrides)
    if defaults is not None:
        defaults(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "config"
        raise UserError(f"invalid setting {where}: {first['msg']}") from None


def config_from_options(model: type[BaseModel], settings: dict) -> BaseModel:
    """A config from flat command-line options (None = not given); errors name the option."""
    try:
        return model(**{key: value for key, value in settings.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        option = str(first["loc"][0]).replace("_", "-") if first["loc"] else "config"
        raise UserError(f"invalid --{option}: {first['msg'].removeprefix('Value error, ')}") from None
