"""Building request paths from caller-supplied values."""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["segment"]


def segment(value: str, *, what: str = "id") -> str:
    """``value`` as one percent-encoded path segment.

    Empty, ``.`` and ``..`` are refused: URL normalization would turn them into another path, so a
    call meant for one resource would reach a different endpoint.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    if value in ("", ".", ".."):
        raise ValueError(f"{what} {value!r} is not a valid path segment")
    return quote(value, safe="")
