"""A wrapper that keeps credentials out of reprs, logs and tracebacks."""

from __future__ import annotations

import logging

__all__ = ["Secret", "keep_credentials_out_of_hpack_logs"]


class Secret:
    """A string that never shows itself: ``repr`` and ``str`` print ``'***'``.

    Call :meth:`reveal` where the plaintext is really needed (the Authorization header).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The plaintext."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("secrets are not pickled")


class _DropHeaderDumps(logging.Filter):
    """Drops hpack's DEBUG records: they print header fields, values and all.

    HPACK (under h2, under grpclib) logs every header it encodes, decodes or evicts, with its
    value, at DEBUG. grpclib turns off h2's header normalization, which would have marked
    ``authorization`` never-indexed (hpack redacts those), so a bearer token or Basic
    credentials would show in any log configured at DEBUG for every logger (``basicConfig``).
    Nothing else of hpack's is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_HPACK_FILTER = _DropHeaderDumps()


def keep_credentials_out_of_hpack_logs() -> None:
    """Install :class:`_DropHeaderDumps` on hpack's loggers (once; idempotent)."""
    for name in ("hpack.hpack", "hpack.table"):
        logger = logging.getLogger(name)
        if _HPACK_FILTER not in logger.filters:
            logger.addFilter(_HPACK_FILTER)
