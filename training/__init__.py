"""Code that runs under the DeepSpeed / torchrun launcher on training machines.

Nothing here imports prefect: a GPU box runs `training/sft.py` with only torch,
transformers, accelerate and deepspeed installed.
"""
