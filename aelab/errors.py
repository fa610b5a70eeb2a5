"""User-facing errors: one line naming the key, what is wrong and what is allowed."""

from __future__ import annotations

import os
import sys


class UserError(Exception):
    """A mistake the user can fix from the command line; never shown as a traceback."""

    def __init__(self, key: str, problem: str, allowed: str | None = None) -> None:
        self.key, self.problem, self.allowed = key, problem, allowed
        super().__init__(self.line())

    def line(self) -> str:
        tail = f" ({self.allowed})" if self.allowed else ""
        return f"error: {self.key}: {self.problem}{tail}"


EXIT_USER_ERROR = 2


def full_errors_requested() -> bool:
    """HYDRA_FULL_ERROR=1 or AELAB_DEBUG=1 ask for the traceback instead of one line."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HYDRA_FULL_ERROR", "AELAB_DEBUG"))


def exit_with(error: UserError) -> None:
    """Print the one-line message to stderr and exit with status 2."""
    print(error.line(), file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
