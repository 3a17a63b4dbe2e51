"""Stage 6: versioned Parquet shards, manifest, dataset card, report."""
