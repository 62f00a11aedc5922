"""The doctor's steps, which measure: the baseline as a run, each hypothesis's candidates against
the configuration as given in an interleaved study (run/rounds.py), every run uploaded under the
doctor's parent run, and the report, written whatever stopped the plan (a signal, an error)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.markup import escape

from sentinel_exp import tags as tag
from sentinel_exp.analysis.comparison import ALPHA, Arm, Comparison, RunResult, compare
from sentinel_exp.analysis.diagnosis import keep_alive_in_force
from sentinel_exp.config.schema import ExperimentConfig, to_yaml
from sentinel_exp.doctor.evidence import Evidence, Facts, gather
from sentinel_exp.doctor.hypotheses import Candidate, Cause, Hypothesis, Lever, Status, family_size, plan, to_test
from sentinel_exp.doctor.state import DoctorState, open_state
from sentinel_exp.doctor.text import Report, answer, console_lines, markdown
from sentinel_exp.doctor.verdicts import (
    Measured,
    Outcome,
    judge,
    not_run,
    planned,
    point,
    prefill_rate,
    settles,
    with_ladder,
)
from sentinel_exp.errors import Interrupted, UserError
from sentinel_exp.names import Role, RunStatus, ServerKind
from sentinel_exp.records import RequestRecord
from sentinel_exp.report import console as ui
from sentinel_exp.run.conclusion import input_digests, llama_threads
from sentinel_exp.run.context import RunContext
from sentinel_exp.run.experiment import run, upload
from sentinel_exp.run.rounds import StudyArm, StudyPlan, leave_error, run_study
from sentinel_exp.store.run_folder import RunFolder, RunJournal, RunSummary, new_sweep_file, read_run_file
from sentinel_exp.store.tracking import config_hash, flatten, param_value
from sentinel_exp.store.upload import records_in
from sentinel_exp.sweep.study import load_run, study_alpha
from sentinel_exp.urls import is_loopback_url

log = logging.getLogger(__name__)

# The configuration diagnosed, with the candidates' overrides on top, as the CLI composes it.
Compose = Callable[[Sequence[str]], ExperimentConfig]
GIVEN = "as given"
BASELINE = "baseline"
# A study's estimate: each request as long as the baseline's, this much more for warmups and
# switches, and a few seconds per arm (its server's start, its conclusion and upload).
MARGIN = 1.3
ARM_OVERHEAD_S = 5.0
# Kept back from the budget for the end: the report, its figures, the parent run's upload.
FINISH_S = 10.0
# A study may add rounds until decided, up to this many times its planned rounds' time: a larger
# budget would leave its first looks almost no alpha (sweep/sequential.py spends by the fraction
# used; at a sixteenth of the budget, its Pocock-like function has released a tenth of the alpha).
EXTENSION = 16.0


@dataclass(frozen=True)
class Doctor:
    """What the doctor is asked: the configuration as given and where to write."""

    cfg: ExperimentConfig
    folder: Path
    given: tuple[str, ...]  # the command line's overrides, without the doctor's own
    choices: Mapping[str, str]
    compose: Compose
    started_s: float = 0.0  # machine time the command took before the doctor began (its start-up)


@dataclass(frozen=True)
class Baseline:
    folder: Path
    records: list[RequestRecord]
    metrics: dict[str, float]
    lines: list[str]  # its verdict and warnings
    tags: dict[str, str]

    @property
    def seconds_per_request(self) -> float:
        """Machine time per measured request, pauses included, or one request's E2E if longer."""
        measured = sum(1 for r in self.records if r.measured) or 1
        wall = self.metrics.get("measured_duration_s", 0.0) / measured
        return max(wall, self.metrics.get("e2e_ms_p50", 0.0) / 1000.0, 0.001)


def read_baseline(folder: Path) -> Baseline:
    summary = RunSummary.read(folder)
    if summary is None:
        raise UserError(f"the baseline run in {folder} left no readable {RunFolder.SUMMARY}")
    lines = [*(summary.verdict or []), *(summary.warnings or [])]
    tags = read_run_file(folder).tags
    return Baseline(folder, records_in(folder), dict(summary.metrics), lines, tags)


