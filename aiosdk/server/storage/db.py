"""The database engine: creation, SQLite tuning, the schema (through migrations)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex
from sqlalchemy import event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ..errors import InvalidRequestError

__all__ = [
    "REGEX_MAX_VALUE_LENGTH",
    "REGEX_TIME_BUDGET",
    "REGEX_TOO_SLOW",
    "busy_timeout_seconds",
    "create_engine",
    "default_database_url",
    "is_lock_timeout",
    "session_factory",
]

_SQLITE_BUSY_TIMEOUT_MS = 10_000
_SQLITE_REGEXP = "aiosdk_regexp"  # the catalog's regex filter (server/catalog/filters.py)
_MAX_REGEXP_LENGTH = 1000
_BUDGET = "aiosdk_regex_budget"  # in a connection's info: its _RegexBudget

REGEX_TIME_BUDGET = 2.0
"""Seconds of regular expression matching one SQLite statement may spend, all rows together."""
REGEX_MAX_VALUE_LENGTH = 10_000
"""A regex filter looks at the first this many characters of a value (both databases)."""
REGEX_TOO_SLOW = (
    "The regular expression took too long to evaluate (it backtracks too much, or the values "
    "are too many): simplify it or narrow the query with other filters"
)
_POSTGRES_REGEX_OPERATOR = re.compile(r" ~\*? ")


_SQLITE_BUSY = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes' base)
_POSTGRES_LOCK_STATES = frozenset(
    {"55P03", "40P01", "40001"}  # lock_not_available, deadlock_detected, serialization_failure
)


def busy_timeout_seconds() -> float:
    """How long an SQLite connection waits for the database's lock before giving up."""
    return _SQLITE_BUSY_TIMEOUT_MS / 1000


def is_lock_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is the database giving up on a lock: SQLite's "database is locked"
    after its busy timeout, PostgreSQL's lock timeout, deadlock or serialization failure
    (a retry may well succeed: a 503, not a 500)."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_BUSY
    if isinstance(exc, OperationalError) and "database is locked" in str(orig):
        return True
    return getattr(orig, "sqlstate", None) in _POSTGRES_LOCK_STATES


def default_database_url(data_dir: Path) -> str:
    """The SQLite database inside ``data_dir``."""
    return URL.create("sqlite+aiosqlite", database=str(data_dir / "aiosdk.db")).render_as_string()


SQLITE_POOL_SIZE = 16
"""Connections kept open to an SQLite file, with no overflow: each has its own thread, and one
opened and closed per request under load (the default overflow) costs more than waiting for one."""


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite connections get WAL, a busy timeout and foreign keys.

    Connections to a server database are checked before use (it may have restarted); those
    to an SQLite file are not (they cannot go away, and the check is a statement per
    request)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed, pool_size=SQLITE_POOL_SIZE, max_overflow=0)
    else:
        engine = create_async_engine(parsed, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _create_private(engine.url.database)
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        event.listen(engine.sync_engine, "before_cursor_execute", _start_statement)
    event.listen(engine.sync_engine, "handle_error", _refuse_slow_regex)
    return engine


def _create_private(database: str | None) -> None:
    """Create a new SQLite file readable by its owner only (it holds password hashes and the
    hashes of tokens); SQLite gives its WAL and shared-memory files the same mode. An existing
    file is left as it is."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()
    budget = _RegexBudget()
    connection_record.info[_BUDGET] = budget
    dbapi_connection.create_function(
        _SQLITE_REGEXP, 3, functools.partial(_regexp, budget), deterministic=True
    )


@dataclass
class _RegexBudget:
    """The matching time left to the statement running on one SQLite connection."""

    remaining: float = REGEX_TIME_BUDGET
    exhausted: bool = False


def _start_statement(conn: Any, *_args: Any) -> None:
    budget = conn.info.get(_BUDGET)
    if budget is not None:
        budget.remaining = REGEX_TIME_BUDGET
        budget.exhausted = False


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str, flags: int) -> regex.Pattern[str] | None:
    try:
        return regex.compile(pattern, flags | regex.VERSION0)
    except (regex.error, RecursionError, OverflowError, ValueError):
        return None


def _regexp(
    budget: _RegexBudget, pattern: object, value: object, ignore_case: object
) -> int | None:
    """``aiosdk_regexp(pattern, value, ignore_case)``: 1 if the ``regex`` module's search finds
    ``pattern`` in the first :data:`REGEX_MAX_VALUE_LENGTH` characters of ``value``, 0 if not;
    NULL for a non-text value or an invalid or oversized pattern.

    Matching may backtrack exponentially (``^(a+)+$``): the statement's matches together get
    :data:`REGEX_TIME_BUDGET` seconds, after which this raises, which aborts the statement (an
    ``OperationalError`` that :func:`_refuse_slow_regex` turns into a 400)."""
    if not isinstance(pattern, str) or not isinstance(value, str):
        return None
    if len(pattern) > _MAX_REGEXP_LENGTH:
        return None
    compiled = _compiled(pattern, regex.IGNORECASE if ignore_case else 0)
    if compiled is None:
        return None
    started = time.monotonic()
    try:
        found = compiled.search(
            value, 0, REGEX_MAX_VALUE_LENGTH, timeout=max(budget.remaining, 0.001)
        )
    except TimeoutError:
        budget.remaining = 0
        budget.exhausted = True
        raise
    budget.remaining -= time.monotonic() - started
    return 1 if found else 0


def _refuse_slow_regex(context: ExceptionContext) -> None:
    """Raise the 400 for a statement aborted because a regular expression took too long (on
    SQLite by :func:`_regexp`, on PostgreSQL by the ``statement_timeout`` the catalog sets
    around regex filters); other errors go on as they are."""
    budget = None
    if context.connection is not None:
        with contextlib.suppress(Exception):  # an invalidated connection has no info
            budget = context.connection.info.get(_BUDGET)
    if budget is not None and budget.exhausted:
        budget.exhausted = False
        raise InvalidRequestError(REGEX_TOO_SLOW) from None
    original = context.original_exception
    if (
        getattr(original, "sqlstate", None) == "57014"  # query_canceled
        and "statement timeout" in str(original)
        and _POSTGRES_REGEX_OPERATOR.search(context.statement or "")
    ):
        raise InvalidRequestError(REGEX_TOO_SLOW) from None


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine`` whose objects stay usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
