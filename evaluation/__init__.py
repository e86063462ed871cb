"""Evaluation: robustness metrics, harness, sanity checks, reports and MLflow tracking."""
