"""The shared pool and the one request path.

A :class:`Transport` owns one ``httpx.AsyncClient`` and one lazily opened grpclib ``Channel``; every
service object of a client sends through it. :meth:`Transport.request` and the ``grpc_*`` methods
apply the same things in the same order: bootstrap (embedded server), auth, ``Idempotency-Key``,
a retryer built for the call, the overall deadline, error mapping and logging.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import anyio
import httpx
import sniffio
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError
from h2.exceptions import ProtocolError as H2ProtocolError

from .._version import __version__
from . import errors
from .http11 import AsyncioTransport, fast_transport_supported
from .options import RequestOptions
from .retry import RetryBudget, RetryMode, parse_retry_after
from .secrets import Secret

__all__ = ["Bootstrap", "Transport"]

log = logging.getLogger("aiosdk")

T = TypeVar("T")
StubT = TypeVar("StubT")

_URL_CACHE_SIZE = 1024
_DEFAULT_HEADERS = (
    ("Accept", "application/json"),
    ("User-Agent", f"aiosdk/{__version__} httpx/{httpx.__version__}"),
)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Bootstrap(Protocol):
    """Something that must run before the first request, such as an embedded server."""

    async def start(self) -> tuple[str, Secret]:
        """Start, and return the server URL and the token to use."""
        ...

    async def stop(self) -> None:
        """Stop; called once by :meth:`Transport.aclose`."""
        ...


class BearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer <token>`` to every request (an httpx auth flow)."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request


class _NoCookies(httpx.Cookies):
    """A cookie jar that stays empty."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


class _HttpClient(httpx.AsyncClient):
    """httpx's client without a cookie jar.

    The API authenticates with bearer tokens and sets no cookies, while httpx's jar wraps every
    response in urllib objects to look for them: about a fifth of the client's CPU per request.
    """

    _jar = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("aiosdk's HTTP client keeps no cookies")


