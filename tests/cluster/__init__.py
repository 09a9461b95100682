"""Cluster tests: PostgreSQL, MLflow server and Ray nodes as real local processes."""
