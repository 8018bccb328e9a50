"""The shared pool and the one request path.

A :class:`Transport` owns one httpx transport (the HTTP connection pool) and lazily opened
grpclib ``Channel`` objects (one HTTP/2 connection each: a second one opens when the streams in
flight fill the first, see :class:`_GrpcChannels`); every service object of a client sends
through it. :meth:`Transport.request` and the ``grpc_*`` methods apply the same things in the
same order: bootstrap (embedded server), auth, ``Idempotency-Key``, a retryer built for the
call, the overall deadline, error mapping and logging.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import os
import ssl
import time
import urllib.request
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import anyio
import anyio.lowlevel
import httpx
import sniffio
from grpclib.client import Channel, Stream
from grpclib.config import Configuration
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from h2.exceptions import ProtocolError as H2ProtocolError
from h2.settings import SettingCodes

from .._version import __version__
from . import errors, forking
from .auth import Auth, AuthRequest
from .bulk import ContentStream, Download, Sink, raw_body
from .cache import Cache, Stored
from .concurrency import to_the_end
from .config import API_PREFIX
from .credentials import CredentialStore, TokenCredential
from .http11 import AsyncioTransport, fast_transport_supported
from .options import RequestOptions
from .retry import RetryBudget, RetryMode, RetryPolicy, parse_retry_after
from .secrets import Secret, keep_credentials_out_of_hpack_logs

__all__ = [
    "AUTH_TIMEOUT",
    "MIN_AUTH_TIMEOUT",
    "Bootstrap",
    "GrpcDuplex",
    "Transport",
    "auth_timeout_for",
]

log = logging.getLogger("aiosdk")
keep_credentials_out_of_hpack_logs()  # gRPC metadata carries the credentials

T = TypeVar("T")
StubT = TypeVar("StubT")

_URL_CACHE_SIZE = 1024
_DEFAULT_HEADERS = (
    ("Accept", "application/json"),
    ("User-Agent", f"aiosdk/{__version__} httpx/{httpx.__version__}"),
)
_OVERRIDABLE = frozenset(name.lower() for name, _ in _DEFAULT_HEADERS)  # a call may send its own
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# HTTP/2 PING keep-alive on gRPC connections with calls in flight: a peer that vanished without a
# FIN (cable pulled, NAT entry dropped) is noticed within interval + timeout seconds, and the call
# fails with a transport error that its retry mode handles, instead of waiting forever.
GRPC_KEEPALIVE_INTERVAL = 5.0
GRPC_KEEPALIVE_TIMEOUT = 5.0
_GRPC_CONFIG = Configuration(
    _keepalive_time=GRPC_KEEPALIVE_INTERVAL,
    _keepalive_timeout=GRPC_KEEPALIVE_TIMEOUT,
    _keepalive_permit_without_calls=False,  # an idle connection is not pinged
    _http2_max_pings_without_data=0,  # a quiet server stream is pinged for as long as it lasts
    _http2_min_sent_ping_interval_without_data=GRPC_KEEPALIVE_INTERVAL,
)
DEFAULT_MAX_CONCURRENT_STREAMS = 100
"""The streams one gRPC connection carries at once when the server has not (yet) said how many
it allows (HTTP/2 recommends no fewer than 100, and h2 and grpclib allow exactly that)."""
AUTH_TIMEOUT = 30.0
"""Seconds a login or renewal may wait to connect, read, write or get a pooled connection when
the client's own timeout is ``None`` (a renewal cannot be cancelled, so it needs a bound)."""
MIN_AUTH_TIMEOUT = 10.0
"""The least such timeout, whatever the client's: a renewal cut short may lose the session."""


def auth_timeout_for(timeout: float | None) -> float:
    """The timeout of a client's logins and renewals, from the timeout it was made with.

    Never a call's own (``with_options(timeout=0.5)``): the server may have spent the refresh
    token when a too-short timeout gives up on its answer, which would end the session.
    """
    return AUTH_TIMEOUT if timeout is None else max(timeout, MIN_AUTH_TIMEOUT)


_AUTH_RETRY = RetryPolicy(RetryMode.DEFAULT)  # with idempotent=False: only what was never sent
_CLOSED = "this client is closed; make a new one"
_KEY = "idempotency-key"
_NO_CREDENTIALS = (
    "this client sends no credentials: log in with `await client.login(...)`, pass token=,"
    " set AIOSDK_TOKEN, or remember a login (`aiosdk login`)"
)


class Closeable(Protocol):
    """Something to close before the pool it uses (see :attr:`Transport.closing_with`)."""

    async def aclose(self) -> None: ...


class Bootstrap(Protocol):
    """Something that must run before the first request, such as an embedded server."""

    async def start(self) -> tuple[str, Secret]:
        """Start, and return the server URL and the token to use."""
        ...

    async def stop(self) -> None:
        """Stop; called once by :meth:`Transport.aclose`."""
        ...


