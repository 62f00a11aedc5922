"""Where a sweep's `repeat` override stands, for the default sweeper (hydra_plugins/sentinel_exp_sweeper).

That sweeper is Hydra's basic sweeper (every combination), which varies the last override
fastest. Under `sequential`, `repeat` goes last, so a configuration's repeats run back to back
(A A A B B B). Under `interleaved` (the default) each configuration is one arm of a study that
measures every arm in rounds (run/rounds.py): repeats as separate runs have no place there.
"""

from __future__ import annotations

from sentinel_exp.names import SweepOrder

REPEAT = "repeat"


class InterleaveError(ValueError):
    """A sweep that sets `repeat` under the interleaved order, which measures each configuration once."""


def override_key(override: str) -> str:
    """`repeat=range(0,3)` -> repeat; a key holds no `=`, whatever its value does."""
    return override.split("=", 1)[0].lstrip("+~")


def arrange(overrides: list[str], order: str) -> list[str]:
    """The sweep's overrides (a preset's params first, then the command line's) with `repeat`
    last. A key given twice keeps its last value, as Hydra's sweeper does."""
    repeats = [o for o in overrides if override_key(o) == REPEAT]
    rest = [o for o in overrides if override_key(o) != REPEAT]
    if order == SweepOrder.interleaved and repeats:
        raise InterleaveError(
            f"sweep.order=interleaved measures each configuration once, in rounds (compare.blocks), so the "
            f"sweep cannot set repeat as well (got {repeats[-1]}); for repeated runs of each configuration "
            f"use sweep.order=sequential (sweep=repeat3 sets it)"
        )
    return [*rest, *repeats[-1:]]
