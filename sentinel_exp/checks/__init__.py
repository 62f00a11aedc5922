"""Checks made before a run measures: the option lint (pure) and the hardware profiles."""
