"""Per-call options, and the sentinel that tells "not given" apart from ``None``."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from .errors import ConfigurationError
from .retry import RetryMode, RetryPolicy

__all__ = ["NOT_GIVEN", "NotGiven", "RequestOptions"]


class NotGiven(enum.Enum):
    """The type of :data:`NOT_GIVEN`."""

    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __bool__(self) -> Literal[False]:
        return False


NOT_GIVEN: Final = NotGiven.NOT_GIVEN
"""Marks an argument the caller did not pass, where ``None`` is a meaningful value."""

TimeoutArg = float | None | NotGiven


@dataclass(frozen=True)
class RequestOptions:
    """How every call made through one client object behaves.

    ``timeout`` bounds each attempt's connect, read, write and pool waits; ``deadline`` bounds the
    whole call, every attempt and backoff sleep included (``None``: no overall bound). A stream
    is not cut at its deadline, but it is not reconnected past it.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = 30.0
    deadline: float | None = None

    def merged(
        self,
        *,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
        retry_mode: RetryMode | str | NotGiven = NOT_GIVEN,
        timeout: TimeoutArg = NOT_GIVEN,
        deadline: TimeoutArg = NOT_GIVEN,
    ) -> RequestOptions:
        """A copy with the given fields replaced (``retry_mode`` applies after ``retry``)."""
        out = self
        if not isinstance(retry, NotGiven):
            out = replace(out, retry=retry)
        if not isinstance(retry_mode, NotGiven):
            out = replace(out, retry=replace(out.retry, mode=RetryMode.coerce(retry_mode)))
        if not isinstance(timeout, NotGiven):
            out = replace(out, timeout=_positive("timeout", timeout))
        if not isinstance(deadline, NotGiven):
            out = replace(out, deadline=_positive("deadline", deadline))
        return out


def _positive(name: str, value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ConfigurationError(
            f"{name} must be a positive number of seconds or None, not {value!r}"
        )
    return value
