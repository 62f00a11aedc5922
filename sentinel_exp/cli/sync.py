"""`python -m sentinel_exp.sync <run folder | sweep folder | folder of runs> ...`: upload run folders
to MLflow, as complete runs with their original start and end times.

For runs the tracking store did not take (it was down, or went away mid-run), and for runs whose
process was killed (their folder is closed as FAILED with the records it holds). Syncing twice
writes nothing twice: a run already complete in the store is left as it is.

Exit status: 0 every folder is in the store; 4 the store did not take some (try again later);
2 a folder could not be synced as it is (still running, not a run folder).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from rich.progress import track
from rich.table import Table

from sentinel_exp.errors import NotLogged, StoreUnavailable, UserError
from sentinel_exp.names import Role
from sentinel_exp.report import console as ui
from sentinel_exp.store.run_folder import RunFolder, is_run_folder, read_run_file
from sentinel_exp.store.upload import Uploader
from sentinel_exp.urls import credentials_problem, tracking_uri_problem


@dataclass
class Synced:
    folder: Path
    status: str  # the run's status, or "?" when its run.json could not be read
    result: str  # what happened: the MLflow run, "already logged", or why not
    outcome: int  # 0 in the store, NotLogged.exit_code the store did not take it, 2 refused


def folders_to_sync(paths: Sequence[Path]) -> list[Path]:
    """Every run folder named or below the paths named, each once, sweeps' parents before their jobs."""
    found: dict[Path, None] = {}
    for path in paths:
        if not path.is_dir():
            raise UserError(f"{path} is not a folder")
        below = sorted(p.parent.resolve() for p in path.rglob(RunFolder.RUN_JSON))
        if not below:
            raise UserError(f"{path} holds no run folder (no {RunFolder.RUN_JSON} in it or below it)")
        for folder in below:
            found.setdefault(folder)
    # A parent above its jobs: shorter paths first within each tree.
    return sorted(found, key=lambda folder: (len(folder.parts), str(folder)))


def sync(folders: Sequence[Path], uri: str | None, close_running: bool, progress: bool) -> list[Synced]:
    uploader = Uploader(uri, runner_unknown_ok=close_running)
    steps = track(folders, description="syncing", console=ui.stderr, disable=not progress, transient=True)
    results = [_sync_one(uploader, folder) for folder in steps]
    for closed in uploader.closed_orphans:
        ui.stderr.print(
            "[yellow]warning:[/] " + escape(f"closed run {closed}"),
            soft_wrap=True,
        )
    return results


def _sync_one(uploader: Uploader, folder: Path) -> Synced:
    try:
        uploaded = uploader.upload(folder)
    except StoreUnavailable as exc:  # the server is down: the same sync works once it is back
        return Synced(folder, _status(folder), f"not logged: {exc}", NotLogged.exit_code)
    except UserError as exc:
        return Synced(folder, _status(folder), f"not synced: {exc}", UserError.exit_code)
    except Exception as exc:  # the store is down or refuses: try again later
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Synced(folder, _status(folder), f"not logged: {reason}", NotLogged.exit_code)
    done = "already logged" if uploaded.already else "uploaded"
    return Synced(folder, uploaded.status, f"{done}: MLflow run {uploaded.run_id}", 0)


def _status(folder: Path) -> str:
    try:
        return str(read_run_file(folder).status)
    except UserError:
        return "?"


def results_table(results: Sequence[Synced]) -> Table:
    table = Table(title="sync", title_justify="left")
    table.add_column("run folder", overflow="fold")
    table.add_column("status")
    table.add_column("result", overflow="fold")
    for result in results:
        role = " (sweep)" if is_run_folder(result.folder) and _role(result.folder) == Role.SWEEP else ""
        table.add_row(escape(str(result.folder) + role), result.status, escape(result.result))
    return table


def _role(folder: Path) -> Role:
    try:
        return read_run_file(folder).role
    except UserError:
        return Role.RUN


def exit_status(results: Sequence[Synced]) -> int:
    outcomes = {result.outcome for result in results}
    if NotLogged.exit_code in outcomes:
        return NotLogged.exit_code
    return UserError.exit_code if UserError.exit_code in outcomes else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sentinel_exp.sync",
        description="Upload run folders to MLflow (runs the store did not take, runs whose process was killed).",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders, or folders holding them")
    parser.add_argument("--tracking-uri", help="upload here instead of each run's own tracking.uri")
    parser.add_argument(
        "--close-running",
        action="store_true",
        help="close runs left RUNNING on another host (whose process cannot be checked from here) as FAILED",
    )
    args = parser.parse_args(argv)
    try:
        if args.tracking_uri and (
            problem := credentials_problem(args.tracking_uri, "--tracking-uri")
            or tracking_uri_problem(args.tracking_uri, "--tracking-uri")
        ):
            raise UserError(problem)
        folders = folders_to_sync(args.paths)
        results = sync(folders, args.tracking_uri, args.close_running, ui.want_progress(None))
    except UserError as exc:
        ui.stderr.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return UserError.exit_code
    ui.print_table(results_table(results))
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
