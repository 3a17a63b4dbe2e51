"""The training recipe: one model, one parser generated from it, one fingerprint."""

from __future__ import annotations

import pytest

from training.recipe import TrainRecipe, parse_recipe, recipe_parser, to_argv


def test_every_field_has_help_text_and_an_option():
    parser_options = {action.dest for action in recipe_parser()._actions}
    for name, field in TrainRecipe.model_fields.items():
        assert field.description, f"{name} has no help text"
        assert name in parser_options, f"{name} has no command-line option"


def test_the_command_line_round_trips_every_field():
    recipe = TrainRecipe(
        datasets=["a", "b"], output_dir="out", packing=True, max_tokens_per_batch=4096, max_steps=7,
        continue_from="/m", liger="off", final_save=False, resume=False, cpu=True, learning_rate=2e-3,
    )  # fmt: skip
    argv = to_argv(recipe)
    assert argv.count("--dataset") == 2 and "--no-final-save" in argv and "--packing" in argv
    assert parse_recipe(argv) == recipe
    # defaults come from the model, so a short hand-written command line means the same thing
    assert parse_recipe(["--dataset", "a", "--output-dir", "o"]) == TrainRecipe(datasets=["a"], output_dir="o")


def test_flow_config_is_the_recipe_plus_where_it_runs():
    from flows.train import TrainConfig, launch_command

    cfg = TrainConfig(datasets="ds", output_dir="o", nproc=2, cpu=True, packing=True, micro_batch_size=4)
    assert set(TrainRecipe.model_fields) < set(TrainConfig.model_fields)
    cmd = launch_command(cfg, "/models/base")
    recipe = parse_recipe(cmd[cmd.index("training.sft") + 1 :])
    assert recipe == cfg.recipe().model_copy(update={"model": "/models/base"})


def test_fingerprint_follows_output_changing_fields_only():
    base = TrainRecipe(datasets=["a"], output_dir="o")
    same = TrainRecipe(datasets=["a"], output_dir="elsewhere", micro_batch_size=2, save_steps=10, liger="off")
    assert base.content_fingerprint() == same.content_fingerprint()
    for change in ({"learning_rate": 1e-4}, {"packing": True}, {"max_length": 512}, {"seed": 1}):
        assert TrainRecipe(datasets=["a"], output_dir="o", **change).content_fingerprint() != base.content_fingerprint()
    assert {"micro_batch_size", "attn_implementation", "liger", "output_dir"} <= TrainRecipe.operational_fields()


def test_bad_values_end_in_one_line():
    with pytest.raises(SystemExit, match="invalid training recipe: epochs"):
        parse_recipe(["--dataset", "a", "--output-dir", "o", "--epochs", "0"])
    with pytest.raises(SystemExit, match="max_tokens_per_batch"):
        parse_recipe(["--dataset", "a", "--output-dir", "o", "--packing", "--max-tokens-per-batch", "100"])
