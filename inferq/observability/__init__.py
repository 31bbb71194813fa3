"""Logging setup shared by every process (API, workers, CLI); Prometheus lives with its users for now."""
