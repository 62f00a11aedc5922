"""Errors that are the user's to fix: printed as one clear message, exit status 2, no traceback."""


class UserError(Exception):
    exit_code = 2


class ConfigError(UserError):
    pass


class ServerError(UserError):
    pass


class Interrupted(Exception):
    """The run was stopped by SIGINT/SIGTERM after logging what finished."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name
        self.exit_code = exit_code
