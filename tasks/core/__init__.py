"""The bottom layer: schema, errors, stats, Parquet I/O. Imports nothing above it."""