def facts_of(cfg: ExperimentConfig, baseline: Baseline) -> Facts:
    """The facts of the baseline's configuration and machine, as the hypotheses need them."""
    tags = baseline.tags
    kind = tags.get(tag.SERVER_KIND, str(cfg.server.kind))
    local = is_loopback_url(tags.get(tag.SERVER_URL, ""))
    options = cfg.effective_options()
    w = cfg.workload
    slots = {ServerKind.simulated: cfg.server.sim.parallel, ServerKind.embedded: 1}.get(ServerKind(kind))
    gpus = tags.get(tag.GPU_COUNT, "")
    return Facts(
        server_kind=kind,
        local=local,
        options=options,
        keep_alive_s=keep_alive_in_force(w.keep_alive, cfg.server.keep_alive),
        idle_gap_s=w.longest_idle_gap_s(),
        concurrency=w.concurrency,
        rate=w.rate,
        requests=w.requests,
        input_tokens=w.input_tokens,
        slots=slots,
        physical_cores=psutil.cpu_count(logical=False) if local else None,
        logical_cpus=psutil.cpu_count() if local else None,
        gpu_count=int(gpus) if local and gpus.isdigit() else None,
        expect_gpu=cfg.hardware.expect_gpu,
        lint={k.removeprefix(tag.lint("")): v for k, v in tags.items() if k.startswith(tag.lint(""))},
        threads=llama_threads(ServerKind(kind), options) if local else None,
        contended=tags.get(tag.CONTENDED) == "true",
    )


def open_parent(doctor: Doctor, state: DoctorState) -> RunJournal:
    """The doctor's parent run: its run.json in the doctor's folder; the runs of the baseline and
    of every study are its children, and their first upload uploads it (store/upload.py)."""
    cfg = doctor.cfg
    tags = {
        tag.ROLE: Role.SWEEP,
        tag.DOCTOR: "true",
        tag.DOCTOR_OF: state.identity,
        tag.SWEEP_ID: state.uid,
        tag.SWEEP_OVERRIDES: " ".join(doctor.given),
        tag.OUTPUT_DIR: str(doctor.folder.resolve()),
        **({tag.DOCTOR_RESUMED_FROM: state.resumed_from} if state.resumed_from else {}),
    }
    name = f"diagnose: {' '.join(doctor.given) or cfg.model.name}"[:250]
    uri = cfg.tracking.uri if cfg.tracking.enabled else None
    run_file = new_sweep_file(name, cfg.tracking.experiment, uri, tags, state.uid)
    # Unlike a sweep's parent, the doctor's diagnoses one configuration: its params are that one's.
    run_file.params = {k: param_value(v) for k, v in flatten(cfg.as_dict()).items()}
    return RunJournal(doctor.folder, run_file)


def with_name(cfg: ExperimentConfig, name: str) -> ExperimentConfig:
    return dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, run_name=name[:250]))


