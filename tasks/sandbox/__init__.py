"""Run untrusted generated code in isolation (evaluation and validation share it)."""
