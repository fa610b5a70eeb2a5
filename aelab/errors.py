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
EXIT_WRITE_ERROR = 1


class WriteError(OSError):
    """A file aelab must write could not be written (a full disk, a read-only folder): one line naming the path
    and what was being written, exit status 1. An OSError, so a cache's `except OSError` still falls back."""

    def __init__(self, what: str, path: object, reason: str) -> None:
        self.what, self.path, self.reason = what, str(path), reason
        super().__init__(self.line())

    def line(self) -> str:
        return f"error: could not write {self.what} {self.path}: {self.reason}"


# The errors of a write the user can remedy (space, quota, permissions, a read-only mount, a file too large).
WRITE_ERRNOS = {"ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG"}


def os_reason(exc: BaseException) -> str:
    """An OSError's own words (`No space left on device`), without its errno prefix and path."""
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or first_line


def is_write_failure(exc: BaseException) -> bool:
    import errno

    return isinstance(exc, OSError) and errno.errorcode.get(exc.errno or 0, "") in WRITE_ERRNOS


def full_errors_requested() -> bool:
    """HYDRA_FULL_ERROR=1 or AELAB_DEBUG=1 ask for the traceback instead of one line."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HYDRA_FULL_ERROR", "AELAB_DEBUG"))


def exit_with(error: UserError) -> None:
    """Print the one-line message to stderr and exit with status 2."""
    print(error.line(), file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
