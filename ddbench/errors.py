"""User-facing errors: the message is one actionable line; the CLI prints it without a traceback."""

from __future__ import annotations


class UserError(RuntimeError):
    """Something the user can fix (a wrong flag, a missing file, an ambiguous run id)."""
