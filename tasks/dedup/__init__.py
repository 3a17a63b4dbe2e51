"""Stages 3-4: exact dedup and MinHash near-dedup."""
