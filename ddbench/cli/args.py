"""Argument parsing shared by the subcommands: devices, profiles and lists, each failing in one line.

argparse reports a malformed value with a usage block; these parsers raise :class:`~ddbench.errors.UserError`
instead, which the CLI prints as one red line with exit status 2, like every other mistake a user can fix.
"""

from __future__ import annotations

from ddbench.errors import UserError


def csv(text: str | None) -> list[str] | None:
    """``"a, b,,c"`` → ``["a", "b", "c"]``; None or empty → None."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def int_list(text: str | None, flag: str) -> list[int] | None:
    """Comma-separated integers (``--seeds 0,1,2``), or None when not given."""
    items = csv(text)
    if items is None:
        return None
    try:
        return [int(i) for i in items]
    except ValueError:
        bad = next(i for i in items if not i.lstrip("-").isdigit())
        raise UserError(f"{flag} takes comma-separated integers (e.g. {flag} 0,1,2), got {bad!r}") from None


def device(arg: str | None) -> str:
    """``--device``: cpu, cuda, cuda:N, mps (default: cuda if available); an unusable device is a one-line error."""
    import torch

    if not arg:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(arg)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {arg!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {arg}: no CUDA device is available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {arg}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {arg}: MPS is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {arg!r}: ddbench runs on cpu, cuda or mps")
    return arg


def profile(preset: str, dev: str) -> str:
    """``--preset auto`` → ``paper`` on CUDA, ``cpu`` elsewhere; other values are checked by the pipeline."""
    import torch

    from ddbench.pipeline import default_profile

    return default_profile(torch.device(dev)) if preset == "auto" else preset


def positive(value: int, flag: str) -> int:
    if value < 1:
        raise UserError(f"{flag} must be a positive integer, got {value}")
    return value


def writable_home() -> None:
    """Commands that write artifacts say in one line, before any work, when ``$DDBENCH_HOME`` is read-only."""
    from ddbench.io import home, writable

    where = home()
    if not writable(where):
        raise UserError(
            f"DDBENCH_HOME {where} is not writable and this command writes artifacts; point DDBENCH_HOME at a "
            "writable folder (read-only commands such as `ddbench table` work as they are)"
        )
