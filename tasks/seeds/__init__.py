"""Stage 1: sample 1-15 line snippets of real code as seeds."""
