"""Limits on failed logins, per account and per client address, shared by every server process;
and the one check of a username and password (a login, or Basic credentials).

Each account (the username tried, whether it exists or not) and each client address has a
window of ``login_window_seconds`` that starts with its first failure; past
``login_failures_per_account`` (or ``..._per_address``) failures in it, logins from there are
refused with 429 and ``Retry-After`` (the seconds left in the window) without checking the
credentials. A successful login clears its account's window; an address's window is never
cleared early, so that one's own account cannot be used to reset it between guesses at others.

Every attempt is counted as a failure *before* its credentials are checked, in one atomic
statement per counter (``failures = failures + 1 ... RETURNING failures``) committed at once in a
transaction of its own: of any number of concurrent guesses, exactly as many as the limit allows
are checked, and the rest are refused. An attempt over a limit is not counted (its transaction is
rolled back: a 429 is no failure); one that succeeds gives its count back (see
:meth:`Attempt.succeeded`). The failed request rolls its own work back, the failure stays counted.
(So more concurrent logins of one account than its limit are refused too, the right password or
not, while the others are checked: nothing tells a guess from the password before the check.)

A username no user can have (``admin``, uppercase letters...) is refused without a password
check and not counted: there is no account to guess at, and nothing for the KDF to spend.

Counts live in ``login_attempts`` under an HMAC-SHA256 of ``"user:" + username`` or
``"addr:" + address`` keyed with the server keyring's sub-key for :data:`ATTEMPT_KEY_PURPOSE`,
so the table names nobody, and a copy of it alone does not tell whose names or addresses it
counts. (Rotating the keyring starts every count over: the windows are short.)

No database connection is held while Argon2 runs: the user is looked up in a short session of
its own, released before the hash is checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import math
import re
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..config import AccountSettings
from ..errors import ApiError
from ..keyring import Keyring
from ..storage import utcnow
from . import passwords
from .models import LoginAttempts, User
from .namespaces import NAME_PATTERN, RESERVED_NAMES

__all__ = [
    "ATTEMPT_KEY_PURPOSE",
    "Attempt",
    "LoginLimiter",
    "LoginRateLimitedError",
    "VerifiedUser",
    "attempt_key",
    "client_address",
    "could_be_a_user",
]

ATTEMPT_KEY_PURPOSE = "login-attempts"
"""The keyring purpose of the ``login_attempts`` keys."""

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


def attempt_key(secret: bytes, kind: str, value: str) -> str:
    """The ``login_attempts`` key of an account (``kind="user"``) or an address (``"addr"``),
    under the sub-key ``secret`` (see the module)."""
    message = f"{kind}:{value}".encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


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
class VerifiedUser:
    """A user whose password was just checked, as it was then (a login re-reads the row before
    its session commits, and refuses if it changed since)."""

    id: str
    username: str
    password_hash: str | None


@dataclass(frozen=True)
class _Counter:
    key: str
    limit: int
    account: bool


class Attempt:
    """A login attempt, counted as a failure in advance (see :meth:`LoginLimiter.reserve`)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        counted: list[tuple[_Counter, datetime]],
    ) -> None:
        self._sessions = sessions
        self._counted = counted
        self._settled = False

    async def succeeded(self) -> None:
        """The attempt was no failure: clear its account's count and give its address back
        the failure counted in advance, committed at once (once, whatever the calls)."""
        if self._settled or not self._counted:
            return
        self._settled = True
        async with self._sessions() as session:
            for counter, window_start in self._counted:
                if counter.account:
                    await session.execute(
                        delete(LoginAttempts).where(LoginAttempts.key == counter.key)
                    )
                else:  # only this attempt's own count, if its window still runs
                    await session.execute(
                        update(LoginAttempts)
                        .where(
                            LoginAttempts.key == counter.key,
                            LoginAttempts.window_start == window_start,
                            LoginAttempts.failures > 0,
                        )
                        .values(failures=LoginAttempts.failures - 1)
                        .execution_options(synchronize_session=False)
                    )
            await session.commit()