class GrpcDuplex:
    """One attempt of a bidirectional gRPC call, as :meth:`Transport.grpc_duplex` hands it to
    its ``run``: send requests, receive answers. Failures on the wire propagate to the request
    path, which maps and retries them."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Stream[Any, Any]) -> None:
        self._stream = stream

    async def send(self, message: Any) -> None:
        """Send one request message."""
        await self._stream.send_message(message)

    async def recv(self) -> Any:
        """The next answer; ``None`` once the server has ended the stream."""
        return await self._stream.recv_message()

    async def finish(self, *last: Any, within: float) -> bool:
        """Send ``last``, end the client's side, and wait (``within`` seconds at most) for the
        server to end the stream, dropping what it still sends; whether it ended in time and
        well. Never raises what the wire does: this is a goodbye, the stream is over anyway."""
        with anyio.move_on_after(within):
            try:
                for message in last:
                    await self._stream.send_message(message)
                await self._stream.end()
                while await self._stream.recv_message() is not None:
                    pass
            except (*_GRPC_FAILURES, errors.AiosdkError) as exc:
                log.debug("ending a gRPC stream: %s: %s", type(exc).__name__, exc)
                return False
            return True
        return False


class _GrpcConnection:
    """One grpclib channel (one HTTP/2 connection, opened on its first call) and the calls this
    client has in flight on it."""

    __slots__ = ("calls", "channel")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.calls = 0

    def has_room(self) -> bool:
        """Whether one more stream may open now, within the server's
        ``SETTINGS_MAX_CONCURRENT_STREAMS`` (:data:`DEFAULT_MAX_CONCURRENT_STREAMS` until the
        server's settings came).

        grpclib does not say: it reads h2's view of the server's settings, in attributes of
        grpclib's (the channel's protocol, its connection, and that one's h2 connection).
        """
        protocol = getattr(self.channel, "_protocol", None)
        h2 = getattr(getattr(protocol, "connection", None), "_connection", None)
        settings = getattr(h2, "remote_settings", None)
        limit = DEFAULT_MAX_CONCURRENT_STREAMS
        if settings is not None and SettingCodes.MAX_CONCURRENT_STREAMS in settings:
            limit = settings.max_concurrent_streams
        return self.calls < limit


class _GrpcChannels:
    """The gRPC connections to one endpoint.

    An HTTP/2 connection carries at most as many streams at once as the server allows
    (``SETTINGS_MAX_CONCURRENT_STREAMS``: 100 in h2 by default); grpclib makes a call past it
    wait, with no bound, until another stream ends, which a long-lived stream (a channel's
    ``Listen``) may never do. Each call therefore takes a slot on the first connection with room
    and holds it until it ends, and when all are full another connection opens. Connections stay
    until the client closes (the server closes one left idle; grpclib reconnects it on its next
    call).
    """

    __slots__ = ("_connections", "_context", "_host", "_port")

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None) -> None:
        self._host, self._port, self._context = host, port, context
        self._connections: list[_GrpcConnection] = []

    @property
    def channels(self) -> list[Channel]:
        return [connection.channel for connection in self._connections]

    def acquire(self) -> _GrpcConnection:
        """A slot for one call: release it (:meth:`release`) when the call has ended."""
        for connection in self._connections:
            if connection.has_room():
                break
        else:
            channel = Channel(self._host, self._port, ssl=self._context, config=_GRPC_CONFIG)
            connection = _GrpcConnection(channel)
            self._connections.append(connection)
            log.debug(
                "gRPC channel opened: %s:%s (%s, connection %d)",
                self._host,
                self._port,
                "TLS" if self._context is not None else "plain",
                len(self._connections),
            )
        connection.calls += 1
        return connection

    @staticmethod
    def release(connection: _GrpcConnection) -> None:
        connection.calls -= 1


class _HttpPool:
    """One httpx transport (its connection pool) and the attempts in flight on it.

    Requests go to the transport directly (``handle_async_request``, httpx's transport API):
    ``httpx.AsyncClient``'s layers above it (auth flows, redirects, cookies, event hooks) do
    nothing this client needs, and cost a seventh of its CPU per small request. A pool retired
    by :meth:`Transport.set_limits` is closed once its last attempt is done.
    """

    __slots__ = ("active", "retired", "transport")

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport
        self.active = 0
        self.retired = False


_live: weakref.WeakSet[Transport] = weakref.WeakSet()


def _abandon_inherited_pools() -> None:
    for transport in list(_live):
        transport._abandon()


forking.after_fork_in_child(_abandon_inherited_pools)


def _current_loop() -> object:
    """The running event loop: the asyncio loop, or trio's token for the current run."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return anyio.lowlevel.current_token().native_token


class Transport:
    """One client's connection pool: HTTP and gRPC, and the single path every call takes.

    The pool belongs to the event loop that first used it. A forked child abandons the pool it
    inherited, untouched (see :mod:`aiosdk._core.forking`), and opens its own.
    """

    def __init__(
        self,
        *,
        url: str | None,
        token: Secret | None,
        limits: httpx.Limits,
        verify: bool | str = True,
        http2: bool = False,
        proxy: str | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        bootstrap: Bootstrap | None = None,
        store: CredentialStore | None = None,
        remembered: bool = False,
        auth_timeout: float = AUTH_TIMEOUT,
        cache: Cache | None = None,
    ) -> None:
        self.url = url
        self.cache = cache
        """The response cache ``GET`` requests revalidate through, if any (see :mod:`.cache`)."""
        # Logins and renewals: one fixed timeout, whatever the options of the call that needs
        # them; no deadline (a renewal runs to its end, shielded from cancellation); retried
        # only where the request certainly never went out (a refresh token is sent once).
        self._auth_options = RequestOptions(retry=_AUTH_RETRY, timeout=auth_timeout)
        self._auth_send: Callable[[AuthRequest], Awaitable[Any]] | None = None
        self._auth_headers: list[tuple[str, str]] = []
        self._grpc_metadata: dict[str, str] = {}
        self.auth = Auth(
            TokenCredential(token) if token is not None else None,
            store=store,
            on_change=self._credentials_changed,
        )
        # Without a token, the login remembered for the URL (if any) is loaded on first use:
        # reading a file blocks, which a constructor called in async code must not.
        self._load_remembered = remembered and token is None and store is not None
        self._limits = limits
        self._verify = verify
        self._http2 = http2
        self._proxy = proxy
        self._user_transport = http_transport
        self._bootstrap = bootstrap
        self._started = bootstrap is None and not self._load_remembered
        self._bootstrapped = False  # the bootstrap ran, even if only partly: stop it on close
        self._closed = False
        self.closing_with: weakref.WeakSet[Closeable] = weakref.WeakSet()
        """What closes before the pool when it closes (the open ticket sessions, which tell
        the server on their way out); each one removes itself when it closes first."""
        self._loop: object | None = None
        self._pool: _HttpPool | None = None
        self._retired: list[_HttpPool] = []
        self._urls: dict[str, httpx.URL] = {}
        self._base_headers: list[tuple[str, str]] | None = None
        self._transport_name = type(http_transport).__name__ if http_transport else "auto"
        self._grpc: _GrpcChannels | None = None
        self._lock: anyio.Lock | None = None
        self._pool_lock: anyio.Lock | None = None
        self.budget = RetryBudget()
        _live.add(self)

    def __repr__(self) -> str:
        return f"<Transport url={self.url!r} http={self.http_transport_name}>"

    @property
    def http_transport_name(self) -> str:
        """The class name of the HTTP transport in use (or that will be used)."""
        return self._transport_name

    @property
    def limits(self) -> httpx.Limits:
        return self._limits

    def _credentials_changed(self, authorization: str | None) -> None:
        # What requests carry, made once per change of credentials, never per request.
        self._auth_headers = [("Authorization", authorization)] if authorization else []
        self._grpc_metadata = {"authorization": authorization} if authorization else {}

    @property
    def connected(self) -> bool:
        """Whether a connection pool (HTTP or gRPC) was opened already."""
        return self._pool is not None or self._grpc is not None or bool(self._retired)

    @property
    def _channel(self) -> Channel | None:
        """The first gRPC channel, if one was opened."""
        channels = self._grpc.channels if self._grpc is not None else []
        return channels[0] if channels else None

    def retarget(self, url: str | None = None, verify: bool | str | None = None) -> None:
        """Point the client at another server URL, or verify TLS otherwise, before it connects.

        Raises :class:`~aiosdk.ConfigurationError` once it has connected (its pool speaks to
        one server, with one TLS setting), or for an embedded client (its server is its own).
        """
        if url is not None and url != self.url:
            if self._bootstrap is not None:
                raise errors.ConfigurationError(
                    f"an embedded client talks to its own server: to log in to {url}, make a"
                    f" client of it (aiosdk.AsyncClient({url!r})) and log in there"
                )
            if self.connected:
                raise errors.ConfigurationError(
                    f"this client is connected to {self.url} already: to log in to {url}, make a"
                    f" new client (aiosdk.AsyncClient({url!r})), or pass host= before the first"
                    " call"
                )
            self.url = url
            self._urls.clear()
            self._base_headers = None
        if verify is not None and verify != self._verify:
            if self.connected:
                raise errors.ConfigurationError(
                    f"this client is connected with verify={self._verify!r} already: make a new"
                    f" client with verify={verify!r}, or log in before the first call"
                )
            self._verify = verify

    @property
    def verify(self) -> bool | str:
        """TLS verification: ``True``, ``False`` or a CA bundle path."""
        return self._verify

    def set_limits(self, limits: httpx.Limits) -> None:
        """Change the pool size; takes effect for connections opened from now on.

        httpx fixes limits when its client is built, so calls from now on get a fresh pool; the
        old one is closed as soon as the attempts still running on it are done.
        """
        if self._user_transport is not None:
            raise errors.ConfigurationError(
                "this client uses your http_transport: set its limits where you create it"
            )
        self._limits = limits
        if self._pool is not None:
            old, self._pool = self._pool, None
            old.retired = True
            self._retired.append(old)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Run the bootstrap (if any) once; concurrent callers wait for the first."""
        if self._started:
            return
        if self._closed:
            raise errors.ClientClosedError(_CLOSED)
        async with self._get_lock():
            if self._started:
                return
            if self._closed:
                raise errors.ClientClosedError(_CLOSED)
            if self._bootstrap is not None:
                self._bootstrapped = True
                self.url, token = await self._bootstrap.start()
                self.auth.use(TokenCredential(token))
            if self._load_remembered and self.url is not None:
                self._load_remembered = False
                await self.auth.load_remembered(self.url)
            self._started = True

    async def aclose(self) -> None:
        """Close the HTTP pool and the gRPC channel, then stop the bootstrap."""
        if self._closed:
            return
        for dependent in list(self.closing_with):
            await dependent.aclose()
        self._closed = True
        grpc, self._grpc = self._grpc, None
        for channel in grpc.channels if grpc is not None else []:
            _abort_channel(channel)
        pools = [*self._retired, *([self._pool] if self._pool else [])]
        self._pool, self._retired = None, []

        async def close() -> None:
            try:
                for pool in pools:
                    await pool.transport.aclose()
            finally:
                if self._bootstrap is not None and self._bootstrapped:
                    await self._bootstrap.stop()

        # Closing runs to the end even when the closer is being cancelled (a timeout around
        # ``async with``, asyncio's own Task.cancel() too): otherwise pools and the embedded
        # server would outlive the client.
        await to_the_end(close)

    def _get_lock(self) -> anyio.Lock:
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    def skip_remembered(self) -> None:
        """Do not load a remembered login on first use (a login is on its way)."""
        if self._load_remembered:
            self._load_remembered = False
            if self._bootstrap is None:
                self._started = True

    def _abandon(self) -> None:
        """In a forked child: forget the parent's pool and channel without touching them."""
        self.auth.abandon()
        channels = self._grpc.channels if self._grpc is not None else []
        forking.abandon(self._pool, *channels, *self._retired, self._lock, self._pool_lock)
        self._pool, self._grpc, self._retired = None, None, []
        self._lock = self._pool_lock = None
        self._loop = None

    def _check_loop(self) -> None:
        """Bind the pool to the running loop on first use; refuse any other loop after."""
        loop = _current_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            closed = isinstance(self._loop, asyncio.AbstractEventLoop) and self._loop.is_closed()
            raise errors.ConfigurationError(
                "this client's connections belong to the event loop that first used it"
                + (", which is closed now" if closed else ", and this is another one")
                + ": use a client in one event loop only (make one per loop, e.g. inside the"
                " function asyncio.run() runs), or use aiosdk.Client, which works from any thread"
            )

    async def _http_pool(self) -> _HttpPool:
        if self._closed:
            raise errors.ClientClosedError(_CLOSED)
        pool = self._pool
        if pool is not None and self._loop is _current_loop():
            return pool
        self._check_loop()
        if self._retired:
            await self._close_idle_retired()
        while self._pool is None:
            if self._pool_lock is None:
                self._pool_lock = anyio.Lock()
            async with self._pool_lock:  # one build at a time; the others wait and reuse it
                if self._pool is not None:
                    break
                limits = self._limits
                # The fast transport on asyncio; httpx's own for trio, HTTP/2 and proxies.
                fast = fast_transport_supported() and not self._http2
                # Building the pool loads CA certificates into SSL contexts: off the event loop.
                transport = await anyio.to_thread.run_sync(self._new_transport, fast, limits)
                if self._closed or limits is not self._limits:  # closed, or resized, meanwhile
                    if transport is not self._user_transport:
                        await transport.aclose()
                    if self._closed:
                        raise errors.ClientClosedError(_CLOSED)
                    continue
                self._pool = _HttpPool(transport)
        return self._pool

    async def _close_idle_retired(self) -> None:
        idle = [pool for pool in self._retired if not pool.active]
        self._retired = [pool for pool in self._retired if pool.active]

        async def close() -> None:
            for pool in idle:
                await pool.transport.aclose()

        if idle:  # (to the end: no longer listed, a pool left open would never be closed)
            await to_the_end(close)

    def _new_transport(self, fast: bool, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
        """The user's transport, else ours on asyncio, else httpx's (trio, HTTP/2, proxies)."""
        # A CA bundle path becomes an SSL context here, in a worker thread (loading it blocks).
        verify = _tls_context(self._verify) if isinstance(self._verify, str) else self._verify
        proxy = self._proxy or _environment_proxy(self.url)
        transport = self._user_transport or (
            AsyncioTransport(limits=limits, verify=verify)
            if fast and proxy is None
            else httpx.AsyncHTTPTransport(
                limits=limits, verify=verify, http2=self._http2, proxy=proxy
            )
        )
        self._transport_name = type(transport).__name__
        log.debug("HTTP pool opened: %s via %s", self.url, self._transport_name)
        return transport

    # -- the request path --------------------------------------------------------------------

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        idempotent: bool,
        options: RequestOptions,
        what: str,
    ) -> T:
        """Run ``attempt`` under ``options``' retry policy and deadline; the one retry loop."""
        failures: list[errors.AiosdkError] = []
        if options.deadline is None:
            await self.start()
            return await self._attempts(attempt, idempotent, options, what, None, failures)
        with anyio.move_on_after(options.deadline):
            deadline = time.monotonic() + options.deadline
            await self.start()
            return await self._attempts(attempt, idempotent, options, what, deadline, failures)
        raise errors.DeadlineExceededError(
            f"{what}: deadline of {options.deadline} s passed"
        ) from (failures[-1] if failures else None)

    async def _attempts(
        self,
        attempt: Callable[[], Awaitable[T]],
        idempotent: bool,
        options: RequestOptions,
        what: str,
        deadline: float | None,
        failures: list[errors.AiosdkError],
    ) -> T:
        # Most calls succeed at once: the first attempt runs bare, and a tenacity retryer is
        # built for the call only after a failure its mode retries.
        first_error: errors.AiosdkError | None
        try:
            result = await attempt()
        except errors.AiosdkError as exc:
            if not options.retry.is_retryable(exc, idempotent=idempotent):
                raise
            first_error = exc
            failures.append(exc)
        else:
            self.budget.refund(0)
            return result

        async def again() -> T:
            nonlocal first_error
            if first_error is not None:  # the retryer counts the failure above as attempt 1
                error, first_error = first_error, None
                raise error
            try:
                return await attempt()
            except errors.AiosdkError as exc:
                failures.append(exc)
                raise

        spent: list[int] = []
        retrying = options.retry.retrying(
            idempotent=idempotent, budget=self.budget, deadline=deadline, spent=spent
        )
        retrying.before_sleep = lambda state: _log_retry(what, state, options.retry.max_retries)
        result = await retrying(again)
        self.budget.refund(sum(spent))
        return result

    async def request(
        self,
        method: str,
        path: str,
        *,
        options: RequestOptions,
        params: Mapping[str, Any] | None = None,
        json: object = None,
        content: bytes | bytearray | memoryview | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        authenticate: bool = True,
        idempotency_key: bool = True,
    ) -> httpx.Response:
        """Send one HTTP request under ``options`` and return the read response.

        Error statuses raise the matching :class:`~aiosdk.StatusError`. Mutating methods carry an
        ``Idempotency-Key`` that stays the same across every attempt of this call, unless
        ``idempotency_key`` is false: for a ``PUT`` or ``DELETE`` whose effect is the same
        however often it is applied (a block's bytes, say), so that the server need not buffer
        and fingerprint its body nor store its answer. The request
        carries the client's credentials unless ``authenticate`` is false; a login session's
        token is renewed shortly before it expires, and a request refused with an expired one
        (401) is renewed and sent once more, within the same attempt (see :mod:`.auth`).

        The body is ``json`` (encoded, ``Content-Type: application/json``) or ``content``: raw
        bytes from any C-contiguous buffer, sent as they are (with the ``headers`` given, such as
        a ``Content-Type``) and never copied whole; the buffer must not change until the call
        returns.

        With a :attr:`cache`, a ``GET`` whose answer is stored is sent with ``If-None-Match``, and
        a ``304`` is answered with the stored body; a ``200`` with an ``ETag`` is stored. A cache
        failure is logged, never raised: the request goes on uncached.
        """
        method = method.upper()
        sent_headers = dict(headers or {})
        if not idempotency_key and method not in IDEMPOTENT_METHODS:
            raise errors.ConfigurationError(
                f"{method} {path}: only an idempotent method may go without an Idempotency-Key"
            )
        if idempotency_key and method in MUTATING_METHODS:
            sent_headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        if content is not None and json is not None:
            raise errors.ConfigurationError(f"{method} {path}: pass json= or content=, not both")
        raw = None if content is None else raw_body(content)
        auth = self.auth
        cache = self.cache if method == "GET" else None

        async def attempt() -> httpx.Response:
            pool = await self._http_pool()
            if authenticate and auth.renewal_due():
                await auth.ensure_fresh(self.auth_sender())
            replayed = False
            while True:
                generation = auth.generation
                request = self._build_request(
                    method, path, params, json, sent_headers, options, authenticate, raw
                )
                # Looked up per request built: the credentials (so the entry) may have changed.
                stored: Stored | None = None
                if cache is not None:
                    stored = await cache.lookup(request)
                    if stored is not None:
                        request.headers["If-None-Match"] = stored.etag
                response, decoded = await self._exchange(pool, request, path, _read_decoded)
                if stored is not None and response.status_code == 304 and cache is not None:
                    response = await cache.revalidated(stored, request, response)
                if response.status_code >= 300:  # redirects are not followed: none is expected
                    if (
                        response.status_code == 401
                        and authenticate
                        and not replayed
                        and await auth.recover(generation, self.auth_sender())
                    ):
                        replayed = True  # refused before it was applied: send it once more
                        continue
                    raise _status_error(response, decoded, hint=authenticate)
                if not decoded:
                    raise errors.ProtocolError(
                        f"{method} {path}: the response body cannot be decoded"
                    )
                if cache is not None:
                    await cache.settle(request, response, stored)
                return response

        return await self.call(
            attempt, idempotent=idempotent, options=options, what=f"{method} {path}"
        )

    async def download(
        self,
        method: str,
        path: str,
        *,
        options: RequestOptions,
        sink: Sink,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expected_size: int | None = None,
    ) -> httpx.Response:
        """Send one HTTP request under ``options`` and hand its body to ``sink``, span by span.

        On a 2xx answer, ``sink(offset, span)`` gets every span of the body as the transport
        read it (never joined; ``offset`` is where the span starts in the body); error statuses
        raise as :meth:`request` does. The request goes through the same path (auth, retries,
        deadline, ``Idempotency-Key`` for mutating methods), except the :attr:`cache`.

        A connection that breaks mid-body is retried by the call's retry mode: ``"forceful"``
        resumes a ``GET`` with ``Range: bytes=<received>-`` and ``If-Range: <ETag>`` when the
        answer had a strong ``ETag`` and ``Accept-Ranges: bytes`` (a ``206`` goes on at the offset
        where the body stopped; a ``200`` starts over: the sink gets offset 0 again); otherwise
        (``"default"``, or a body that cannot be resumed) the request is sent again and the sink
        gets the body from offset 0 again; ``"disabled"`` raises the
        :class:`~aiosdk.TransportError`. A request that sends its own ``Range`` is never resumed.

        ``expected_size``: the body's size the caller expects; a body of another size is a
        :class:`~aiosdk.ProtocolError` (never retried), raised before the sink gets any of it
        when the answer says its ``Content-Length``.

        Returns the answer whose body began at offset 0, for its status and headers (its
        ``content`` is empty). Cancelling the call closes its connection at once.
        """
        method = method.upper()
        sent_headers = dict(headers or {})
        if method in MUTATING_METHODS:
            sent_headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
        resumable = (
            method == "GET"
            and options.retry.mode is RetryMode.FORCEFUL
            and not any(name.lower() == "range" for name in sent_headers)
        )
        state = Download(sink, resumable=resumable, expected_size=expected_size)
        auth = self.auth

        async def attempt() -> httpx.Response:
            pool = await self._http_pool()
            if auth.renewal_due():
                await auth.ensure_fresh(self.auth_sender())
            extra = state.range_headers()
            resumed_at = state.received if extra else 0

            async def read(response: httpx.Response) -> bool:
                if response.status_code >= 300:
                    return await _read_decoded(response)  # an error's small body
                await state.receive(response, resumed_at)
                return True

            replayed = False
            while True:
                generation = auth.generation
                request = self._build_request(
                    method, path, params, None, {**sent_headers, **extra}, options
                )
                response, decoded = await self._exchange(pool, request, path, read)
                if response.status_code >= 300:
                    if (
                        response.status_code == 401
                        and not replayed
                        and await auth.recover(generation, self.auth_sender())
                    ):
                        replayed = True  # refused before it was applied: send it once more
                        continue
                    raise _status_error(response, decoded)
                assert state.response is not None  # (a 2xx answer starts or continues a body)
                return state.response

        response = await self.call(
            attempt,
            idempotent=method in IDEMPOTENT_METHODS,
            options=options,
            what=f"{method} {path}",
        )
        if state.mismatch is not None:
            raise errors.ProtocolError(f"{method} {path}: {state.mismatch}")
        response._content = b""  # (where httpx keeps a read body, as in _read)
        return response

    async def _exchange(
        self,
        pool: _HttpPool,
        request: httpx.Request,
        path: str,
        read: Callable[[httpx.Response], Awaitable[bool]],
    ) -> tuple[httpx.Response, bool]:
        """Send ``request`` on ``pool`` and ``read`` its answer; the answer, and whether its body
        could be decoded.

        Failures on the wire, sending or reading, become the SDK's transport errors; an answer
        left unread (a failure, a cancellation) is closed at once, so that its connection is
        never reused.
        """
        method = request.method
        started = time.perf_counter()
        pool.active += 1
        try:
            response = await pool.transport.handle_async_request(request)
            response.request = request
            try:
                decoded = await read(response)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
                raise
        except httpx.TransportError as exc:
            if self._closed:
                raise errors.ClientClosedError(f"{method} {path}: {_CLOSED}") from exc
            raise _map_httpx_error(exc, method, path) from exc
        finally:
            pool.active -= 1
            if pool.retired and not pool.active and self._retired:
                await self._close_idle_retired()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d in %.1f ms (request id %s)",
                method,
                path,
                response.status_code,
                (time.perf_counter() - started) * 1e3,
                response.headers.get("x-request-id"),
            )
        return response, decoded

    def _build_request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: object,
        headers: dict[str, str],
        options: RequestOptions,
        authenticate: bool = True,
        raw: bytes | ContentStream | None = None,
    ) -> httpx.Request:
        # What httpx's build_request does, minus the merging this client never needs (cookies,
        # client-level params) and with each path's URL parsed once: half of httpx's CPU per call.
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            url = self._urls[path] = httpx.URL(f"{self.url}{API_PREFIX}{path}")
        if params:
            url = url.copy_merge_params(params)
        base = self._base_headers
        if base is None:
            base = self._base_headers = self._request_headers(url)
        if headers:
            given = {name.lower() for name in headers}
            if not given.isdisjoint(_OVERRIDABLE):
                base = [(name, value) for name, value in base if name.lower() not in given]
        credentials = self._auth_headers if authenticate else ()
        request_headers = [*base, *credentials, *headers.items()]
        content: bytes | None = None
        stream: ContentStream | None = None
        if isinstance(raw, ContentStream):  # (httpx adds no Content-Length to a stream)
            stream = raw
            request_headers.append(("Content-Length", str(raw.size)))
        elif raw is not None:
            content = raw
        elif body is not None:
            content = jsonlib.dumps(
                body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            request_headers.append(("Content-Type", "application/json"))
        timeout = options.timeout
        extensions = {
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        }
        return httpx.Request(
            method,
            url,
            headers=request_headers,
            content=content,
            stream=stream,
            extensions=extensions,
        )

    def _request_headers(self, url: httpx.URL) -> list[tuple[str, str]]:
        # The same on every request, so made once: Host (httpx would work it out per request).
        # The credentials' header is made once per change of credentials (no httpx auth flow,
        # a generator per request, for what is nearly always a constant).
        return [("Host", url.netloc.decode("ascii")), *_DEFAULT_HEADERS]

    @property
    def auth_timeout(self) -> float | None:
        """The timeout of logins and renewals (see :func:`auth_timeout_for`)."""
        return self._auth_options.timeout

    def auth_sender(self) -> Callable[[AuthRequest], Awaitable[Any]]:
        """How :class:`~.auth.Auth` sends its requests: this path, without credentials.

        Whatever the options of the call that needs it, a login or a renewal has the client's
        own timeout (at least :data:`MIN_AUTH_TIMEOUT`), no deadline (the call may be cancelled
        meanwhile: a renewal runs on, shielded), and is retried only where it certainly never
        reached the server: a renewal that was applied spent the refresh token, and the server
        takes a second use for a stolen token's (it replays no answer of these public routes,
        ``Idempotency-Key`` or not). It is never sent again once it may have gone out.
        """
        send = self._auth_send
        if send is None:
            send = self._auth_send = self._make_auth_sender()
        return send

    def _make_auth_sender(self) -> Callable[[AuthRequest], Awaitable[Any]]:
        auth_options = self._auth_options

        async def send(request: AuthRequest) -> Any:
            response = await self.request(
                request.method,
                request.path,
                json=request.body,
                options=auth_options,
                idempotent=False,
                authenticate=False,
            )
            try:
                return response.json()
            except ValueError as exc:
                raise errors.ProtocolError(
                    f"{request.method} {request.path}: the answer is not JSON"
                ) from exc

        return send

    # -- gRPC --------------------------------------------------------------------------------

    def _check_grpc_backend(self) -> None:
        if sniffio.current_async_library() != "asyncio":
            raise errors.UnsupportedBackendError(
                "gRPC features need the asyncio backend (grpclib is asyncio-only); "
                "HTTP features also work under trio"
            )

    async def _grpc_slot(self, options: RequestOptions) -> _GrpcConnection:
        """A slot for one gRPC call on a connection with room (see :class:`_GrpcChannels`), the
        first opened where ``GET /api/v1/`` says gRPC listens; release it with
        :meth:`_GrpcChannels.release` when the call has ended."""
        if self._closed:
            raise errors.ClientClosedError(_CLOSED)
        if self._grpc is not None and self._loop is _current_loop():
            return self._grpc.acquire()
        self._check_loop()
        async with self._get_lock():
            if self._grpc is None:
                host, port, tls = await self._discover_grpc(options)
                if self.url is not None and httpx.URL(self.url).scheme == "https" and not tls:
                    # The server's HTTP is private; its gRPC would not be: keep the token safe.
                    raise errors.ConfigurationError(
                        "the server offers gRPC without TLS although its URL is https://;"
                        " refusing to send the token in plaintext"
                    )
                # Loading CA certificates blocks: off the event loop, as for HTTP.
                context = await anyio.to_thread.run_sync(self._grpc_ssl_context) if tls else None
                if self._closed:
                    raise errors.ClientClosedError(_CLOSED)
                self._grpc = _GrpcChannels(host, port, context)
            return self._grpc.acquire()

    def _grpc_ssl_context(self) -> ssl.SSLContext:
        """TLS for gRPC, verified like the HTTP side (``verify=``), speaking HTTP/2."""
        context = _tls_context(self._verify)
        context.set_alpn_protocols(["h2"])
        return context

    async def _discover_grpc(self, options: RequestOptions) -> tuple[str, int, bool]:
        # One attempt: the gRPC call's retry loop and deadline cover this discovery. Its
        # failures never sent the gRPC call, so they are marked so (any call may retry them).
        once = replace(options, retry=replace(options.retry, mode=RetryMode.DISABLED))
        try:
            return _grpc_endpoint((await self.request("GET", "/", options=once)).json())
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.ProtocolError(
                f"GET /: the server named no usable gRPC endpoint ({type(exc).__name__}: {exc})"
            ) from exc
        except errors.StatusError as exc:
            if exc.status_code < 500 and exc.status_code not in (408, 429):
                raise  # refused (a bad token, say): the gRPC call would be refused the same
            raise errors.ConnectError(
                f"cannot find the gRPC endpoint: {exc}", request_sent=False
            ) from exc
        except errors.TransportError as exc:
            raise errors.ConnectError(
                f"cannot find the gRPC endpoint: {exc}", request_sent=False
            ) from exc

    async def grpc_unary(
        self,
        stub_cls: Callable[..., StubT],
        invoke: Callable[[StubT], Awaitable[T]],
        *,
        idempotent: bool,
        options: RequestOptions,
        what: str,
        login_hint: bool = True,
    ) -> T:
        """One unary gRPC call through the request path (auth, retries, deadline, errors).

        A call that is not ``idempotent`` carries an ``idempotency-key`` (the same on every
        attempt), which the server honours: ``"forceful"`` may retry it without applying it twice.
        ``login_hint=False``: a call that needs no login (its request carries its own
        credential, as a channel token), whose refusals say nothing about logging in.
        """
        self._check_grpc_backend()
        key = None if idempotent else uuid.uuid4().hex
        auth = self.auth

        async def attempt() -> T:
            slot = await self._grpc_slot(options)
            try:
                channel = slot.channel
                if auth.renewal_due():
                    await auth.ensure_fresh(self.auth_sender())
                replayed = False
                while True:
                    generation = auth.generation
                    sent = self._grpc_metadata
                    metadata = sent if key is None else {**sent, _KEY: key}
                    stub = stub_cls(channel, metadata=metadata, timeout=options.timeout)
                    try:
                        return await invoke(stub)
                    except _GRPC_FAILURES as exc:
                        if (
                            not replayed
                            and isinstance(exc, GRPCError)
                            and exc.status is Status.UNAUTHENTICATED
                            and await auth.recover(generation, self.auth_sender())
                        ):
                            replayed = True  # refused before it was applied: send it once more
                            continue
                        raise self._grpc_error(exc, what, sent, login_hint) from exc
            finally:
                _GrpcChannels.release(slot)

        return await self.call(attempt, idempotent=idempotent, options=options, what=what)

    async def grpc_stream(
        self,
        stub_cls: Callable[..., StubT],
        open_stream: Callable[[StubT, T | None], AsyncIterator[T]],
        *,
        idempotent: bool,
        options: RequestOptions,
        what: str,
        resumable: bool = False,
        login_hint: bool = True,
    ) -> AsyncIterator[T]:
        """Items of a server-streaming gRPC call, retried under ``options``.

        ``open_stream(stub, last)`` opens the stream; ``last`` is the last item received before an
        interruption, so the call can resume after it. A stream that already delivered items is
        resumed only in ``"forceful"`` mode, or in every mode that retries when ``resumable``
        (``open_stream`` resumes exactly after ``last``, by a position the server keeps);
        otherwise its failure is raised. ``login_hint`` as for :meth:`grpc_unary`.
        """
        self._check_grpc_backend()
        options = _unkeyed_stream(options, idempotent)
        await self.start()
        last: T | None = None
        delivered = 0
        spent: list[int] = []
        resumable = resumable or options.retry.mode is RetryMode.FORCEFUL
        retrying = options.retry.retrying(
            idempotent=idempotent,
            budget=self.budget,
            deadline=None if options.deadline is None else time.monotonic() + options.deadline,
            spent=spent,
            allow=lambda: resumable or not delivered,
        )
        retrying.before_sleep = lambda state: _log_retry(what, state, options.retry.max_retries)
        auth = self.auth
        async for attempt in retrying:
            with attempt:
                slot = await self._grpc_slot(options)
                try:
                    channel = slot.channel
                    if auth.renewal_due():
                        await auth.ensure_fresh(self.auth_sender())
                    replayed = False
                    while True:
                        generation = auth.generation
                        sent = self._grpc_metadata
                        stub = stub_cls(channel, metadata=sent)
                        items = open_stream(stub, last)
                        progressed = False
                        try:
                            async for item in items:
                                last, delivered = item, delivered + 1
                                if not progressed:
                                    # Progress: a later interruption starts a fresh count of
                                    # retries, and the budget gets back what the reconnections
                                    # spent (or one token, once per attempt that delivered, as for
                                    # a successful call).
                                    progressed = True
                                    attempt.retry_state.attempt_number = 1
                                    self.budget.refund(sum(spent))
                                    spent.clear()
                                yield item
                        except _GRPC_FAILURES as exc:
                            if (
                                not progressed
                                and not replayed
                                and isinstance(exc, GRPCError)
                                and exc.status is Status.UNAUTHENTICATED
                                and await auth.recover(generation, self.auth_sender())
                            ):
                                replayed = True  # refused at the start: open it once more
                                continue
                            raise self._grpc_error(exc, what, sent, login_hint) from exc
                        finally:
                            aclose = getattr(items, "aclose", None)
                            if aclose is not None:
                                await aclose()
                        break
                finally:
                    _GrpcChannels.release(slot)
                if not progressed:  # an empty stream that ended well is a successful call
                    self.budget.refund(sum(spent))

    async def grpc_duplex(
        self,
        route: str,
        request_type: type[Any],
        response_type: type[Any],
        run: Callable[[GrpcDuplex], AsyncIterator[T]],
        *,
        options: RequestOptions,
        what: str,
        resumable: bool = False,
        progress: Callable[[T], bool] | None = None,
        login_hint: bool = True,
    ) -> AsyncIterator[T]:
        """Items of a bidirectional gRPC call (``route``), retried under ``options``.

        Each attempt opens the stream and hands it to ``run(duplex)``, an async generator that
        sends and receives on it (:class:`GrpcDuplex`) and yields items. It goes through the
        same path as :meth:`grpc_stream`: auth (and one replay after a renewed login), the
        retry mode, budget and deadline, error mapping. An attempt that delivered ``progress``
        items (every item, by default) starts a fresh count of retries. A stream that already
        delivered items is opened again only when ``resumable`` (``run`` resumes by a position
        the server keeps) or in ``"forceful"`` mode; streams carry no idempotency key.
        """
        self._check_grpc_backend()
        await self.start()
        delivered = 0
        spent: list[int] = []
        resumable = resumable or options.retry.mode is RetryMode.FORCEFUL
        retrying = options.retry.retrying(
            idempotent=True,
            budget=self.budget,
            deadline=None if options.deadline is None else time.monotonic() + options.deadline,
            spent=spent,
            allow=lambda: resumable or not delivered,
        )
        retrying.before_sleep = lambda state: _log_retry(what, state, options.retry.max_retries)
        auth = self.auth
        async for attempt in retrying:
            with attempt:
                slot = await self._grpc_slot(options)
                try:
                    channel = slot.channel
                    if auth.renewal_due():
                        await auth.ensure_fresh(self.auth_sender())
                    replayed = False
                    while True:
                        generation = auth.generation
                        sent = self._grpc_metadata
                        progressed = False
                        try:
                            async with channel.request(
                                route,
                                Cardinality.STREAM_STREAM,
                                request_type,
                                response_type,
                                metadata=sent,
                            ) as stream:
                                await stream.send_request()
                                items = run(GrpcDuplex(stream))
                                try:
                                    async for item in items:
                                        if not progressed and (progress is None or progress(item)):
                                            # Progress: as in grpc_stream.
                                            progressed = True
                                            delivered += 1
                                            attempt.retry_state.attempt_number = 1
                                            self.budget.refund(sum(spent))
                                            spent.clear()
                                        yield item
                                finally:
                                    aclose = getattr(items, "aclose", None)
                                    if aclose is not None:
                                        await aclose()
                        except _GRPC_FAILURES as exc:
                            if (
                                not progressed
                                and not replayed
                                and isinstance(exc, GRPCError)
                                and exc.status is Status.UNAUTHENTICATED
                                and await auth.recover(generation, self.auth_sender())
                            ):
                                replayed = True  # refused at the start: open it once more
                                continue
                            raise self._grpc_error(exc, what, sent, login_hint) from exc
                        break
                finally:
                    _GrpcChannels.release(slot)
                if not progressed:  # a stream that ended well is a successful call
                    self.budget.refund(sum(spent))

    def _grpc_error(
        self, exc: BaseException, what: str, sent: Mapping[str, str], login_hint: bool = True
    ) -> errors.AiosdkError:
        if self._closed and not isinstance(exc, GRPCError):
            return errors.ClientClosedError(f"{what}: {_CLOSED}")
        credentials = sent.get("authorization")
        error = _map_grpc_error(exc, what, bool(credentials and credentials.startswith("Bearer ")))
        if isinstance(error, errors.AuthenticationError) and not credentials and login_hint:
            error.message = f"{error.message}: {_NO_CREDENTIALS}"
            error.args = (error.message,)
        return error


async def _read_decoded(response: httpx.Response) -> bool:
    """Read the body (see :func:`_read`); False if it cannot be decoded (the response is
    closed then, and its status still counts: a 503 is retried all the same)."""
    try:
        await _read(response)
    except httpx.DecodingError:
        await response.aclose()
        return False
    return True


async def _read(response: httpx.Response) -> None:
    """Read the body, as ``response.aread()`` does.

    An identity-encoded body (what the API sends: the client asks for no compression) is
    joined from the stream's spans directly, skipping httpx's decoder and chunker generators:
    about a twentieth of the client's CPU per small request. (``_content`` is where httpx 0.28,
    the pinned release, keeps a read body.)
    """
    stream = response.stream
    if "content-encoding" in response.headers or not isinstance(stream, httpx.AsyncByteStream):
        await response.aread()
        return
    try:
        response._content = b"".join([span async for span in stream])
    finally:
        await response.aclose()


def _environment_proxy(url: str | None) -> str | None:
    """The proxy ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` name for ``url``, unless
    ``NO_PROXY`` exempts its host (as httpx does with ``trust_env``)."""
    if url is None:
        return None
    parsed = httpx.URL(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parsed.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parsed.host):
        return None
    return proxy


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """A new client SSL context: verifying with the system's CAs (``True``), with the CA bundle
    file or directory ``verify`` names, or not at all (``False``). Blocks: call it in a thread."""
    if not isinstance(verify, str):
        return httpx.create_ssl_context(verify=verify)
    try:
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise errors.ConfigurationError(
            f"verify={verify!r} is not a usable CA bundle: {exc}"
        ) from exc


def _abort_channel(channel: Channel) -> None:
    """Close a gRPC channel's connection now, for good.

    ``Channel.close()`` closes its socket gracefully, after the write buffer drains and, over
    TLS, after the peer answers the close: a peer that reads no more (it refused an oversized
    message) or an event loop that stops first leaves the socket open until the garbage
    collector finds it. The client is closing: the connection is aborted instead. (grpclib keeps
    the connection's protocol, and the protocol its asyncio transport, in attributes of theirs.)
    """
    protocol = getattr(channel, "_protocol", None)
    transport = getattr(getattr(protocol, "connection", None), "_transport", None)
    channel.close()
    if isinstance(transport, asyncio.Transport):
        transport.abort()


def _grpc_endpoint(info: Any) -> tuple[str, int, bool]:
    """Host, port and whether TLS is on, from ``GET /api/v1/``'s answer."""
    grpc = info["grpc"]
    host, port, tls = str(grpc["host"]), int(grpc["port"]), grpc.get("tls", False)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    if not isinstance(tls, bool):
        raise TypeError(f"tls is {tls!r}, not a boolean")
    return host, port, tls


def _unkeyed_stream(options: RequestOptions, idempotent: bool) -> RequestOptions:
    """The options for a streaming call: streams carry no idempotency key.

    ``"forceful"`` may retry a mutating call only because the server applies a keyed request
    once; the server keys unary calls only, so a stream that is not idempotent gets
    ``"default"``'s rules: retried only where it cannot have reached the server.
    """
    if idempotent or options.retry.mode is not RetryMode.FORCEFUL:
        return options
    return replace(options, retry=replace(options.retry, mode=RetryMode.DEFAULT))


def _log_retry(what: str, state: Any, max_retries: int) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.info(
        "%s failed (%s); retry %d of %d in %.2f s",
        what,
        error,
        state.attempt_number,
        max_retries,
        state.upcoming_sleep,
    )


def _map_httpx_error(exc: httpx.TransportError, method: str, path: str) -> errors.AiosdkError:
    what = f"{method} {path}: {type(exc).__name__}: {exc or 'no detail'}"
    if isinstance(exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol)):
        # The request could not even be written (a header with a newline, an unknown scheme):
        # every attempt would fail the same way, so it is the caller's to fix, never retried.
        return errors.ConfigurationError(f"{what} (the request cannot be sent as it is)")
    if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
        return errors.TimeoutError(what, request_sent=False)
    if isinstance(exc, httpx.TimeoutException):
        return errors.TimeoutError(what)
    if isinstance(exc, httpx.ConnectError):
        return errors.ConnectError(what, request_sent=False)
    if isinstance(exc, httpx.ProtocolError | httpx.NetworkError):
        return errors.ProtocolError(what)
    return errors.TransportError(what)


