"""Adapters that put steplog under other tracking frontends: mlflow/ (MLflow's tracking store)."""
