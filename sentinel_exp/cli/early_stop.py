"""Ctrl-C while the command is still starting (imports, Hydra composing the config, before the run
has anything to keep): the process ends at once with one line and exit status 130, and the run
folder Hydra may have made is removed. Standard library only: installed before anything else is
imported (what it needs to stop, it imports then).

A KeyboardInterrupt would do the same less well here: raised inside an import it prints a
traceback of whichever module it cut, and where it lands inside an `exec` (dataclasses build their
methods with one) or a `__set_name__`, CPython reports the exit as killed by SIGINT, or wraps it
in a RuntimeError, whatever the handler does.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from types import FrameType

# The single run's folder once Hydra has chosen it (cli/app.py OutputFolderCheck).
RUN_FOLDERS: list[Path] = []


def unstarted(folder: Path) -> bool:
    """Whether a run folder holds no request record: nothing in it a user would look for. The
    doctor's (sweep=diagnose) runs are in folders below its own, so those count too."""
    from sentinel_exp.store.run_folder import RunFolder  # only once stopping: start-up stays light

    return not any(records.stat().st_size > 0 for records in folder.rglob(RunFolder.RECORDS))


def drop_unstarted_runs() -> None:
    for folder in RUN_FOLDERS:
        if unstarted(folder):
            shutil.rmtree(folder, ignore_errors=True)


def _stop(signum: int, frame: FrameType | None) -> None:
    drop_unstarted_runs()
    os.write(2, b"interrupted\n")
    os._exit(128 + signal.SIGINT)


def install() -> None:
    """Until `release`, Ctrl-C ends the process at once (unless SIGINT is ignored, as in a
    background job: then it stays ignored)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop)


def release() -> None:
    """From here the run handles Ctrl-C itself: KeyboardInterrupt while the server starts, then the
    run's own handler, which ends it as KILLED with what it measured."""
    if signal.getsignal(signal.SIGINT) is _stop:
        signal.signal(signal.SIGINT, signal.default_int_handler)
