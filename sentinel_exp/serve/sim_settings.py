"""The simulated server's settings: one type for the experiment config (`server.sim`), the flags
of `python -m sentinel_exp.serve --engine simulated`, the engine and the runner.

Each field carries a one-line description (its `doc`), which is also the flag's `--help`. The
flags are generated from the fields (`add_arguments`, `from_args`), the runner turns a settings
object back into those flags (`to_args`), and `problems` is the one place the ranges are checked.
Standard library only, so the config layer imports it without the server's dependencies.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sentinel_exp.names import FaultKind

FAULTS = tuple(FaultKind)
# Runner options whose values the simulated server does not model: a change of them reloads the
# model, a cold start as on Ollama, but no value of them makes a request faster or slower.
UNMODELLED_OPTIONS = ("num_ctx", "num_batch", "num_thread", "num_gpu", "main_gpu", "use_mmap")


def unmodelled_note(options: Mapping[str, Any]) -> str | None:
    """What a run or a comparison on the simulated server should not be read as showing."""
    named = [name for name in UNMODELLED_OPTIONS if options.get(name) is not None]
    if not named:
        return None
    values = "its value changes" if len(named) == 1 else "their values change"
    return (
        f"the simulated server does not model {', '.join(named)}: {values} no timing on it "
        f"(a change only reloads the model), so measure {'it' if len(named) == 1 else 'them'} on Ollama "
        f"or the embedded server"
    )


_T = TypeVar("_T")


def setting(default: _T, doc: str) -> _T:
    """A field with its default and its one-line description."""
    return field(default=default, metadata={"doc": doc})


@dataclass
class SimSettings:
    """Latency model of the simulated server (milliseconds) and its scripted faults."""

    load_ms: float = setting(300.0, "cold load in ms: first request, after keep_alive expiry, on a reload")
    ttft_ms: float = setting(40.0, "warm time to first token in ms, from request received to first token written")
    itl_ms: float = setting(5.0, "time between tokens in ms")
    prefill_ms_per_token: float = setting(0.0, "ms added to the time to first token per prompt word not in the cache")
    jitter_ms: float = setting(0.0, "standard deviation in ms of Gaussian noise on each delay; 0 = deterministic")
    seed: int = setting(0, "seed of the jitter")
    tokens: int = setting(32, "answer length in words when the request sets no num_predict")
    parallel: int = setting(0, "generations at once; 0 = unlimited (for the embedded engine the default is 1)")
    faults: dict[int, str] = field(
        default_factory=dict,
        metadata={
            "doc": f"make generation request N (1-based, warmup included) fail; KIND in {', '.join(FAULTS)}",
            "flag": "fault",
            "metavar": "N:KIND",
        },
    )
    # Last, so settings built by position (SimSettings(300.0, 40.0, ...)) keep their meaning.
    gpu_fraction: float = setting(0.0, "fraction of the loaded model /api/ps reports in VRAM (size_vram/size), 0 to 1")
    # A shared machine's noise (machine_slowdown): every delay slower by a factor that wanders with
    # the wall clock, seeded by `seed`, so two servers of one study see the same machine.
    drift_pct: float = setting(0.0, "every delay slower by up to this many percent along a slow drift (machine speed)")
    drift_period_s: float = setting(120.0, "period in s of the drift's slowest wave")
    spell_pct: float = setting(0.0, "every delay slower by this many percent during a spell (a neighbour's burst)")
    spell_every_s: float = setting(20.0, "mean time in s between the starts of spells")
    spell_s: float = setting(2.0, "length in s of a spell")
    noise_epoch: float = setting(0.0, "unix time the drift and spells count from; an interleaved study sets its start")

    def problems(self, prefix: str = "") -> list[str]:
        """Each setting out of range, one line each, named `prefix` + field; empty when usable."""
        found = [
            f"{prefix}{name} must be 0 or more (got {getattr(self, name)})"
            for name in ("load_ms", "ttft_ms", "itl_ms", "prefill_ms_per_token", "jitter_ms")
            if getattr(self, name) < 0
        ]
        if self.tokens < 1:
            found.append(f"{prefix}tokens must be at least 1 (got {self.tokens})")
        if not 0.0 <= self.gpu_fraction <= 1.0:
            found.append(f"{prefix}gpu_fraction must be between 0 and 1 (got {self.gpu_fraction})")
        if self.parallel < 0:
            found.append(f"{prefix}parallel must be 0 (unlimited) or more (got {self.parallel})")
        found += [
            f"{prefix}{name} must be 0 or more (got {getattr(self, name)})"
            for name in ("drift_pct", "spell_pct")
            if getattr(self, name) < 0
        ]
        found += [
            f"{prefix}{name} must be positive seconds (got {getattr(self, name)})"
            for name in ("drift_period_s", "spell_every_s", "spell_s")
            if getattr(self, name) <= 0
        ]
        faults: object = self.faults  # from a config, any value a user typed
        if not isinstance(faults, Mapping):
            found.append(f"{prefix}faults must be a mapping like {{3: http_500}} (got {faults!r})")
        else:
            found += [
                f"{prefix}faults: {number}: {kind} should be <request number>: one of {', '.join(FAULTS)}"
                for number, kind in faults.items()
                if isinstance(number, bool) or not isinstance(number, int) or number < 1 or kind not in FAULTS
            ]
        return found

    def check(self) -> None:
        """Raise ValueError naming every problem, for the engine and the serve command."""
        found = self.problems()
        if found:
            raise ValueError("; ".join(found))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> SimSettings:
        """The settings in a mapping that holds these fields (the `server.sim` config node), unchecked;
        other keys are left out and faults null means none."""
        given = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values}
        faults = given.get("faults")
        if faults is None:
            given.pop("faults", None)
        elif isinstance(faults, Mapping):
            given["faults"] = dict(faults.items())
        return cls(**given)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, title: str = "simulated engine") -> None:
        """One flag per field: `load_ms` is `--load-ms`; a mapping field is a repeatable KEY:VALUE flag.
        Unset flags stay out of the namespace, so `from_args` takes the defaults from the fields."""
        group = parser.add_argument_group(title)
        hints = _field_types()
        for f in dataclasses.fields(cls):
            doc = f.metadata["doc"]
            if _is_mapping(hints[f.name]):
                key_type, value_type = typing.get_args(hints[f.name])
                group.add_argument(
                    _flag(f),
                    dest=f.name,
                    action="append",
                    type=_pair_parser(key_type, value_type, f.metadata["metavar"]),
                    default=argparse.SUPPRESS,
                    metavar=f.metadata["metavar"],
                    help=f"{doc} (repeatable)",
                )
            else:
                group.add_argument(
                    _flag(f),
                    dest=f.name,
                    type=hints[f.name],
                    default=argparse.SUPPRESS,
                    help=f"{doc} (default: {f.default})",
                )

    @classmethod
    def from_args(cls, namespace: argparse.Namespace) -> SimSettings:
        """The settings from flags that `add_arguments` defined; unchecked (see `check`)."""
        hints = _field_types()
        given: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if hasattr(namespace, f.name):
                value = getattr(namespace, f.name)
                given[f.name] = dict(value) if _is_mapping(hints[f.name]) else value
        return cls(**given)

    def to_args(self) -> list[str]:
        """The flags that `from_args` reads back into equal settings (the runner starts the server with them)."""
        hints = _field_types()
        args: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if _is_mapping(hints[f.name]):
                args += [f"{_flag(f)}={key}:{item}" for key, item in (value or {}).items()]
            else:
                # One argument with "=": argparse would take a negative value for an option.
                args.append(f"{_flag(f)}={value}")
        return args


def machine_slowdown(settings: SimSettings, unix_time: float) -> float:
    """The factor every delay is multiplied by at `unix_time`: a slow drift (three waves of the
    drift period and shorter, phases drawn from the seed, together within +-drift_pct) times the
    spells (in each half of spell_every_s, with chance 1/2, one spell of spell_s at a seeded
    offset). A function of the wall clock alone, with no state: two server processes with the same
    settings slow down together, as two arms on one shared machine do. Counted from noise_epoch, a
    study's noise is the same whenever it runs."""
    factor = 1.0
    unix_time -= settings.noise_epoch
    if settings.drift_pct > 0:
        phases = random.Random(f"{settings.seed}:drift")
        waves = ((1.0, 1.0), (0.5, 2.7), (0.25, 6.3))  # (weight, period divisor)
        wave = sum(
            weight
            * math.sin(2 * math.pi * unix_time * divisor / settings.drift_period_s + phases.uniform(0, 2 * math.pi))
            for weight, divisor in waves
        ) / sum(weight for weight, _ in waves)
        factor *= 1.0 + settings.drift_pct / 100.0 * wave
    if settings.spell_pct > 0 and _in_spell(settings, unix_time):
        factor *= 1.0 + settings.spell_pct / 100.0
    return max(factor, 0.0)


