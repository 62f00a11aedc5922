"""A sweep as one study: the runs of its jobs grouped into configurations (arms), and each
configuration compared with the baseline (see comparison.py for the statistics).

A configuration is what a job's overrides say, less the keys that only repeat it (`repeat`,
`chunk`): the repeats of one configuration are the runs of one arm.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sentinel_exp import tags as tag
from sentinel_exp.analysis.comparison import (
    ALPHA,
    DEFAULT_MIN_EFFECT_PCT,
    SIGNIFICANT,
    Arm,
    Comparison,
    Design,
    RunResult,
    Verdict,
    compare,
)
from sentinel_exp.analysis.stats import latency_samples
from sentinel_exp.errors import UserError
from sentinel_exp.names import ServerKind
from sentinel_exp.records import RequestRecord, read_records
from sentinel_exp.report.plots import BarRow
from sentinel_exp.serve.sim_settings import UNMODELLED_OPTIONS, unmodelled_note
from sentinel_exp.store.run_folder import RunFolder, RunSummary, read_run_file

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
    return ArmSetup(tags.get(tag.SERVER_KIND), options if isinstance(options, dict) else {})


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
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Every configuration against the baseline; nothing to compare with fewer than two."""
    if len(configurations) < 2:
        return []
    index = pick_baseline(configurations, baseline)
    reference = configurations[index]
    compared = [
        compare(reference, arm, objective=objective, min_effect_pct=min_effect_pct, alpha=alpha)
        for i, arm in enumerate(configurations)
        if i != index
    ]
    return [_explained(c) for c in compared]


# The row whose verdict a reader checks the objective's against: the same requests, another clock.
TWINS = {"ttft_ms_p50": "ttfb_ms_p50", "ttfb_ms_p50": "ttft_ms_p50", "ttft_ms_p95": "ttfb_ms_p95"}


def _explained(comparison: Comparison) -> Comparison:
    """A note where the objective and its twin disagree: both verdicts are right, for different
    reasons, and a reader must be told which."""
    primary = comparison.primary
    twin = comparison.row(TWINS.get(comparison.objective, ""))
    if primary is None or twin is None or (primary.verdict in SIGNIFICANT) == (twin.verdict in SIGNIFICANT):
        return comparison
    note = (
        f"{primary.label} is the objective, tested alone at {100 * (1 - comparison.confidence):.2g}%; "
        f"{twin.label} is a secondary row, held to Holm's correction over every secondary row: on the same "
        f"requests one can pass and the other not"
    )
    return dataclasses.replace(comparison, notes=(*comparison.notes, note))


