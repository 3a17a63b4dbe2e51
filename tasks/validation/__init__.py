"""Execution-verified pairs: run each pair's solution against its tests in the sandbox, keep what passes."""
