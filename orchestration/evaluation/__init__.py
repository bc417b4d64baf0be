"""Evaluation: `tokenmill eval` (a model or checkpoint on a suite, recorded as an MLflow run)."""
