"""Evaluate a trained model on HumanEval(+) / MBPP(+) in the sandbox."""
