"""Limits on failed logins, per account and per client address, shared by every server process.

Each account (the username tried, whether it exists or not) and each client address has a
window of ``login_window_seconds`` that starts with its first failure; past
``login_failures_per_account`` (or ``..._per_address``) failures in it, logins from there are
refused with 429 and ``Retry-After`` (the seconds left in the window) without checking the
password. A successful login clears its account's window; an address's window is never cleared
early, so that one's own account cannot be used to reset it between guesses at others.

A username no user can have (``admin``, uppercase letters...) is refused without a password
check and not counted: there is no account to guess at, and nothing for the KDF to spend.

Counts live in ``login_attempts`` under a SHA-256 of ``"user:" + username`` or
``"addr:" + address``, so the table names nobody. Every change commits in its own transaction:
the failed request rolls its own work back, the failure it counts must stay.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..config import AccountSettings
from ..errors import ApiError
from ..storage import utcnow
from .models import LoginAttempts
from .namespaces import NAME_PATTERN, RESERVED_NAMES

__all__ = [
    "LoginLimiter",
    "LoginRateLimitedError",
    "attempt_key",
    "client_address",
    "could_be_a_user",
]

_USERNAME = re.compile(NAME_PATTERN)


class LoginRateLimitedError(ApiError):
    """Too many failed logins from this account or address (429, with ``Retry-After``)."""

    status = 429
    error_type = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed logins; retry in {retry_after} seconds",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


def could_be_a_user(username: str) -> bool:
    """Whether a user may have the name ``username`` (a valid name, not a reserved one)."""
    return username not in RESERVED_NAMES and _USERNAME.fullmatch(username) is not None


def attempt_key(kind: str, value: str) -> str:
    """The ``login_attempts`` key of an account (``kind="user"``) or an address (``"addr"``)."""
    return hashlib.sha256(f"{kind}:{value}".encode("utf-8", "surrogateescape")).hexdigest()


def client_address(host: str | None) -> str | None:
    """The address to count failures under: the client's IP, or for IPv6 its /64 network
    (one host commonly holds a whole /64, and could otherwise pick a fresh address per try)."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True)
class _Counter:
    key: str
    limit: int


class LoginLimiter:
    """Checks and counts failed logins (see the module); holds no state of its own."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: AccountSettings
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._window = timedelta(seconds=settings.login_window_seconds)

    def _counters(self, username: str | None, address: str | None) -> list[_Counter]:
        counters = []
        if username is not None:
            counters.append(
                _Counter(attempt_key("user", username), self._settings.login_failures_per_account)
            )
        if address is not None:
            counters.append(
                _Counter(attempt_key("addr", address), self._settings.login_failures_per_address)
            )
        return counters

    async def check(self, username: str | None, address: str | None) -> None:
        """Raise :class:`LoginRateLimitedError` if ``username`` or ``address`` (either may be
        ``None``: not counted) has used up its failures for now."""
        counters = self._counters(username, address)
        if not counters:
            return
        limits = {c.key: c.limit for c in counters}
        now = utcnow()
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        LoginAttempts.key, LoginAttempts.window_start, LoginAttempts.failures
                    ).where(LoginAttempts.key.in_(limits))
                )
            ).all()
        waits = [
            (window_start + self._window - now).total_seconds()
            for key, window_start, failures in rows
            if failures >= limits[key] and window_start + self._window > now
        ]
        if waits:
            raise LoginRateLimitedError(max(1, math.ceil(max(waits))))

    async def failed(self, username: str | None, address: str | None) -> None:
        """Count a failed login against ``username`` and ``address``, committed at once."""
        counters = self._counters(username, address)
        if not counters:
            return
        now = utcnow()
        async with self._sessions() as session:
            # Windows that ended are forgotten: the table only holds the current ones.
            await session.execute(
                delete(LoginAttempts).where(LoginAttempts.window_start <= now - self._window)
            )
            await _count(session, [c.key for c in counters], now, now - self._window)
            await session.commit()

    async def succeeded(self, username: str) -> None:
        """Clear ``username``'s failures after a successful login, committed at once."""
        async with self._sessions() as session:
            await session.execute(
                delete(LoginAttempts).where(LoginAttempts.key == attempt_key("user", username))
            )
            await session.commit()


async def _count(
    session: AsyncSession, keys: Sequence[str], now: datetime, ended: datetime
) -> None:
    """One more failure for each of ``keys`` (a new window for those whose window ``ended``),
    each in one atomic statement, so that concurrent failures are all counted."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    window_start = LoginAttempts.__table__.c.window_start
    current = LoginAttempts.window_start > ended
    for key in keys:
        statement = insert(LoginAttempts).values(key=key, window_start=now, failures=1)
        statement = statement.on_conflict_do_update(
            index_elements=[LoginAttempts.key],
            set_={
                "failures": case((current, LoginAttempts.failures + 1), else_=1),
                "window_start": case(
                    (current, LoginAttempts.window_start), else_=literal(now, window_start.type)
                ),
            },
        )
        await session.execute(statement)