# What a gRPC call can fail with on the wire; anything else is a bug to surface, not to retry.
_GRPC_FAILURES = (GRPCError, StreamTerminatedError, H2ProtocolError, OSError, TimeoutError)


def _map_grpc_error(exc: BaseException, what: str, token_sent: bool) -> errors.AiosdkError:
    if isinstance(exc, GRPCError):
        return errors.error_for_grpc_status(exc.status, exc.message, token_sent=token_sent)
    detail = f"{what}: {type(exc).__name__}: {exc or 'no detail'}"
    if isinstance(exc, (ConnectionRefusedError, ssl.SSLError)):  # (a TLS handshake failed)
        return errors.ConnectError(detail, request_sent=False)
    if isinstance(exc, TimeoutError):
        return errors.TimeoutError(detail)
    return errors.ProtocolError(detail)


def _status_error(
    response: httpx.Response, decoded: bool, *, hint: bool = True
) -> errors.StatusError:
    request_id = response.headers.get("x-request-id")
    body: object = None
    message = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        body = response.json() if decoded else None
    except ValueError:
        text = response.text.strip()
        if text:
            message = text[:500]
    if response.is_redirect:
        message = f"unexpected redirect to {response.headers.get('location')!r}"
    error_type = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = str(body["error"].get("message") or message)
        request_id = request_id or body["error"].get("request_id")
        error_type = body["error"].get("type")
    if response.status_code == 401:
        credentials = response.request.headers.get("authorization")
        if credentials is None:
            if hint:  # a call of a client that has not logged in
                message = f"{message}: {_NO_CREDENTIALS}"
        elif credentials.startswith("Bearer "):
            error_type = "invalid_token"  # a token was sent and refused: unknown, revoked, expired
    return errors.error_for_http_status(
        response.status_code,
        message,
        request_id=request_id,
        body=body,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        error_type=error_type if isinstance(error_type, str) else None,
    )
