"""A sweep as one study: the runs of its jobs grouped into configurations (arms), and each
configuration compared with the baseline (see comparison.py for the statistics).

A configuration is what a job's overrides say, less the keys that only repeat it (`repeat`,
`chunk`): the repeats of one configuration are the runs of one arm.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sentinel_exp.analysis.comparison import DEFAULT_MIN_EFFECT_PCT, Arm, Comparison, RunResult, compare
from sentinel_exp.analysis.stats import latency_samples
from sentinel_exp.errors import UserError
from sentinel_exp.names import ServerKind
from sentinel_exp.records import RequestRecord, read_records
from sentinel_exp.report.plots import BarRow
from sentinel_exp.serve.sim_settings import UNMODELLED_OPTIONS, unmodelled_note
from sentinel_exp.store.run_folder import read_run_file

# Overrides that run a configuration again rather than change it.
REPEAT_KEYS = frozenset({"repeat", "chunk"})
BAR_RESAMPLES = 2000


@dataclass(frozen=True)
class ArmSetup:
    """What a configuration's runs were measured against: the server's kind and the options sent."""

    server_kind: str | None
    options: Mapping[str, Any]


def setup_of(tags: Mapping[str, str], params: Mapping[str, str]) -> ArmSetup:
    """From a run's tags and params (run.json, or the MLflow run: the same names)."""
    try:
        options = json.loads(params.get("sent_options", "{}"))
    except ValueError:
        options = {}
    return ArmSetup(tags.get("sentinel.server_kind"), options if isinstance(options, dict) else {})


def folder_setup(folder: Path) -> ArmSetup | None:
    try:
        run = read_run_file(folder)
    except UserError:
        return None
    return setup_of(run.tags, run.params)


@dataclass(frozen=True)
class MeasuredJob:
    """One finished job: its overrides and what it measured."""

    num: int
    overrides: tuple[str, ...]
    run: RunResult
    setup: ArmSetup | None = None


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def configuration(overrides: Sequence[str]) -> tuple[str, ...]:
    return tuple(o for o in overrides if _key(o) not in REPEAT_KEYS)


def short_keys(keys: Iterable[str]) -> dict[str, str]:
    """Each setting's key as a label shows it: its last part (`workload.concurrency` is
    `concurrency`: tables are narrow), unless another of `keys` ends the same way
    (`server.keep_alive`, `workload.keep_alive`), when both keep their whole path."""
    paths = {key: key.lstrip("+~") for key in keys}
    ends = Counter(path.rsplit(".", 1)[-1] for path in set(paths.values()))
    return {key: path if ends[path.rsplit(".", 1)[-1]] > 1 else path.rsplit(".", 1)[-1] for key, path in paths.items()}


def arm_names(configurations: Sequence[tuple[str, ...]]) -> list[str]:
    """Each configuration named by the overrides that differ between them (the swept values),
    keys shortened (short_keys): `options=low_ctx`, `keep_alive=-1 concurrency=4`."""
    seen: dict[str, set[str]] = {}
    for overrides in configurations:
        for override in overrides:
            key, _, value = override.partition("=")
            seen.setdefault(key, set()).add(value)
    swept = {key for key, values in seen.items() if len(values) > 1}
    label = short_keys(swept)

    def short(override: str) -> str:
        key, _, value = override.partition("=")
        return f"{label[key]}={value.replace(chr(92), '')}"

    names = [" ".join(short(o) for o in overrides if o.partition("=")[0] in swept) for overrides in configurations]
    return [name or "(all)" for name in names]


def _grouped(jobs: Sequence[MeasuredJob]) -> dict[str, list[MeasuredJob]]:
    """The jobs of each configuration, by its name, in the order the first job of each ran."""
    grouped: dict[tuple[str, ...], list[MeasuredJob]] = {}
    for job in sorted(jobs, key=lambda j: j.num):
        grouped.setdefault(configuration(job.overrides), []).append(job)
    return dict(zip(arm_names(list(grouped)), grouped.values(), strict=True))


def arms(jobs: Sequence[MeasuredJob]) -> list[Arm]:
    """The configurations of a sweep in the order their first job ran, each with its repeats."""
    return [Arm(name, tuple(job.run for job in group)) for name, group in _grouped(jobs).items()]


def arm_setups(jobs: Sequence[MeasuredJob]) -> dict[str, ArmSetup]:
    """Each configuration's setup, by its name (as `arms` names it), from its first job."""
    return {name: group[0].setup for name, group in _grouped(jobs).items() if group[0].setup is not None}


