"""ZeRO-3 knobs and the checkpointing decision, derived from the model's shape."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

from training.zero import model_shape, needs_checkpointing, step_memory_bytes, zero3_knobs  # noqa: E402

GiB = 2**30


def llama(hidden, layers, intermediate, vocab=32000):
    return transformers.LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                                    num_attention_heads=hidden // 128, num_key_value_heads=hidden // 128,
                                    vocab_size=vocab)  # fmt: skip


def test_shape_counts_the_real_parameters():
    config = llama(1024, 4, 2816)
    shape = model_shape(config)
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    assert shape.layer_parameters == sum(p.numel() for p in model.model.layers[0].parameters())
    assert shape.largest_parameter == 32000 * 1024


def test_knobs_follow_the_model_and_the_gpus():
    shape_1b = model_shape(llama(2048, 16, 5632))
    shape_7b = model_shape(llama(4096, 32, 11008))
    one_gpu = zero3_knobs(shape_1b, 1, 141 * GiB, "none")
    assert one_gpu["stage3_param_persistence_threshold"] > shape_1b.largest_parameter  # nothing to gather on one GPU
    assert one_gpu["stage3_prefetch_bucket_size"] == one_gpu["reduce_bucket_size"] == shape_1b.layer_parameters
    eight_gpus = zero3_knobs(shape_7b, 8, 80 * GiB, "none")
    assert eight_gpus["stage3_param_persistence_threshold"] == 10 * 4096  # a 7B model is partitioned
    assert zero3_knobs(shape_1b, 1, 141 * GiB, "param")["stage3_param_persistence_threshold"] == 10 * 2048
    assert zero3_knobs(shape_1b, 2, None, "none")["stage3_param_persistence_threshold"] == 10 * 2048  # CPU ranks


def test_checkpointing_only_when_the_step_does_not_fit():
    shape_1b = model_shape(llama(2048, 16, 5632))
    shape_7b = model_shape(llama(4096, 32, 11008))
    small = step_memory_bytes(shape_1b, 16384, 1, whole_params=True, fused_cross_entropy=False)
    big = step_memory_bytes(shape_7b, 16384, 8, whole_params=False, fused_cross_entropy=False)
    assert not needs_checkpointing("auto", True, small, 141 * GiB)
    assert needs_checkpointing("auto", True, big, 80 * GiB)
    assert not needs_checkpointing("auto", False, big, None)  # CPU
    assert needs_checkpointing("on", False, 0, None) and not needs_checkpointing("off", True, big, 80 * GiB)
    assert step_memory_bytes(shape_1b, 16384, 1, True, fused_cross_entropy=True) < small  # no logits
