"""Prefect flows: what runs where. The work itself lives in tasks/."""
