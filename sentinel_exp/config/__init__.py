"""The typed config: dataclass schemas, their checks and field docs, and Hydra's registration."""