@dataclass
class Session:
    """One doctor as it goes: what is measured so far, and the machine time it took."""

    doctor: Doctor
    state: DoctorState
    journal: RunJournal
    bar: ui.PlanProgress
    started: float = field(default_factory=time.monotonic)
    spent_before: float = 0.0
    baseline: Baseline | None = None
    evidence: Evidence | None = None
    hypotheses: list[Hypothesis] = field(default_factory=list)
    outcomes: dict[Cause, Outcome] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    alpha: float = ALPHA

    @property
    def cfg(self) -> ExperimentConfig:
        return self.doctor.cfg

    def spent(self) -> float:
        return self.spent_before + time.monotonic() - self.started

    def done(self) -> None:
        """A step finished: its folder and time are kept, for a rerun to resume from."""
        self.state.spent_s = self.spent()
        self.state.save()

    def measure(self) -> None:
        """The baseline, the hypotheses from its evidence, then each study, the likeliest first."""
        self.baseline = self._baseline()
        self.evidence = gather(self.baseline.records, self.baseline.metrics, facts_of(self.cfg, self.baseline))
        self.hypotheses = plan(self.evidence, self.cfg.diagnose)
        for h in self.hypotheses:
            if h.status != Status.TEST:
                self.outcomes[h.cause] = planned(h)
        tests = to_test(self.hypotheses)
        self.alpha = ALPHA / family_size(self.hypotheses)
        warmup = self.cfg.workload.warmup
        more = sum((len(h.study.candidates) + 1) * (h.study.requests + warmup) for h in tests if h.study)
        self.bar.step("studies", more)
        for i, h in enumerate(tests):
            self.outcomes[h.cause] = self._study(h, tests[i + 1 :])
        self.state.finished = True
        self.done()

    def _baseline(self) -> Baseline:
        if self.state.baseline is not None:
            ui.stdout.print(escape(f"baseline: reused from {self.state.baseline}"), soft_wrap=True)
            return read_baseline(Path(self.state.baseline))
        self.bar.step(BASELINE)
        folder = self.state.fresh_folder(BASELINE)
        ctx = RunContext(
            output_dir=folder,
            choices=dict(self.doctor.choices),
            overrides=list(self.doctor.given),
            sweep_id=self.state.uid,
        )
        run(with_name(self.cfg, f"doctor baseline: {GIVEN}"), ctx)
        self.state.baseline = str(folder)
        self.done()
        return read_baseline(folder)

    def estimate(self, h: Hypothesis) -> tuple[float, float]:
        """Machine time a study would take (its planned rounds), and the part of it in rounds."""
        assert h.study is not None and self.baseline is not None
        arms = len(h.study.candidates) + 1
        per_request = self.baseline.seconds_per_request
        rounds = arms * h.study.requests * per_request
        warmups = arms * self.cfg.workload.warmup * per_request
        return MARGIN * (rounds + warmups) + arms * ARM_OVERHEAD_S, rounds

    def _study(self, h: Hypothesis, later: Sequence[Hypothesis]) -> Outcome:
        assert h.study is not None
        if h.cause in self.state.studies:
            ui.stdout.print(escape(f"{h.title}: reused from {self.state.studies[h.cause]}"), soft_wrap=True)
            return self.outcome(h, Path(self.state.studies[h.cause]))
        needed, _ = self.estimate(h)
        left = self.cfg.diagnose.budget_s - FINISH_S - self.spent()
        if needed > left:
            budget = f"{max(0.0, left):,.0f} s of diagnose.budget_s={self.cfg.diagnose.budget_s:g}"
            return not_run(h, f"out of budget: it needs about {needed:,.0f} s, {budget} left")
        rounds_s = rounds_budget(self.estimate(h), [self.estimate(j) for j in later], left)
        compare_cfg = dataclasses.replace(self.cfg.compare, budget_s=rounds_s)
        folder = self.state.fresh_folder(str(h.cause))
        arms = self._arms(h, folder)
        self.bar.step(f"study: {h.cause}")
        settled = settles(self.cfg.diagnose.min_gain_pct)
        study = StudyPlan(folder, compare_cfg, h.study.objective, progress=True, alpha=self.alpha, settles=settled)
        run_study(arms, study)
        for arm in arms:
            if arm.cfg.tracking.enabled and _measured(arm.ctx.output_dir):
                upload(arm.cfg, arm.ctx)
        self.state.studies[h.cause] = str(folder)
        self.done()
        return self.outcome(h, folder)

    def _arms(self, h: Hypothesis, folder: Path) -> list[StudyArm]:
        """The configuration as given and each candidate, as the arms of one study."""
        assert h.study is not None
        study_id = uuid.uuid4().hex
        arms = []
        for num, (label, extra) in enumerate(_arm_overrides(h)):
            overrides = (f"workload.requests={h.study.requests}", *extra)
            ctx = RunContext(
                output_dir=folder / str(num),
                choices=dict(self.doctor.choices),
                overrides=[*self.doctor.given, *overrides],
                sweep_id=self.state.uid,
                study_id=study_id,
            )
            try:
                cfg = with_name(self.doctor.compose(overrides), f"doctor {h.cause}: {label}")
            except UserError as exc:
                leave_error(ctx, num, overrides, str(exc))
                continue
            arms.append(StudyArm(cfg, ctx, num, overrides))
        return arms

    def outcome(self, h: Hypothesis, folder: Path) -> Outcome:
        """What a study's arms showed: each candidate compared, the hypothesis judged, its ladder."""
        assert h.study is not None
        runs, errors = _read_arms(folder, [label for label, _ in _arm_overrides(h)])
        if GIVEN not in runs:
            return dataclasses.replace(not_run(h, "the configuration as given measured nothing"), folder=str(folder))
        alpha = study_alpha(folder)
        measured = [Measured(c, self._compare(h, c, runs, alpha)) for c in h.study.candidates if c.label in runs]
        outcome = judge(h, measured, self.cfg.diagnose.min_gain_pct)
        note = "; ".join(filter(None, [*errors, outcome.note]))
        outcome = dataclasses.replace(outcome, folder=str(folder), note=note)
        if h.study.axis is not None:
            outcome = self._ladder(h, outcome, runs)
        return outcome

    def _compare(self, h: Hypothesis, c: Candidate, runs: Mapping[str, RunResult], alpha: float) -> Comparison:
        """A candidate against the configuration as given; the cold run against the warm fix."""
        assert h.study is not None and self.baseline is not None
        against, objective = GIVEN, h.study.objective
        if c.lever == Lever.PROBE:
            fix = next((x.label for x in h.study.candidates if x.lever == Lever.FIX and x.label in runs), GIVEN)
            against, objective = fix, "ttft_ms_p50"
        return compare(
            Arm(against, [runs[against]]),
            Arm(c.label, [runs[c.label]]),
            objective=objective,
            min_effect_pct=self.cfg.compare.min_effect_pct,
            alpha=alpha,
            per_token=not h.study.whole_answers,
        )

    def _ladder(self, h: Hypothesis, outcome: Outcome, runs: Mapping[str, RunResult]) -> Outcome:
        """The ladder's points (the objective's p50 at each rung), its plot, and for prompt length
        the prefill rate."""
        assert h.study is not None and h.study.axis is not None
        values = {GIVEN: h.study.given_value, **{c.label: c.value for c in h.study.candidates}}
        points = []
        for label, result in runs.items():
            x = _mean_prompt(result.records) if h.study.axis == "prompt tokens" else values.get(label)
            found = point(result.records, h.study.objective, x, label) if x is not None else None
            if found is not None:
                points.append(found)
        rate = prefill_rate({k: v.records for k, v in runs.items()}) if h.cause == Cause.PREFILL else None
        outcome = with_ladder(outcome, points, rate)
        self._plot(h, outcome)
        return outcome

    def _plot(self, h: Hypothesis, outcome: Outcome) -> None:
        if not self.cfg.plots or len(outcome.ladder) < 2 or h.study is None or h.study.axis is None:
            return
        from sentinel_exp.report import plots

        try:
            figure = plots.ladder(
                [plots.LadderPoint(p.x, p.y, p.low, p.high, p.label == GIVEN) for p in outcome.ladder],
                h.study.axis,
                f"{h.study.objective.split('_ms_')[0].upper()} p50 (ms), 95% CI",
                f"{h.title}: {h.study.axis}",
            )
            path = RunFolder(Path(self.state.folder)).doctor_ladder(str(h.cause))
            plots.save_png(figure, path)
            self.plots[str(h.cause)] = path.name
        except Exception as exc:  # the pictures only
            log.warning("warning: could not draw the %s ladder: %s: %s", h.cause, type(exc).__name__, exc)

    def outcomes_in_order(self, why_not: str) -> list[Outcome]:
        return [self.outcomes.get(h.cause) or not_run(h, why_not) for h in self.hypotheses]


