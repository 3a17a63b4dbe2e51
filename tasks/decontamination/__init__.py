"""Stage 5: remove rows that overlap public benchmarks."""
