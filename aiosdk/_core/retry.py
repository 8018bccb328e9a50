"""Retry modes: which failures are retried, how long to wait, when to give up.

The decisions are pure functions of the error, the call and the mode (no I/O), so they are tested
without a server; :mod:`aiosdk._core.transport` builds a fresh tenacity ``AsyncRetrying`` from them
for every call, because one retryer shared across tasks is not safe.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import anyio
from tenacity import AsyncRetrying, RetryCallState

from .errors import (
    AiosdkError,
    ConfigurationError,
    IdempotencyInProgressError,
    StatusError,
    TransportError,
)
from .errors import TimeoutError as SdkTimeoutError

__all__ = ["RetryBudget", "RetryMode", "RetryPolicy", "parse_retry_after"]


class RetryMode(str, enum.Enum):
    """How hard a client tries again after a failure.

    * ``DEFAULT``: up to 3 retries of idempotent calls on connection errors, timeouts, 408, 429,
      502, 503, 504 and gRPC UNAVAILABLE; a non-idempotent call only when it never reached the
      server.
    * ``FORCEFUL``: up to 10 retries of every call, POST and PATCH included (each mutating request
      carries an ``Idempotency-Key`` the server honours), and of 500 and gRPC INTERNAL/UNKNOWN too.
    * ``DISABLED``: one attempt.
    """

    DEFAULT = "default"
    FORCEFUL = "forceful"
    DISABLED = "disabled"

    @classmethod
    def coerce(cls, value: RetryMode | str) -> RetryMode:
        """Accept a member or its name in any case; anything else is a
        :class:`~aiosdk.ConfigurationError` (a ``ValueError``)."""
        try:
            return cls(value.lower() if isinstance(value, str) else value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise ConfigurationError(
                f"unknown retry mode {value!r}; use one of {allowed}"
            ) from None


_MAX_RETRIES = {RetryMode.DEFAULT: 3, RetryMode.FORCEFUL: 10, RetryMode.DISABLED: 0}
_RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})
_FORCEFUL_EXTRA_STATUS = frozenset({500})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class RetryBudget:
    """A token bucket shared by every call of one client, as botocore's standard retry mode.

    A retry spends ``retry_cost`` tokens (``timeout_cost`` after a timeout); a call that succeeds
    puts back what its retries spent, or ``success_refund`` when it needed none. With the bucket
    empty a failing call gives up at once, so sustained failure does not multiply the load.
    """

    capacity: int = 500
    retry_cost: int = 5
    timeout_cost: int = 10
    success_refund: int = 1
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def spend(self, error: BaseException) -> int:
        """Take the cost of retrying after ``error``; 0 means the budget is exhausted."""
        cost = self.timeout_cost if isinstance(error, SdkTimeoutError) else self.retry_cost
        if cost > self.tokens:
            return 0
        self.tokens -= cost
        return cost

    def refund(self, spent: int) -> None:
        """Return tokens after a successful call that spent ``spent`` on its retries."""
        self.tokens = min(self.capacity, self.tokens + (spent or self.success_refund))


@dataclass(frozen=True)
class RetryPolicy:
    """The retry settings of one call: the mode plus backoff and ``Retry-After`` bounds."""

    mode: RetryMode = RetryMode.DEFAULT
    backoff_initial: float = 0.2
    backoff_max: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", RetryMode.coerce(self.mode))  # "forceful" works too

    @property
    def max_retries(self) -> int:
        return _MAX_RETRIES[self.mode]

    def is_retryable(self, error: BaseException, *, idempotent: bool) -> bool:
        """Whether ``error`` may be retried under this mode (budget and attempt count aside)."""
        if self.mode is RetryMode.DISABLED or not isinstance(error, AiosdkError):
            return False
        forceful = self.mode is RetryMode.FORCEFUL
        if isinstance(error, TransportError):
            return forceful or idempotent or not error.request_sent
        if isinstance(error, StatusError):
            if error.status_code in _RETRYABLE_STATUS or isinstance(
                error, IdempotencyInProgressError
            ):
                return forceful or idempotent
            return forceful and error.status_code in _FORCEFUL_EXTRA_STATUS
        return False

    def backoff(self, retry_number: int) -> float:
        """Full-jitter exponential backoff before retry ``retry_number`` (1-based), capped."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (retry_number - 1))
        return random.uniform(0, ceiling)

    def delay(self, error: BaseException | None, retry_number: int) -> float:
        """The wait before the next attempt: the server's ``Retry-After`` if it sent one."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        return self.backoff(retry_number)

    def retrying(
        self,
        *,
        idempotent: bool,
        budget: RetryBudget,
        deadline: float | None,
        spent: list[int],
        allow: Callable[[], bool] | None = None,
    ) -> AsyncRetrying:
        """A fresh tenacity retryer for one call.

        ``deadline`` is an absolute ``time.monotonic()`` instant; a retry whose wait would end past
        it is not attempted. ``spent`` accumulates the budget tokens this call's retries used.
        ``allow``, if given, can veto any retry (a stream that already delivered items).
        """

        def should_retry(state: RetryCallState) -> bool:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            if error is None or (allow is not None and not allow()):
                return False
            return self.is_retryable(error, idempotent=idempotent)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            return self.delay(error, state.attempt_number)

        def stop(state: RetryCallState) -> bool:
            # tenacity computes the wait before asking whether to stop, so this sees it.
            upcoming = state.upcoming_sleep
            if state.attempt_number > self.max_retries or upcoming > self.max_retry_after:
                return True
            if deadline is not None and time.monotonic() + upcoming >= deadline:
                return True
            error = state.outcome.exception() if state.outcome is not None else None
            cost = budget.spend(error) if error is not None else 0
            spent.append(cost)
            return not cost

        return AsyncRetrying(
            retry=should_retry,
            wait=wait,
            stop=stop,
            sleep=anyio.sleep,
            reraise=True,
        )
