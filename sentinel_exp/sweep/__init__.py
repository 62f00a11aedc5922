"""Sweeps as studies: Hydra callbacks, the order of the jobs, arms and their comparison."""
