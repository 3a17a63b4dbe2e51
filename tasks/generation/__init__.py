"""Stage 2: one shard of seeds through the teacher, parsed into (problem, solution) pairs."""
