"""The run folder as the source of truth, and MLflow as its upload."""
