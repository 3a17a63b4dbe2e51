"""The teacher LLM client: prompts, async fan-out, limits, retries, reply cache."""