class LoginLimiter:
    """Counts failed logins and refuses attempts over the limits (see the module); holds no
    state of its own but the keyring its keys are derived from."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: AccountSettings,
        keyring: Keyring | None = None,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._window = timedelta(seconds=settings.login_window_seconds)
        self._keyring = keyring or Keyring.generate()
        # One check of an account at a time in this process: a check is counted as a failure
        # until it succeeds, so concurrent right passwords would otherwise crowd each other
        # out as if they were guesses.
        self._checking: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """The database sessions it counts in (short ones, never a request's)."""
        return self._sessions

    def key(self, kind: str, value: str) -> str:
        """The ``login_attempts`` key of ``value`` (see :func:`attempt_key`)."""
        return attempt_key(self._keyring.derive(ATTEMPT_KEY_PURPOSE)[0], kind, value)

    def _counters(self, username: str | None, address: str | None) -> list[_Counter]:
        # Always the account first, then the address: concurrent attempts lock rows in one order.
        counters = []
        if username is not None:
            limit = self._settings.login_failures_per_account
            counters.append(_Counter(self.key("user", username), limit, account=True))
        if address is not None:
            limit = self._settings.login_failures_per_address
            counters.append(_Counter(self.key("addr", address), limit, account=False))
        return counters

    async def reserve(self, username: str | None, address: str | None) -> Attempt:
        """Count an attempt of ``username`` from ``address`` (either may be ``None``: not
        counted) as a failure before its credentials are checked, committed at once; call
        :meth:`Attempt.succeeded` if it turns out to be none.

        Raises :class:`LoginRateLimitedError` (counting nothing) if that is more failures than
        ``username`` or ``address`` may have for now.
        """
        counters = self._counters(username, address)
        if not counters:
            return Attempt(self._sessions, [])
        now = utcnow()
        ended = now - self._window
        counted: list[tuple[_Counter, datetime]] = []
        waits: list[float] = []
        async with self._sessions() as session:
            # Windows that ended are forgotten: the table only holds the current ones (an
            # indexed range, empty most of the time).
            await session.execute(delete(LoginAttempts).where(LoginAttempts.window_start <= ended))
            for counter in counters:
                failures, window_start = await _count(session, counter.key, now, ended)
                counted.append((counter, window_start))
                if failures > counter.limit:
                    waits.append((window_start + self._window - now).total_seconds())
            if waits:
                await session.rollback()
                raise LoginRateLimitedError(max(1, math.ceil(max(waits))))
            await session.commit()
        return Attempt(self._sessions, counted)

    async def check_password(
        self, username: str, password: str, address: str | None
    ) -> VerifiedUser | None:
        """The user ``username`` if ``password`` is theirs and they are not disabled, else
        ``None`` (a failed login of ``username`` from ``address``, counted; unless no user could
        have that name: then nothing is checked nor counted). A success clears the account's
        count. The one check of a password: the login route's and Basic credentials'.

        Raises :class:`LoginRateLimitedError` while failed logins of ``username`` or from
        ``address`` are at the limits (the password is not checked then).
        """
        if not could_be_a_user(username):
            return None
        lock = self._checking.get(username)
        if lock is None:
            lock = self._checking[username] = asyncio.Lock()
        async with lock:
            attempt = await self.reserve(username, address)
            async with self._sessions() as session:  # released before the hash is checked
                found = (
                    await session.execute(
                        select(User.id, User.password_hash, User.disabled_at).where(
                            User.username == username
                        )
                    )
                ).first()
            stored = None if found is None else found.password_hash
            matches = await passwords.verify_password(stored, password)
            if found is None or not matches or found.disabled_at is not None:
                return None
            await attempt.succeeded()
            return VerifiedUser(found.id, username, stored)


async def _count(
    session: AsyncSession, key: str, now: datetime, ended: datetime
) -> tuple[int, datetime]:
    """One more failure for ``key`` (a new window if its window ``ended``) in one atomic
    statement, so that concurrent attempts are all counted; the count and window after it."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    window_start = LoginAttempts.__table__.c.window_start
    current = LoginAttempts.window_start > ended
    statement = (
        insert(LoginAttempts)
        .values(key=key, window_start=now, failures=1)
        .on_conflict_do_update(
            index_elements=[LoginAttempts.key],
            set_={
                "failures": case((current, LoginAttempts.failures + 1), else_=1),
                "window_start": case(
                    (current, LoginAttempts.window_start), else_=literal(now, window_start.type)
                ),
            },
        )
        .returning(LoginAttempts.failures, LoginAttempts.window_start)
    )
    failures, started = (await session.execute(statement)).one()
    return int(failures), started