def _in_spell(settings: SimSettings, unix_time: float) -> bool:
    slot_s = settings.spell_every_s / 2
    slot = math.floor(unix_time / slot_s)
    # A spell longer than a slot can reach into the next ones: look back far enough.
    for earlier in range(slot - math.ceil(settings.spell_s / slot_s), slot + 1):
        draw = random.Random(f"{settings.seed}:spell:{earlier}")
        if draw.random() < 0.5:
            start = earlier * slot_s + draw.random() * slot_s
            if start <= unix_time < start + settings.spell_s:
                return True
    return False


def _field_types() -> dict[str, Any]:  # Any: typing forms such as dict[int, str], not only classes
    # SimSettings' own, also for a subclass that retypes a field (the config's `faults: Any`).
    return typing.get_type_hints(SimSettings)


def _flag(f: dataclasses.Field[Any]) -> str:
    return "--" + str(f.metadata.get("flag", f.name)).replace("_", "-")


def _is_mapping(hint: Any) -> bool:  # Any: a typing form such as dict[int, str], not a class
    return typing.get_origin(hint) is dict


def _pair_parser(key_type: type, value_type: type, metavar: str) -> Callable[[str], tuple[Any, Any]]:
    """KEY:VALUE, converted to the mapping's key and value types; whether they are in range is for
    `problems` to say."""

    def parse(text: str) -> tuple[Any, Any]:
        key, sep, value = text.partition(":")
        try:
            if not sep:
                raise ValueError
            return key_type(key), value_type(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {metavar}, got {text!r}") from None

    return parse
