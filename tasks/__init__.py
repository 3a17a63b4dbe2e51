"""The steps of ossforge: plain functions that do one job each, plus their Prefect wrappers."""
