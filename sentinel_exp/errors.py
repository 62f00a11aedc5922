"""Errors that are the user's to fix: printed as one clear message, exit status 2, no traceback."""


class UserError(Exception):
    exit_code = 2


class ConfigError(UserError):
    pass


class ServerError(UserError):
    pass


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