def read_study(sweep_dir: Path) -> dict[str, Any]:
    """The study's design as it ran; empty for a sequential sweep."""
    try:
        data = json.loads(RunFolder(sweep_dir).study.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def study_alpha(sweep_dir: Path) -> float:
    """The level its verdicts are judged at: a sequential study's last look spent less than 0.05."""
    return float(read_study(sweep_dir).get("alpha", ALPHA))


def study_lines(sweep_dir: Path) -> list[str]:
    """What the design did, in words: its rounds and, with a budget, whether it decided."""
    design = read_study(sweep_dir)
    if not design:
        return []
    lines = [f"study: {design['rounds']} rounds, arms in balanced order (seed {design.get('seed', 0)})"]
    if "budget_s" in design:
        looks = design.get("looks") or []
        spent = looks[-1]["elapsed_s"] if looks else 0.0
        state = "decided" if design.get("decided") else "ran out of budget, undecided"
        lines.append(
            f"sequential: {state} after {len(looks)} look(s) and {spent:.0f} of compare.budget_s="
            f"{design['budget_s']:g} s; its last look tested at level {design['alpha']:.3g} "
            f"({design.get('spending', 'alpha spending')})"
        )
    return lines


def load_run(folder: Path, metrics: dict[str, float]) -> RunResult | None:
    """A job's records from its folder (None when it wrote none), with the interleaved study it was
    measured in."""
    path = RunFolder(folder).records_or_reused()
    if path is None:
        return None
    return RunResult(records=tuple(read_records(path)), metrics=metrics, study=study_of(folder))


def study_of(folder: Path) -> str | None:
    """The study a job's run was measured in: its run.json's tag, or the reused run's (summary.json)."""
    try:
        found = _tag_study(json.loads(RunFolder(folder).run_json.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        found = None
    reused = RunSummary.read(folder)
    return found or (reused.study_id if reused is not None else None)


def _tag_study(run: dict[str, Any]) -> str | None:
    tags = run.get("tags") if isinstance(run, dict) else None
    return str(tags[tag.STUDY_ID]) if isinstance(tags, dict) and tags.get(tag.STUDY_ID) else None


@dataclass(frozen=True)
class Best:
    """What a study says is best on its objective, and whether its verdicts say so."""

    name: str | None  # None: no configuration is decided better than the others
    why: str


def best_arm(baseline: str, comparisons: Sequence[Comparison]) -> Best:
    """The winner only where the objective's verdicts name one: the candidate improved the most,
    or the baseline when every candidate is worse; otherwise none."""
    improved = [c for c in comparisons if c.primary is not None and c.primary.verdict == Verdict.IMPROVED]
    if improved:
        top = min(improved, key=lambda c: _better_first(c))
        row = top.primary
        assert row is not None and row.change_pct is not None
        return Best(top.candidate, f"{row.label} {row.change_pct:+.1f}% vs {baseline}, {row.verdict}")
    rows = [c.primary for c in comparisons]
    if rows and all(r is not None and r.verdict == Verdict.WORSE for r in rows):
        return Best(baseline, f"every other configuration is worse on {rows[0].label if rows[0] else 'it'}")
    if comparisons and all(c.design is Design.SINGLE for c in comparisons):
        return Best(None, "one run per arm: the noise between runs is unknown")
    worse = [c.candidate for c in comparisons if c.primary is not None and c.primary.verdict == Verdict.WORSE]
    if worse:
        label = next(r.label for r in rows if r is not None)
        return Best(None, f"no configuration is better than {baseline} on {label}; worse: {', '.join(worse)}")
    return Best(None, "no configuration differs significantly from the baseline on the objective")


def _better_first(comparison: Comparison) -> float:
    row = comparison.primary
    assert row is not None and row.change_pct is not None
    return row.change_pct if row.direction is None or row.direction == "minimize" else -row.change_pct


@dataclass(frozen=True)
class CandidateLine:
    """A candidate in the study's one-screen table: the objective's change, CI and verdict, and
    the other rows that changed significantly."""

    candidate: str
    change: str
    ci: str
    verdict: str
    also: str


def candidate_lines(comparisons: Sequence[Comparison]) -> list[CandidateLine]:
    from sentinel_exp.analysis.comparison import verdict_text

    lines = []
    for c in comparisons:
        row = c.primary
        others = [
            f"{r.label} {r.change_pct:+.0f}{'' if r.change_unit == '%' else ' '}{r.change_unit} {r.verdict}"
            for r in c.rows
            if not r.primary and r.verdict in SIGNIFICANT and r.change_pct is not None
        ]
        if row is None:
            lines.append(CandidateLine(c.candidate, "n/a", "-", "no objective row", "; ".join(others) or "-"))
            continue
        change = "n/a" if row.change_pct is None else f"{row.change_pct:+.1f}{row.change_unit}"
        ci = "-" if row.ci_low is None or row.ci_high is None else f"[{row.ci_low:+.1f}, {row.ci_high:+.1f}]"
        verdict = verdict_text(row, c.min_effect_pct)
        lines.append(CandidateLine(c.candidate, change, ci, verdict, "; ".join(others) or "-"))
    return lines


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
