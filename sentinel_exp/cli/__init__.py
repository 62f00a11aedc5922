"""The commands: `python -m sentinel_exp` (Hydra), `compare` and `sync`."""
