"""What several commands share: the storage flags and the server extra's absence."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
    """The type of ``commands`` handed to each module's ``register``."""

__all__ = [
    "fail",
    "number",
    "positive_seconds",
    "server_extra_missing",
    "storage_arguments",
]


def storage_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data DIR`` and ``--database URL``: where a server keeps (or kept) its state."""
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("aiosdk-data"),
        help="data directory, created if missing (default: ./aiosdk-data)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="SQLAlchemy async URL (default: sqlite+aiosqlite:///DATA/aiosdk.db)",
    )


def server_extra_missing(command: str, exc: ImportError) -> int:
    """Say that ``command`` needs the server extra; the exit status to return."""
    print(
        f"aiosdk {command} needs the server extra: pip install 'aiosdk[server]' ({exc})",
        file=sys.stderr,
    )
    return 2


def fail(command: str, message: object, status: int = 2) -> int:
    """Print ``aiosdk COMMAND: message`` on stderr; the exit status to return."""
    print(f"aiosdk {command}: {message}", file=sys.stderr)
    return status


def number(text: str) -> int | float:
    """An ``argparse`` type: an int, or else a float."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def positive_seconds(text: str) -> float:
    """An ``argparse`` type: a positive, finite number of seconds."""
    value: Any = number(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return float(value)
