"""Benchmarks for gcs-sync: ``bench/run.sh`` (see bench/README.md). Not tests: they print tables."""
