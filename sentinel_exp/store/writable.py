"""Whether a run can write where it is told to, found out in milliseconds and before anything is
made: the output folder, and a sqlite MLflow store (whose own failure on a read-only file comes
only after about 100 s of SQLAlchemy retries)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path


def folder_problem(path: Path) -> str | None:
    """Why files cannot be written in `path` (or in what would become it); None when they can.
    Nothing is left behind: the probe file is removed, and a missing `path` is not made."""
    ancestor = path.expanduser().absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder"
    try:
        # A byte written and synced: an empty file can still be made on a full disk.
        with tempfile.TemporaryFile(dir=ancestor) as probe:
            probe.write(b"x")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return f"cannot write in {ancestor}: {exc.strerror or exc}"
    return None


def sqlite_problem(database: Path) -> str | None:
    """Why a sqlite database cannot be written; None when it can (or does not exist yet and can
    be made)."""
    if not database.exists():
        return folder_problem(database.parent)
    if database.is_dir():
        return f"{database} is a folder, not a sqlite database"
    try:
        connection = sqlite3.connect(f"file:{database}?mode=rw", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        return f"cannot open the sqlite database {database}: {exc}"
    try:
        connection.execute("BEGIN IMMEDIATE")  # takes the write lock: fails at once when read-only
        connection.rollback()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return None  # another run is writing to it right now: it is writable
        return f"cannot write the sqlite database {database}: {exc}"
    except sqlite3.Error as exc:
        return f"cannot write the sqlite database {database}: {exc}"
    finally:
        connection.close()
    return folder_problem(database.parent)  # sqlite writes its journal beside the database
