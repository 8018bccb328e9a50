"""An opt-in HTTP response cache: SQLite, ETag revalidation, LRU by bytes, one entry per identity.

``AsyncClient(url, cache=Cache())`` keeps the ``200`` answers to ``GET`` requests that carry an
``ETag``. A later ``GET`` of the same URL, by the same identity, with the same ``Accept``, is sent
with ``If-None-Match``; a ``304 Not Modified`` is answered from the stored body (and moves the
entry to the front of the LRU order), anything else replaces or drops the entry. Nothing is ever
served without asking the server: the cache saves the body's transfer and the server's
rendering, never correctness.

Entries are keyed by an HMAC (with a random salt kept in the file) of the method, the full URL,
the ``Accept`` header and the ``Authorization`` credential, so the credential is never stored,
and one user's answer is never served to another, even when clients of several users (or
processes) share one cache file. Because the cache is private to an identity in that sense,
``Cache-Control: private`` answers are kept; ``no-store`` (on the request or the answer) is
honoured, and so is a ``Vary`` on anything but the keyed headers (such answers are not kept).

All SQLite work runs in a worker thread (one connection per cache, one operation at a time, at
most one thread per event loop), never on an event loop. In the request path a cache failure
(a corrupt, locked or missing file) is logged and the request goes on uncached; the cache's own
methods raise :class:`CacheError` with the file's path and SQLite's reason.

The sync methods (:meth:`Cache.count`, :meth:`Cache.clear`, ...) block: they are for scripts and
the blocking :class:`~aiosdk.Client`; async code awaits their ``a``-prefixed twins
(:meth:`Cache.acount`, :meth:`Cache.aclear`, ...), which run in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import sniffio

from .errors import AiosdkError, ConfigurationError

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_MAX_ITEM_SIZE",
    "LOCK_TIMEOUT",
    "Cache",
    "CacheError",
]

log = logging.getLogger("aiosdk")

T = TypeVar("T")

DEFAULT_CAPACITY: Final = 500_000_000
"""Bytes of response bodies a cache keeps by default (Tiled's default)."""
DEFAULT_MAX_ITEM_SIZE: Final = 500_000
"""The largest response body (bytes) a cache keeps by default (Tiled's default)."""
LOCK_TIMEOUT: Final = 1.0
"""Seconds an operation waits for a file another connection holds locked, then gives up (the
request goes on uncached): a request should not wait long for its cache."""

SCHEMA_VERSION: Final = "1"
_ENTRIES_COLUMNS: Final = frozenset(
    {"key", "url", "etag", "status", "headers", "body", "size", "used"}
)
_META_COLUMNS: Final = frozenset({"name", "value"})
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS aiosdk_cache_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS aiosdk_cache_entries ("
    " key BLOB PRIMARY KEY, url TEXT NOT NULL, etag TEXT NOT NULL, status INTEGER NOT NULL,"
    " headers TEXT NOT NULL, body BLOB NOT NULL, size INTEGER NOT NULL, used INTEGER NOT NULL)",
    # LRU order, and the total size, from the index alone (no body pages read).
    "CREATE INDEX IF NOT EXISTS aiosdk_cache_entries_used ON aiosdk_cache_entries (used, size)",
    "CREATE INDEX IF NOT EXISTS aiosdk_cache_entries_url ON aiosdk_cache_entries (url)",
)
_NEXT_USE: Final = "(SELECT COALESCE(MAX(used), 0) + 1 FROM aiosdk_cache_entries)"
# Keep the most recently used entries whose sizes add up to at most the capacity.
_EVICT: Final = (
    "DELETE FROM aiosdk_cache_entries WHERE key IN (SELECT key FROM (SELECT key,"
    " SUM(size) OVER (ORDER BY used DESC, key) AS running FROM aiosdk_cache_entries)"
    " WHERE running > ?)"
)
# Not stored, and not taken from a 304 into the answer served: they describe one message on
# one connection (or would replay a cookie), not the resource.
_UNSTORED_HEADERS: Final = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "keep-alive",
        "set-cookie",
        "transfer-encoding",
    }
)
_NOT_FROM_304: Final = _UNSTORED_HEADERS | {"content-type"}
_KEYED_VARY: Final = frozenset({"accept", "authorization", "accept-encoding"})
EXTENSION: Final = "aiosdk.cache"
"""The response extension set on an answer served from the cache (value ``"revalidated"``)."""