def rounds_budget(study: tuple[float, float], later: Sequence[tuple[float, float]], left: float) -> float:
    """Seconds of rounds a study may take until decided, from the (whole, in rounds) estimates of
    it and of the studies after it: its planned rounds, and a share of what `left` holds beyond
    every remaining study's planned time, in proportion to its planned rounds (a study that
    decides early leaves its share to the later ones; the last takes what is left), at most
    EXTENSION times its planned rounds."""
    needed, in_rounds = study
    spare = max(0.0, left - needed - sum(n for n, _ in later))
    share = spare * in_rounds / (in_rounds + sum(r for _, r in later))
    return round(min(EXTENSION * in_rounds, in_rounds + share), 1)


def _arm_overrides(h: Hypothesis) -> list[tuple[str, tuple[str, ...]]]:
    assert h.study is not None
    return [(GIVEN, ()), *((c.label, c.overrides) for c in h.study.candidates)]


def _measured(folder: Path) -> bool:
    try:
        return "status" in json.loads(RunFolder(folder).study_arm.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _read_arms(folder: Path, labels: Sequence[str]) -> tuple[dict[str, RunResult], list[str]]:
    """Each arm's run (by label) as the study left it, and the errors of those that did not run."""
    runs: dict[str, RunResult] = {}
    errors = []
    for num, label in enumerate(labels):
        arm = folder / str(num)
        try:
            marker: dict[str, Any] = json.loads(RunFolder(arm).study_arm.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if marker.get("error"):
            errors.append(f"{label}: {marker['error']}")
            continue
        result = load_run(arm, dict(marker.get("metrics") or {}))
        if result is not None:
            runs[label] = result
    return runs, errors


def _mean_prompt(records: Sequence[RequestRecord]) -> float | None:
    counts = [r.prompt_eval_count for r in records if r.measured and r.ok and r.prompt_eval_count is not None]
    return sum(counts) / len(counts) if counts else None


def diagnose(doctor: Doctor) -> Report | None:
    """The whole doctor: the plan measured, the report written and the parent run closed, also
    when a signal or an error stopped it (then raised again, after the report)."""
    identity = config_hash(doctor.cfg.as_dict(), input_digests(doctor.cfg))
    doctor.folder.mkdir(parents=True, exist_ok=True)
    state = open_state(doctor.folder, doctor.cfg, identity)
    state.save()
    journal = open_parent(doctor, state)
    planned_requests = doctor.cfg.workload.warmup + doctor.cfg.workload.requests
    with ui.PlanProgress(ui.want_progress(doctor.cfg.progress), planned_requests) as bar:
        session = Session(doctor, state, journal, bar, spent_before=state.spent_s + doctor.started_s)
        try:
            session.measure()
        except (Interrupted, KeyboardInterrupt) as exc:
            stopped = exc if isinstance(exc, Interrupted) else Interrupted("SIGINT", 130)
            conclude(session, RunStatus.KILLED, "stopped by a signal")
            raise stopped from None
        except UserError as exc:
            conclude(session, RunStatus.FAILED, f"stopped by an error: {exc}")
            raise
    return conclude(session, RunStatus.FINISHED, "")


def conclude(session: Session, status: RunStatus, why_not: str) -> Report | None:
    """report.md (and its figures) in the doctor's folder, the answer and the hypotheses on the
    console, and the parent run ended and uploaded with them."""
    folder = Path(session.state.folder)
    if session.evidence is None or session.baseline is None:
        session.journal.set_tags({tag.VERDICT: f"no diagnosis: the baseline did not finish ({why_not})"})
        # A baseline that measured anything was uploaded, and its parent with it: that one is ended too.
        _close_parent(session, status, [], uploaded=any(folder.rglob(RunFolder.RECORDS)))
        return None
    report = Report(
        title=" ".join(session.doctor.given) or session.cfg.model.name,
        evidence=session.evidence,
        outcomes=tuple(session.outcomes_in_order(why_not or "not reached")),
        given=session.doctor.given,
        baseline_lines=tuple(session.baseline.lines),
        baseline_folder=str(session.baseline.folder),
        seconds=session.spent(),
        budget_s=session.cfg.diagnose.budget_s,
        alpha=session.alpha,
        finished=status == RunStatus.FINISHED,
        plots=dict(session.plots),
        resumed_from=session.state.resumed_from,
    )
    paths = _write(folder, session, report)
    lines = console_lines(report)
    ui.stdout.print(f"[bold]{escape(lines[0])}[/]", soft_wrap=True)
    for line in lines[1:]:
        ui.stdout.print(escape(line), soft_wrap=True)
    ui.stdout.print(escape(f"report: {RunFolder(folder).report}"), soft_wrap=True)
    first = answer(report.evidence, report.outcomes)[:5000]
    # The answer is the parent's verdict, and its description where MLflow's UI shows one.
    session.journal.set_tags({tag.VERDICT: first, tag.NOTE: first})
    _close_parent(session, status, paths, uploaded=True)
    return report


def _write(folder: Path, session: Session, report: Report) -> list[Path]:
    """report.md, summary.json (the parent's metrics) and config.yaml of the doctor's folder."""
    confirmed = sum(1 for o in report.outcomes if o.status == Status.CONFIRMED)
    metrics = {"doctor_confirmed": float(confirmed), "doctor_seconds": report.seconds}
    metrics |= {f"baseline_{k}": v for k, v in report.evidence.metrics.items() if k in ("ttft_ms_p50", "e2e_ms_p50")}
    files = RunFolder(folder)
    RunSummary(metrics=metrics).write(folder)
    files.config.write_text(to_yaml(session.cfg.as_dict()), encoding="utf-8")
    files.report.write_text(markdown(report), encoding="utf-8")
    return [files.report, *(folder / name for name in session.plots.values()), files.doctor]


def _close_parent(session: Session, status: RunStatus, paths: list[Path], uploaded: bool) -> None:
    from sentinel_exp.store.upload import upload_now

    journal = session.journal
    journal.add_artifacts(paths)
    journal.end(status)
    if journal.run.tracking_uri is None or not uploaded:
        return
    try:
        _, line = upload_now(journal.folder)
    except Exception as exc:  # the store is away: the folder holds everything
        ui.stderr.print(
            f"warning: could not log the doctor's parent run: {exc}; python -m sentinel_exp.sync {journal.folder}",
            markup=False,
            soft_wrap=True,
        )
        return
    ui.stdout.print(escape(f"doctor: {line}"), soft_wrap=True)
