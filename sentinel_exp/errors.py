"""Errors that are the user's to fix: printed as one clear message, exit status 2, no traceback."""


class UserError(Exception):
    exit_code = 2


class ConfigError(UserError):
    pass


class ServerError(UserError):
    pass


class StoreUnavailable(UserError):
    """A tracking server that does not answer: nothing the user wrote is wrong, and the same
    command works once the server is back (`sync` exits 4, try again later)."""


class FolderUnwritable(UserError):
    """The run folder stopped taking writes mid-run (a full disk, a file system gone read-only):
    the run stops at once, FAILED; exit status 2, as for a folder found unwritable before it."""


class RunFailed(UserError):
    """The run measured, but nothing usable: every measured request failed, the error rate went
    over workload.max_error_rate, or the server stopped answering. Ends FAILED, exit status 3."""

    exit_code = 3


class Interrupted(Exception):
    """The run was stopped by SIGINT/SIGTERM after logging what finished."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name
        self.exit_code = exit_code


class NotLogged(Exception):
    """The run measured and its folder holds everything, but the MLflow store could not take it:
    exit status 4, and `python -m sentinel_exp.sync <folder>` uploads it later."""

    exit_code = 4