class CacheError(AiosdkError):
    """The response cache cannot be used: its file is corrupt, locked, missing (read-only), of
    another program or version; or it is closed, or read-only and asked to write."""


@dataclass(frozen=True, slots=True)
class Stored:
    """An entry as read from the cache (the transport's handle between lookup and answer)."""

    key: bytes
    etag: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def response(self, request: httpx.Request) -> httpx.Response:
        """The stored answer, as a read response to ``request``."""
        return _response(self.status, self.headers, self.body, request)


def _response(
    status: int, headers: list[tuple[str, str]], body: bytes, request: httpx.Request
) -> httpx.Response:
    response = httpx.Response(
        status,
        headers=[*headers, ("Content-Length", str(len(body)))],
        content=body,
        request=request,
    )
    response.extensions = {**response.extensions, EXTENSION: "revalidated"}
    return response


def _directives(value: str | None) -> set[str]:
    if not value:
        return set()
    return {part.split("=", 1)[0].strip().lower() for part in value.split(",")}


def _no_store(request: httpx.Request) -> bool:
    return "no-store" in _directives(request.headers.get("cache-control"))


def _storable(request: httpx.Request, response: httpx.Response) -> bool:
    """Whether ``response`` (to a ``GET``) may be kept, size aside."""
    if response.status_code != 200 or not response.headers.get("etag"):
        return False
    if "no-store" in _directives(response.headers.get("cache-control")) or _no_store(request):
        return False
    vary = _directives(response.headers.get("vary"))
    return vary <= _KEYED_VARY  # ``*`` or a header we do not key by: cannot be matched safely


def _current_loop() -> object | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        try:
            return anyio.lowlevel.current_token().native_token
        except Exception:
            return None