def with_setup_notes(comparisons: Sequence[Comparison], setups: Mapping[str, ArmSetup]) -> list[Comparison]:
    """Each comparison with a note where its arms differ in options the server they ran on does
    not model (the simulated server's runner options): its rows then say nothing of them."""
    noted = []
    for comparison in comparisons:
        base, cand = setups.get(comparison.baseline), setups.get(comparison.candidate)
        note = None
        if base is not None and cand is not None and ServerKind.simulated in (base.server_kind, cand.server_kind):
            differ = {k: True for k in UNMODELLED_OPTIONS if base.options.get(k) != cand.options.get(k)}
            note = unmodelled_note(differ)
        noted.append(replace(comparison, notes=(*comparison.notes, note)) if note else comparison)
    return noted


def pick_baseline(candidates: Sequence[Arm], baseline: str | None) -> int:
    """Index of the baseline arm: the one named by `baseline` (a swept value such as
    `options=default`, or its short form `keep_alive=null`), else the first configuration."""
    if baseline is None:
        return 0
    wanted = baseline.replace("\\", "")
    short = f"{wanted.partition('=')[0].rsplit('.', 1)[-1]}={wanted.partition('=')[2]}"
    matches = [i for i, arm in enumerate(candidates) if {wanted, short} & set(arm.name.split())]
    if len(matches) != 1:
        names = ", ".join(arm.name for arm in candidates)
        found = "several" if matches else "none"
        raise UserError(f"compare.baseline={baseline} matches {found} of the configurations ({names})")
    return matches[0]


def compare_arms(
    configurations: Sequence[Arm],
    *,
    baseline: str | None = None,
    objective: str = "ttft_ms_p50",
    min_effect_pct: float = DEFAULT_MIN_EFFECT_PCT,
) -> list[Comparison]:
    """Every configuration against the baseline; nothing to compare with fewer than two."""
    if len(configurations) < 2:
        return []
    index = pick_baseline(configurations, baseline)
    reference = configurations[index]
    return [
        compare(reference, arm, objective=objective, min_effect_pct=min_effect_pct)
        for i, arm in enumerate(configurations)
        if i != index
    ]


def load_run(folder: Path, metrics: dict[str, float]) -> RunResult | None:
    """A job's records from its folder (None when it wrote none)."""
    path = folder / "requests.jsonl"
    if not path.is_file():
        return None
    return RunResult(records=tuple(read_records(path)), metrics=metrics)


def arm_records(arm: Arm) -> list[RequestRecord]:
    """Every record of an arm's runs, for plots that pool its repeats."""
    return [record for run in arm.runs for record in run.records]


def percentile_rows(configurations: Sequence[Arm], metric: str = "ttft", seed: int = 0) -> list[BarRow]:
    """p50 and p95 of `metric` per configuration with a 95% percentile-bootstrap CI (requests pooled
    over repeats), for the sweep's bar chart."""
    rng = np.random.default_rng(seed)
    rows = []
    for arm in configurations:
        values = np.asarray(latency_samples(arm_records(arm))[metric], dtype=float)
        if values.size < 2:
            continue
        draws = rng.choice(values, size=(BAR_RESAMPLES, values.size), replace=True)
        low_high = np.percentile(np.percentile(draws, [50, 95], axis=1), [2.5, 97.5], axis=1)
        p50, p95 = (float(v) for v in np.percentile(values, [50, 95]))
        rows.append(
            BarRow(
                arm.name,
                p50,
                p95,
                (float(low_high[0][0]), float(low_high[1][0])),
                (float(low_high[0][1]), float(low_high[1][1])),
            )
        )
    return rows


def verdict_line(comparison: Comparison) -> str:
    """The decisive row in words: `options=low_ctx vs options=default: TTFT p50 +12.3% [+8.1, +16.0], worse`."""
    row = next((r for r in comparison.rows if r.primary), None)
    if row is None:
        return f"{comparison.candidate} vs {comparison.baseline}: no objective row ({'; '.join(comparison.notes)})"
    change = "n/a" if row.change_pct is None else f"{row.change_pct:+.1f}{row.change_unit}"
    ci = "" if row.ci_low is None or row.ci_high is None else f" [{row.ci_low:+.1f}, {row.ci_high:+.1f}]"
    return f"{comparison.candidate} vs {comparison.baseline}: {row.label} {change}{ci}, {row.verdict}"