class Transport:
    """One client's connection pool: HTTP and gRPC, and the single path every call takes."""

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
    ) -> None:
        self.url = url
        self._token = token
        self._limits = limits
        self._verify = verify
        self._http2 = http2
        self._proxy = proxy
        self._user_transport = http_transport
        self._bootstrap = bootstrap
        self._started = bootstrap is None
        self._closed = False
        self._pid = os.getpid()
        self._http: httpx.AsyncClient | None = None
        self._retired: list[httpx.AsyncClient] = []
        self._urls: dict[str, httpx.URL] = {}
        self._transport_name = type(http_transport).__name__ if http_transport else "auto"
        self._channel: Channel | None = None
        self._grpc_metadata: dict[str, str] = {}
        self._lock: anyio.Lock | None = None
        self._pool_lock: anyio.Lock | None = None
        self.budget = RetryBudget()

    def __repr__(self) -> str:
        return f"<Transport url={self.url!r} http={self.http_transport_name}>"

    @property
    def http_transport_name(self) -> str:
        """The class name of the HTTP transport in use (or that will be used)."""
        return self._transport_name

    @property
    def limits(self) -> httpx.Limits:
        return self._limits

    def set_limits(self, limits: httpx.Limits) -> None:
        """Change the pool size; takes effect for connections opened from now on."""
        if self._user_transport is not None:
            raise errors.ConfigurationError(
                "this client uses your http_transport: set its limits where you create it"
            )
        self._limits = limits
        if self._http is not None:
            # httpx fixes limits when the client is built: swap in a fresh pool for new calls.
            old, self._http = self._http, None
            self._retired.append(old)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Run the bootstrap (if any) once; concurrent callers wait for the first."""
        if self._started:
            return
        async with self._get_lock():
            if self._started:
                return
            if self._closed:
                raise errors.ConfigurationError("this client is closed")
            assert self._bootstrap is not None
            self.url, self._token = await self._bootstrap.start()
            self._started = True

    async def aclose(self) -> None:
        """Close the HTTP pool and the gRPC channel, then stop the bootstrap."""
        if self._closed:
            return
        self._closed = True
        self._check_fork()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        clients = [*self._retired, *([self._http] if self._http else [])]
        self._http, self._retired = None, []
        # Closing runs to the end even when the closer is being cancelled (a timeout around
        # ``async with``): otherwise pools and the embedded server would outlive the client.
        with anyio.CancelScope(shield=True):
            try:
                for client in clients:
                    await client.aclose()
            finally:
                if self._bootstrap is not None and self._started:
                    await self._bootstrap.stop()

    def _get_lock(self) -> anyio.Lock:
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    def _check_fork(self) -> None:
        # A forked child must not touch the parent's sockets or loop: start from a fresh pool.
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._http, self._channel, self._retired = None, None, []
            self._lock = self._pool_lock = None

    async def _http_client(self) -> httpx.AsyncClient:
        self._check_fork()
        if self._closed:
            raise errors.ConfigurationError("this client is closed")
        while self._http is None:
            if self._pool_lock is None:
                self._pool_lock = anyio.Lock()
            async with self._pool_lock:  # one build at a time; the others wait and reuse it
                if self._http is not None:
                    break
                limits = self._limits
                # The fast transport on asyncio; httpx's own for trio, HTTP/2 and proxies.
                fast = fast_transport_supported() and not self._http2 and self._proxy is None
                # Building the pool loads CA certificates into SSL contexts: off the event loop.
                client = await anyio.to_thread.run_sync(self._new_http_client, fast, limits)
                if self._closed or limits is not self._limits:  # closed, or resized, meanwhile
                    await client.aclose()
                    if self._closed:
                        raise errors.ConfigurationError("this client is closed")
                    continue
                self._http = client
        return self._http

    def _new_http_client(self, fast: bool, limits: httpx.Limits) -> httpx.AsyncClient:
        transport = self._user_transport or (
            AsyncioTransport(limits=limits, verify=self._verify)
            if fast
            else httpx.AsyncHTTPTransport(
                limits=limits, verify=self._verify, http2=self._http2, proxy=self._proxy
            )
        )
        self._transport_name = type(transport).__name__
        log.debug("HTTP pool opened: %s via %s", self.url, self._transport_name)
        return _HttpClient(
            auth=BearerAuth(self._token) if self._token else None,
            limits=limits,
            verify=self._verify,
            transport=transport,
        )

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
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send one HTTP request under ``options`` and return the read response.

        Error statuses raise the matching :class:`~aiosdk.StatusError`. Mutating methods carry an
        ``Idempotency-Key`` that stays the same across every attempt of this call.
        """
        method = method.upper()
        sent_headers = dict(headers or {})
        if method in MUTATING_METHODS:
            sent_headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS

        async def attempt() -> httpx.Response:
            client = await self._http_client()
            started = time.perf_counter()
            request = self._build_request(method, path, params, json, sent_headers, options)
            decoded = True
            try:
                response = await client.send(request, stream=True)
                try:
                    await response.aread()
                except httpx.DecodingError:
                    decoded = False  # the status still counts: a 503 is retried all the same
                    await response.aclose()
                except BaseException:
                    await response.aclose()
                    raise
            except httpx.TransportError as exc:
                raise _map_httpx_error(exc, method, path) from exc
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s -> %d in %.1f ms (request id %s)",
                    method,
                    path,
                    response.status_code,
                    (time.perf_counter() - started) * 1e3,
                    response.headers.get("x-request-id"),
                )
            if response.status_code >= 300:  # redirects are not followed: none is expected
                raise _status_error(response, decoded)
            if not decoded:
                raise errors.ProtocolError(f"{method} {path}: the response body cannot be decoded")
            return response

        return await self.call(
            attempt, idempotent=idempotent, options=options, what=f"{method} {path}"
        )

    def _build_request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: object,
        headers: dict[str, str],
        options: RequestOptions,
    ) -> httpx.Request:
        # What httpx's build_request does, minus the merging this client never needs (cookies,
        # client-level params) and with each path's URL parsed once: half of httpx's CPU per call.
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            url = self._urls[path] = httpx.URL(f"{self.url}/api/v1{path}")
        if params:
            url = url.copy_merge_params(params)
        request_headers = [*_DEFAULT_HEADERS, *headers.items()]
        content = None
        if body is not None:
            content = jsonlib.dumps(
                body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            request_headers.append(("Content-Type", "application/json"))
        timeout = options.timeout
        extensions = {
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        }
        return httpx.Request(
            method, url, headers=request_headers, content=content, extensions=extensions
        )

    # -- gRPC --------------------------------------------------------------------------------

    def _check_grpc_backend(self) -> None:
        if sniffio.current_async_library() != "asyncio":
            raise errors.UnsupportedBackendError(
                "gRPC features need the asyncio backend (grpclib is asyncio-only); "
                "HTTP features also work under trio"
            )
        if self.url is not None and httpx.URL(self.url).scheme == "https":
            # The channel would be plaintext: never send the token that way.
            raise errors.ConfigurationError(
                "gRPC over TLS is not supported yet; the gRPC features need an http:// server"
            )

    async def _grpc_channel(self, options: RequestOptions) -> Channel:
        """The gRPC channel, opened on first use where ``GET /api/v1/`` says it listens."""
        self._check_fork()
        if self._channel is None:
            async with self._get_lock():
                if self._channel is None:
                    host, port = await self._discover_grpc(options)
                    if self._closed:
                        raise errors.ConfigurationError("this client is closed")
                    self._channel = Channel(host, port)
                    token = self._token.reveal() if self._token else None
                    self._grpc_metadata = {"authorization": f"Bearer {token}"} if token else {}
                    log.debug("gRPC channel opened: %s:%s", host, port)
        return self._channel

    async def _discover_grpc(self, options: RequestOptions) -> tuple[str, int]:
        # One attempt: the gRPC call's retry loop and deadline cover this discovery. Its
        # failures never sent the gRPC call, so they are marked so (any call may retry them).
        once = replace(options, retry=replace(options.retry, mode=RetryMode.DISABLED))
        try:
            info = (await self.request("GET", "/", options=once)).json()
            return str(info["grpc"]["host"]), int(info["grpc"]["port"])
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
    ) -> T:
        """One unary gRPC call through the request path (auth, retries, deadline, errors)."""
        self._check_grpc_backend()
        options = _unkeyed(options, idempotent)

        async def attempt() -> T:
            channel = await self._grpc_channel(options)
            stub = stub_cls(channel, metadata=self._grpc_metadata, timeout=options.timeout)
            try:
                return await invoke(stub)
            except _GRPC_FAILURES as exc:
                raise _map_grpc_error(exc, what, bool(self._grpc_metadata)) from exc

        return await self.call(attempt, idempotent=idempotent, options=options, what=what)

    async def grpc_stream(
        self,
        stub_cls: Callable[..., StubT],
        open_stream: Callable[[StubT, T | None], AsyncIterator[T]],
        *,
        idempotent: bool,
        options: RequestOptions,
        what: str,
    ) -> AsyncIterator[T]:
        """Items of a server-streaming gRPC call, retried under ``options``.

        ``open_stream(stub, last)`` opens the stream; ``last`` is the last item received before an
        interruption, so the call can resume after it. A stream that already delivered items is
        resumed only in ``"forceful"`` mode; otherwise its failure is raised.
        """
        self._check_grpc_backend()
        options = _unkeyed(options, idempotent)
        await self.start()
        last: T | None = None
        delivered = 0
        spent: list[int] = []
        resumable = options.retry.mode is RetryMode.FORCEFUL
        retrying = options.retry.retrying(
            idempotent=idempotent,
            budget=self.budget,
            deadline=None if options.deadline is None else time.monotonic() + options.deadline,
            spent=spent,
            allow=lambda: resumable or not delivered,
        )
        retrying.before_sleep = lambda state: _log_retry(what, state, options.retry.max_retries)
        async for attempt in retrying:
            with attempt:
                channel = await self._grpc_channel(options)
                stub = stub_cls(channel, metadata=self._grpc_metadata)
                items = open_stream(stub, last)
                try:
                    async for item in items:
                        last, delivered = item, delivered + 1
                        # Progress: a later interruption starts a fresh count of retries, and
                        # what the earlier ones spent of the client's retry budget comes back.
                        attempt.retry_state.attempt_number = 1
                        self.budget.refund(sum(spent))
                        spent.clear()
                        yield item
                except _GRPC_FAILURES as exc:
                    raise _map_grpc_error(exc, what, bool(self._grpc_metadata)) from exc
                finally:
                    aclose = getattr(items, "aclose", None)
                    if aclose is not None:
                        await aclose()
        self.budget.refund(sum(spent))


def _unkeyed(options: RequestOptions, idempotent: bool) -> RequestOptions:
    """The options for a call that carries no idempotency key (gRPC, for now).

    ``"forceful"`` may retry a mutating call only because the server applies a keyed request
    once; without a key, such a call gets ``"default"``'s rules: retried only where it cannot
    have reached the server.
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


def _map_httpx_error(exc: httpx.TransportError, method: str, path: str) -> errors.TransportError:
    what = f"{method} {path}: {type(exc).__name__}: {exc or 'no detail'}"
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
    if isinstance(exc, ConnectionRefusedError):
        return errors.ConnectError(detail, request_sent=False)
    if isinstance(exc, TimeoutError):
        return errors.TimeoutError(detail)
    return errors.ProtocolError(detail)


def _status_error(response: httpx.Response, decoded: bool) -> errors.StatusError:
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
    if response.status_code == 401 and "authorization" in response.request.headers:
        error_type = "invalid_token"  # a token was sent and refused: unknown, revoked or expired
    return errors.error_for_http_status(
        response.status_code,
        message,
        request_id=request_id,
        body=body,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        error_type=error_type if isinstance(error_type, str) else None,
    )