class Cache:
    """An HTTP response cache in a SQLite file, for ``AsyncClient(..., cache=...)``.

    One cache may serve several clients (of several users, in several threads, event loops or
    processes, through one file): entries are kept apart by identity. A client never closes its
    cache: close it (or use it as a context manager) when every client using it is done.

    Args:
        filepath: the SQLite file (created if missing, with its directories); ``None``: a
            temporary file, deleted by :meth:`close`.
        capacity: bytes of response bodies to keep; beyond, the least recently used entries go.
        max_item_size: the largest body (bytes) kept; larger answers pass through uncached.
        readonly: read the file but never write it (no new entries, no LRU updates).
    """

    def __init__(
        self,
        filepath: str | Path | None = None,
        capacity: int = DEFAULT_CAPACITY,
        max_item_size: int = DEFAULT_MAX_ITEM_SIZE,
        readonly: bool = False,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise ConfigurationError(f"capacity must be a positive number of bytes: {capacity!r}")
        if (
            isinstance(max_item_size, bool)
            or not isinstance(max_item_size, int)
            or max_item_size <= 0
        ):
            raise ConfigurationError(
                f"max_item_size must be a positive number of bytes: {max_item_size!r}"
            )
        self._path = Path(filepath) if filepath is not None else None
        self._temporary = filepath is None
        self._temporary_name = f"aiosdk-cache-{uuid.uuid4().hex}.sqlite"
        self._capacity = capacity
        self._max_item_size = max_item_size
        self._readonly = readonly
        self._lock = threading.Lock()  # one operation at a time on the one connection
        self._connection: sqlite3.Connection | None = None
        self._salt = b""
        self._closed = False
        self._failing = False  # warned already: later failures are logged at DEBUG
        self._limiters: weakref.WeakKeyDictionary[Any, anyio.CapacityLimiter] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        where = "temporary" if self._temporary else str(self._path)
        mode = " readonly" if self._readonly else ""
        return f"<Cache {where} capacity={self._capacity}{mode}>"

    # -- configuration -----------------------------------------------------------------------

    @property
    def filepath(self) -> Path:
        """The SQLite file of this cache (for a temporary cache, where it is or will be)."""
        if self._path is None:
            # Resolved on first use: the first gettempdir() of a process probes the directory.
            self._path = Path(tempfile.gettempdir()) / self._temporary_name
        return self._path

    @property
    def capacity(self) -> int:
        """The most bytes of response bodies kept."""
        return self._capacity

    @property
    def max_item_size(self) -> int:
        """The largest response body (bytes) that is kept."""
        return self._max_item_size

    @property
    def readonly(self) -> bool:
        """Whether the cache only reads its file (no new entries, no LRU updates)."""
        return self._readonly

    def write_safe(self) -> bool:
        """Whether this cache may write: it is neither read-only nor closed."""
        return not self._readonly and not self._closed

    # -- blocking API (scripts, the blocking client) -----------------------------------------

    def get(self, request: httpx.Request) -> httpx.Response | None:
        """The stored answer to ``request`` (a ``GET``), as it was stored, or ``None``.

        Blocks; in async code use :meth:`aget`.
        """
        self._not_in_loop("get", "aget(request)")
        return self._get(request)

    def set(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Store ``response`` (read) to ``request``; whether it was stored.

        Only a ``200`` to a ``GET`` with an ``ETag``, without ``no-store``, within
        ``max_item_size`` is kept; any other answer drops the entry of ``request``. Blocks; in
        async code use :meth:`aset`.
        """
        self._not_in_loop("set", "aset(request, response)")
        return self._set(request, response)

    def delete(self, target: httpx.Request | httpx.URL | str) -> int:
        """Delete entries; how many went.

        ``target`` is a request (its own entry: its identity and ``Accept``) or a full URL (every
        entry for it, of every identity). Blocks; in async code use :meth:`adelete`.
        """
        self._not_in_loop("delete", "adelete(target)")
        return self._delete(target)

    def clear(self) -> None:
        """Delete every entry. Blocks; in async code use :meth:`aclear`."""
        self._not_in_loop("clear", "aclear()")
        self._clear()

    def count(self) -> int:
        """How many responses are stored. Blocks; in async code use :meth:`acount`."""
        self._not_in_loop("count", "acount()")
        return self._count()

    def size(self) -> int:
        """Bytes of the stored response bodies (headers not counted). Blocks; in async code use
        :meth:`asize`."""
        self._not_in_loop("size", "asize()")
        return self._size()

    def close(self) -> None:
        """Close the file (a temporary cache's file is deleted); the cache is unusable after.

        Clients still using it go on uncached. Blocks; in async code use :meth:`aclose`.
        """
        self._not_in_loop("close", "aclose()")
        self._close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- async API (the same, in a worker thread) --------------------------------------------

    async def aget(self, request: httpx.Request) -> httpx.Response | None:
        """:meth:`get`, in a worker thread."""
        return await self._in_thread(self._get, request)

    async def aset(self, request: httpx.Request, response: httpx.Response) -> bool:
        """:meth:`set`, in a worker thread."""
        return await self._in_thread(self._set, request, response)

    async def adelete(self, target: httpx.Request | httpx.URL | str) -> int:
        """:meth:`delete`, in a worker thread."""
        return await self._in_thread(self._delete, target)

    async def aclear(self) -> None:
        """:meth:`clear`, in a worker thread."""
        await self._in_thread(self._clear)

    async def acount(self) -> int:
        """:meth:`count`, in a worker thread."""
        return await self._in_thread(self._count)

    async def asize(self) -> int:
        """:meth:`size`, in a worker thread."""
        return await self._in_thread(self._size)

    async def aclose(self) -> None:
        """:meth:`close`, in a worker thread."""
        await self._in_thread(self._close)

    async def __aenter__(self) -> Cache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the transport's hooks: never raise (but for cancellation) ---------------------------

    async def lookup(self, request: httpx.Request) -> Stored | None:
        """The entry to revalidate ``request`` (a ``GET``) with, or ``None`` (also on failure).

        A request that is conditional already (its caller's ``If-None-Match``) or says
        ``no-store`` is not looked up.
        """
        if self._closed or "if-none-match" in request.headers or _no_store(request):
            return None
        return await self._quietly("read", self._lookup, request)

    async def revalidated(
        self, stored: Stored, request: httpx.Request, not_modified: httpx.Response
    ) -> httpx.Response:
        """The answer to serve for a ``304`` to a request revalidating ``stored``.

        The stored status and body, with the stored headers updated by the 304's (RFC 9111
        4.3.4); the entry becomes the most recently used (unless read-only).
        """
        headers = dict(stored.headers)
        lowered = {name.lower(): name for name in headers}
        for name, value in not_modified.headers.items():
            if name.lower() in _NOT_FROM_304:
                continue
            headers.pop(lowered.get(name.lower(), name), None)
            headers[name] = value
        if not self._readonly:
            await self._quietly("update", self._touch, stored.key)
        return _response(stored.status, list(headers.items()), stored.body, request)

    async def settle(
        self, request: httpx.Request, response: httpx.Response, stored: Stored | None
    ) -> None:
        """Keep a successful (read) answer to a ``GET`` if it may be kept; else drop the entry
        it replaces (``stored``), if any."""
        if self._readonly or self._closed or EXTENSION in response.extensions:
            return  # (an answer from the cache is stored already, its use recorded)
        if _storable(request, response) and len(response.content) <= self._limit:
            await self._quietly("write", self._set, request, response)
        elif stored is not None:
            await self._quietly("write", self._forget, stored.key)

    async def _quietly(self, what: str, work: Callable[..., T], *args: Any) -> T | None:
        try:
            result = await self._in_thread(work, *args)
        except (CacheError, sqlite3.Error, OSError, ValueError) as exc:
            if self._closed:
                log.debug("response cache closed: request served uncached")
            elif self._failing:
                log.debug("response cache %s failed again: %s", what, exc)
            else:
                self._failing = True
                log.warning("response cache %s failed, the request goes on uncached: %s", what, exc)
            return None
        self._failing = False
        return result

    # -- the work, in a worker thread --------------------------------------------------------

    @property
    def _limit(self) -> int:
        return min(self._max_item_size, self._capacity)

    def _not_in_loop(self, name: str, twin: str) -> None:
        try:
            sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            return
        raise CacheError(f"Cache.{name}() blocks, and this is async code: use `await cache.{twin}`")

    async def _in_thread(self, work: Callable[..., T], *args: Any) -> T:
        loop = _current_loop()
        limiter = None
        if loop is not None:
            try:
                limiter = self._limiters.get(loop)
                if limiter is None:
                    limiter = self._limiters[loop] = anyio.CapacityLimiter(1)
            except TypeError:  # a loop object that takes no weak reference
                limiter = None
        return await anyio.to_thread.run_sync(self._run, work, *args, limiter=limiter)

    def _run(self, work: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return work(*args)

    def _db(self) -> sqlite3.Connection:
        """The connection, opened (and the schema made or checked) on first use."""
        if self._closed:
            raise CacheError("this response cache is closed")
        if self._connection is not None:
            return self._connection
        path = self.filepath
        connection: sqlite3.Connection | None = None
        try:
            if self._readonly:
                connection = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=LOCK_TIMEOUT,
                    check_same_thread=False,
                    isolation_level=None,
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(
                    path,
                    timeout=LOCK_TIMEOUT,
                    check_same_thread=False,
                    isolation_level=None,  # autocommit: explicit BEGIN ... COMMIT where needed
                )
            self._salt = self._prepare(connection, path)
        except sqlite3.Error as exc:
            if connection is not None:
                connection.close()
            mode = " (read-only)" if self._readonly else ""
            raise CacheError(f"the response cache {path}{mode} cannot be used: {exc}") from exc
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        self._connection = connection
        return connection

    def _prepare(self, db: sqlite3.Connection, path: Path) -> bytes:
        """Make the schema (unless read-only), check it, and return the file's salt."""
        if not self._readonly:
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            db.execute("PRAGMA synchronous=NORMAL")
            with _transaction(db):
                # Tables of these names but of something else are refused, never changed.
                self._check_tables(db, path, missing_ok=True)
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(
                    "INSERT OR IGNORE INTO aiosdk_cache_meta VALUES ('version', ?), ('salt', ?)",
                    (SCHEMA_VERSION, secrets.token_bytes(32)),
                )
        self._check_tables(db, path, missing_ok=False)
        meta = dict(db.execute("SELECT name, value FROM aiosdk_cache_meta").fetchall())
        if meta.get("version") != SCHEMA_VERSION:
            raise CacheError(
                f"{path} is a response cache of another aiosdk version (schema"
                f" {meta.get('version')!r}, this one reads {SCHEMA_VERSION!r}): delete it, or use"
                " another filepath"
            )
        salt = meta.get("salt")
        if not isinstance(salt, bytes) or len(salt) < 16:
            raise CacheError(f"{path} is a damaged response cache: delete it, or use another one")
        return salt

    @staticmethod
    def _check_tables(db: sqlite3.Connection, path: Path, *, missing_ok: bool) -> None:
        for table, expected in (
            ("aiosdk_cache_entries", _ENTRIES_COLUMNS),
            ("aiosdk_cache_meta", _META_COLUMNS),
        ):
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if columns != expected and (columns or not missing_ok):
                raise CacheError(
                    f"{path} is not an aiosdk response cache (its {table} table is"
                    f" {'missing' if not columns else 'of another program'}): delete it, or use"
                    " another filepath"
                )

    def _key(self, request: httpx.Request) -> bytes:
        # An HMAC under the file's own salt: the credential is never stored, nor a plain hash of
        # it (a password, with no_session=True, would be easy to guess from one).
        identity = request.headers.get("authorization", "")
        accept = request.headers.get("accept", "")
        message = "\0".join((request.method, str(request.url), accept, identity))
        return hmac.new(self._salt, message.encode(), hashlib.sha256).digest()

    def _writable(self) -> sqlite3.Connection:
        if self._readonly:
            raise CacheError("this response cache is read-only")
        return self._db()

    def _lookup(self, request: httpx.Request) -> Stored | None:
        db = self._db()
        key = self._key(request)
        row = db.execute(
            "SELECT etag, status, headers, body FROM aiosdk_cache_entries WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        etag, status, headers, body = row
        try:
            pairs = [(str(name), str(value)) for name, value in json.loads(headers)]
        except (ValueError, TypeError) as exc:
            if not self._readonly:
                self._forget(key)
            raise CacheError(f"a damaged entry in {self.filepath} was dropped ({exc})") from exc
        return Stored(key, str(etag), int(status), pairs, bytes(body))

    def _get(self, request: httpx.Request) -> httpx.Response | None:
        stored = self._lookup(request)
        return None if stored is None else stored.response(request)

    def _set(self, request: httpx.Request, response: httpx.Response) -> bool:
        db = self._writable()
        key = self._key(request)
        body = response.content
        if request.method != "GET" or not _storable(request, response) or len(body) > self._limit:
            self._forget(key)
            return False
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in _UNSTORED_HEADERS
        ]
        with _transaction(db):
            db.execute(
                "INSERT OR REPLACE INTO aiosdk_cache_entries"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, {_NEXT_USE})",
                (
                    key,
                    str(request.url),
                    response.headers["etag"],
                    response.status_code,
                    json.dumps(headers),
                    body,
                    len(body),
                ),
            )
            (total,) = db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM aiosdk_cache_entries"
            ).fetchone()
            if total > self._capacity:
                db.execute(_EVICT, (self._capacity,))
        return True

    def _touch(self, key: bytes) -> None:
        self._writable().execute(
            f"UPDATE aiosdk_cache_entries SET used = {_NEXT_USE} WHERE key = ?", (key,)
        )

    def _forget(self, key: bytes) -> None:
        self._writable().execute("DELETE FROM aiosdk_cache_entries WHERE key = ?", (key,))

    def _delete(self, target: httpx.Request | httpx.URL | str) -> int:
        db = self._writable()
        if isinstance(target, httpx.Request):
            cursor = db.execute(
                "DELETE FROM aiosdk_cache_entries WHERE key = ?", (self._key(target),)
            )
        else:
            cursor = db.execute("DELETE FROM aiosdk_cache_entries WHERE url = ?", (str(target),))
        return cursor.rowcount

    def _clear(self) -> None:
        self._writable().execute("DELETE FROM aiosdk_cache_entries")

    def _count(self) -> int:
        (count,) = self._db().execute("SELECT COUNT(*) FROM aiosdk_cache_entries").fetchone()
        return int(count)

    def _size(self) -> int:
        db = self._db()
        (size,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM aiosdk_cache_entries").fetchone()
        return int(size)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
        if self._temporary and self._path is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self._path}{suffix}").unlink(missing_ok=True)


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection:
    the write lock is taken up front, so two writers never deadlock upgrading a read."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
        finally:
            if self._db.in_transaction:  # failed, or COMMIT did (busy): leave no transaction open
                self._db.execute("ROLLBACK")
