"""`python -m sentinel_exp.compare`: which change helps? Runs compared with a baseline, per metric,
with a bootstrap CI of each change and a verdict (the statistics are in comparison.py).

    python -m sentinel_exp.compare multirun/2026-12-02/13-46-26-976002     a sweep's folder
    python -m sentinel_exp.compare --sweep PARENT_RUN_ID                   a sweep's MLflow run
    python -m sentinel_exp.compare --experiment sentinel-exp --filter "params.model.name = 'qwen2.5:0.5b'"
    python -m sentinel_exp.compare RUN_ID RUN_ID [RUN_ID ...] --baseline RUN_ID

Runs of one configuration (the same sentinel.config_hash: repeats) are the runs of one arm.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sentinel_exp import tags as tag
from sentinel_exp.analysis.comparison import ALPHA, DEFAULT_MIN_EFFECT_PCT, Arm, Comparison, RunResult, to_markdown
from sentinel_exp.analysis.metric_names import closest, is_objective
from sentinel_exp.errors import UserError
from sentinel_exp.records import read_records
from sentinel_exp.store.run_folder import RunFolder
from sentinel_exp.sweep.study import (
    ArmSetup,
    MeasuredJob,
    arm_setups,
    arms,
    compare_arms,
    folder_setup,
    load_run,
    setup_of,
    short_keys,
    study_alpha,
    with_setup_notes,
)

DEFAULT_URI = "sqlite:///mlflow.db"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sentinel_exp.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="*", metavar="FOLDER | RUN_ID", help="a multirun folder, or MLflow run ids")
    parser.add_argument("--sweep", metavar="PARENT_RUN_ID", help="the MLflow run of a sweep: compare its jobs")
    parser.add_argument("--experiment", help="compare the runs of this MLflow experiment")
    parser.add_argument("--filter", default="", help='MLflow search filter, e.g. "metrics.error_rate = 0"')
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI),
        help=f"MLflow store (default: $MLFLOW_TRACKING_URI, else {DEFAULT_URI})",
    )
    parser.add_argument(
        "--baseline", help="a run id, or a swept value such as options=default (default: the first configuration)"
    )
    parser.add_argument("--objective", default="ttft_ms_p50", help="the decisive metric (default: ttft_ms_p50)")
    parser.add_argument(
        "--min-effect-pct",
        type=float,
        default=DEFAULT_MIN_EFFECT_PCT,
        help=f"smaller changes are never improved/worse (default {DEFAULT_MIN_EFFECT_PCT:g})",
    )
    parser.add_argument(
        "--out", type=Path, help=f"markdown file to write (default: {RunFolder.COMPARE} in a sweep folder)"
    )
    parser.add_argument("--full", action="store_true", help="print every metric's row, not only the objective's")
    return parser


def arms_from_folder(folder: Path) -> tuple[list[Arm], dict[str, ArmSetup]]:
    """The configurations of a sweep folder (multirun/<date>/<time>), as the sweep itself compared
    them, and what each was measured against."""
    from sentinel_exp.sweep.callbacks import read_outcomes, sweep_record

    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    sweep_id = sweep_record(folder)
    measured = []
    for job in read_outcomes(folder, sweep_id):
        run = None if job.folder is None or job.metrics is None else load_run(job.folder, job.metrics)
        if run is not None and job.folder is not None:
            measured.append(MeasuredJob(job.num, tuple(job.overrides), run, folder_setup(job.folder)))
    if not measured:
        raise UserError(
            f"{folder} holds no finished sweep job (no {RunFolder.SWEEP_JOB} with a {RunFolder.SUMMARY} beside it)"
        )
    return arms(measured), arm_setups(measured)


def selection_problem(args: argparse.Namespace) -> str | None:
    """What in the arguments can select nothing, found before anything is read or written: an
    objective that is no metric, a folder that is not there (which would be taken for a run id)."""
    if not is_objective(args.objective):
        meant = closest(args.objective)
        hint = f"; did you mean {meant}?" if meant else " (e.g. ttft_ms_p50, e2e_ms_p95, output_tokens_per_s)"
        return f"--objective {args.objective} is not a metric a comparison can decide on{hint}"
    folders = [arg for arg in args.runs if Path(arg).is_dir()]
    if folders and len(args.runs) > 1:
        return f"{folders[0]} is a sweep folder: compare one sweep folder alone, or MLflow run ids"
    for arg in args.runs:
        if Path(arg).is_file():
            return f"{arg} is a file: give a sweep folder (multirun/<date>/<time>) or MLflow run ids"
        if not Path(arg).exists() and ("/" in arg or os.sep in arg or arg.startswith((".", "~"))):
            return f"no folder {arg} (a sweep folder is multirun/<date>/<time>)"
    return None


def arms_from_store(args: argparse.Namespace) -> tuple[list[Arm], dict[str, int], dict[str, ArmSetup]]:
    """The runs the arguments name, grouped by configuration; also which arm holds each run id,
    and what each configuration was measured against."""
    from sentinel_exp.store.tracking import RunStore

    store = RunStore(args.tracking_uri)
    if args.sweep:
        runs = store.children(args.sweep)
    elif args.runs:
        runs = [store.get(run_id) for run_id in args.runs]
    else:
        if not args.experiment and not args.filter:
            from sentinel_exp.report import console as ui

            ui.stderr.print(
                f"nothing named: comparing every finished run of every experiment in {args.tracking_uri} "
                f"(name a sweep folder, run ids, --sweep, --experiment or --filter to choose)",
                markup=False,
                soft_wrap=True,
            )
        runs = store.search(args.experiment, args.filter)
    runs = [run for run in runs if run.status == "FINISHED"]
    if not runs:
        raise UserError("no finished run matches: nothing to compare")
    grouped: dict[str, list[RunResult]] = {}
    members: dict[str, list[str]] = {}
    params: dict[str, dict[str, str]] = {}
    setups: dict[str, ArmSetup] = {}
    with tempfile.TemporaryDirectory(prefix="sentinel-compare-") as scratch:
        for run in runs:
            path = store.records_file(run.run_id, Path(scratch) / run.run_id)
            if path is None:
                continue
            key = run.tags.get(tag.CONFIG_HASH, run.run_id)
            study = run.tags.get(tag.STUDY_ID)
            grouped.setdefault(key, []).append(RunResult(tuple(read_records(path)), run.metrics, study=study))
            members.setdefault(key, []).append(run.run_id)
            params.setdefault(key, run.params)
            setups.setdefault(key, setup_of(run.tags, run.params))
    names = _names_by_params(list(params.values()))
    configurations = [Arm(name, tuple(results)) for name, results in zip(names, grouped.values(), strict=True)]
    where = {run_id: i for i, ids in enumerate(members.values()) for run_id in ids}
    return configurations, where, dict(zip(names, setups.values(), strict=True))


def _names_by_params(configurations: Sequence[dict[str, str]]) -> list[str]:
    """Each configuration named by the params that differ between them, keys shortened."""
    keys = sorted({k for params in configurations for k in params})
    differing = [
        k
        for k in keys
        if len({params.get(k) for params in configurations}) > 1 and not k.startswith(("tracking.", "sweep."))
    ]
    label = short_keys(differing)
    names = [
        " ".join(f"{label[k]}={params.get(k, 'null')}" for k in differing) or f"run {i}"
        for i, params in enumerate(configurations)
    ]
    # Two configurations that differ only in what names leave out still need two names.
    return [name if names.count(name) == 1 else f"{name} #{i}" for i, name in enumerate(names)]


def run_comparison(args: argparse.Namespace) -> tuple[list[Comparison], Path | None]:
    folder = Path(args.runs[0]) if len(args.runs) == 1 and Path(args.runs[0]).is_dir() else None
    baseline = args.baseline
    if folder is not None:
        configurations, setups = arms_from_folder(folder)
    else:
        configurations, where, setups = arms_from_store(args)
        if baseline in where:  # a run id: its configuration, whatever it is named
            index = where[baseline]
            configurations.insert(0, configurations.pop(index))
            baseline = None
    if len(configurations) < 2:
        runs = sum(len(arm.runs) for arm in configurations)
        raise UserError(
            f"the {runs} run{'s' if runs != 1 else ''} found {'are' if runs != 1 else 'is'} all one "
            f"configuration: nothing to compare {'them' if runs != 1 else 'it'} with"
        )
    alpha = study_alpha(folder) if folder is not None else ALPHA
    comparisons = compare_arms(
        configurations, baseline=baseline, objective=args.objective, min_effect_pct=args.min_effect_pct, alpha=alpha
    )
    comparisons = with_setup_notes(comparisons, setups)
    out = args.out if args.out is not None else (RunFolder(folder).compare if folder is not None else None)
    return comparisons, out


def main(argv: Sequence[str] | None = None) -> int:
    from rich.markup import escape

    from sentinel_exp.report import console as ui

    args = build_parser().parse_args(argv)
    if args.min_effect_pct < 0:
        ui.stderr.print("[bold red]error:[/] --min-effect-pct must be 0 or more", soft_wrap=True)
        return UserError.exit_code
    try:
        if problem := selection_problem(args):
            raise UserError(problem)
        comparisons, out = run_comparison(args)
        if args.full:
            ui.print_comparisons(comparisons)
        else:
            ui.print_study(comparisons, [], str(out) if out is not None else "--full, or --out FILE")
        if out is not None:
            out.write_text(to_markdown(comparisons), encoding="utf-8")
            ui.stdout.print(escape(f"written: {out}"), soft_wrap=True)
            if args.sweep:
                from sentinel_exp.store.tracking import RunStore

                RunStore(args.tracking_uri).log_artifact(args.sweep, out)
    except UserError as exc:
        ui.stderr.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
