"""Authentication on the one request path: the credentials sent, and keeping a session fresh.

The flows are sans-I/O generators, as httpx's auth flows are: a flow yields the
:class:`AuthRequest` it wants sent and receives the decoded answer (or has the error thrown in),
and returns what it made. :func:`password_login`, :func:`token_login` and :func:`refresh` are
the flows; :func:`run` drives one over a ``send`` function, which the transport supplies (its
own request path, without credentials). The flows know the protocol and nothing of I/O; the
driver knows I/O and nothing of the protocol.

:class:`Auth` is what one transport (one pool, shared by a client and its
:meth:`~aiosdk.AsyncClient.with_options` twins) authenticates with. The transport reads
:attr:`Auth.authorization` when it builds a request (an attribute: nothing is computed per
request) and asks :class:`Auth` in two cases only:

- before sending, if a session's access token is about to expire (:meth:`Auth.ensure_fresh`);
- after a 401 (HTTP) or ``UNAUTHENTICATED`` (gRPC) to a request sent with a session's token
  (:meth:`Auth.recover`): the session is renewed and the request sent once more.

A renewal is single-flight: however many calls ask at once, one ``POST /auth/refresh`` goes
out, and the others wait for it; each waiting call that it fails gets an exception of its own
(a copy, raised ``from`` the renewal's), never one object shared by many tasks. Each
request is tagged with the :attr:`Auth.generation` of the credentials it carried, so a call
refused with the old token after the renewal simply goes again with the new one. Once sent, a
renewal runs to its end even if the call that started it is cancelled (by anyio or by asyncio's
own ``Task.cancel()``, as the blocking facade's Ctrl-C is): the server has rotated the refresh
token once it answered, and losing the answer would lose the session.

A refresh token is sent once, never again automatically: if a renewal may have reached the
server and its answer was lost (a timeout or a connection reset after the request went out),
the server may have spent the token, and sending it again would be taken for a stolen token's
reuse. The session is over for the client then: it goes on with the access token while that
works, and the calls after it get :class:`InvalidTokenError` ("log in again"); a remembered
login is forgotten, so that no other process sends the token either.

A remembered session is renewed under the store's lock only: a renewal that cannot have it
waits (and takes the tokens of whoever holds it, if that one renewed the session meanwhile),
up to ten seconds and the call's deadline, then fails with an error that says so.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from . import credentials as _credentials
from .concurrency import to_the_end
from .credentials import (
    LOCK_POLL,
    BasicCredential,
    Credential,
    CredentialStore,
    FileLock,
    SessionCredential,
    TokenCredential,
)
from .errors import (
    AiosdkError,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    InvalidTokenError,
    StatusError,
    TransportError,
)
from .errors import TimeoutError as SdkTimeoutError
from .secrets import Secret

__all__ = [
    "Auth",
    "AuthRequest",
    "Flow",
    "password_login",
    "refresh",
    "run",
    "token_login",
]

log = logging.getLogger("aiosdk")

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

_RETRY_REFRESH_AFTER = 5.0  # seconds, at most, after a renewal failed while the token still works
# A wait for the store's lock ends before the call's deadline, by a quarter of the time left (at
# least this): a call whose token still works goes on with it, and needs time to be sent.
_LOCK_MARGIN = 0.1
_GATEWAY_STATUSES = frozenset({502, 504})  # a proxy's: it may have forwarded the request
_NO_SESSION = "a no_session login, which sends the password itself: nothing to renew"


@dataclass(frozen=True)
class AuthRequest:
    """A request a flow wants sent, without the client's credentials (its body holds secrets:
    it is never shown)."""

    method: str
    path: str
    body: dict[str, Any] = field(repr=False)


Flow = Generator[AuthRequest, Any, T]
"""A sans-I/O auth flow: yields requests, receives their decoded answers, returns a result."""

Send = Callable[[AuthRequest], Awaitable[Any]]
"""Sends one :class:`AuthRequest` and returns its decoded JSON answer (or raises)."""


def password_login(username: str, password: Secret) -> Flow[SessionCredential]:
    """Open a login session with a username and password (``POST /auth/login``)."""
    answer = yield AuthRequest(
        "POST", "/auth/login", {"username": username, "password": password.reveal()}
    )
    return SessionCredential.from_answer(answer)


def token_login(token: Secret) -> Flow[SessionCredential]:
    """Open a login session with an API token (``POST /auth/login``)."""
    answer = yield AuthRequest("POST", "/auth/login", {"token": token.reveal()})
    return SessionCredential.from_answer(answer)


def refresh(session: SessionCredential) -> Flow[SessionCredential]:
    """Renew ``session`` (``POST /auth/refresh``): a new access token and a new refresh token.

    A refused refresh token means that the session is over (logged out, expired, revoked, or
    its refresh token was used twice): that is an :class:`InvalidTokenError` saying so.
    """
    try:
        answer = yield AuthRequest(
            "POST", "/auth/refresh", {"refresh_token": session.refresh_token.reveal()}
        )
    except AuthenticationError as exc:
        raise InvalidTokenError(
            f"the login session of {session.username!r} has ended ({exc.message}): log in again",
            status_code=exc.status_code,
            request_id=exc.request_id,
            body=exc.body,
        ) from exc
    return SessionCredential.from_answer(answer)


async def run(flow: Flow[T], send: Send) -> T:
    """Drive ``flow``: send each request it yields, give it the answer (or throw the error in),
    and return its result."""
    try:
        request = next(flow)
        while True:
            try:
                answer = await send(request)
            except AiosdkError as exc:
                request = flow.throw(exc)
            else:
                request = flow.send(answer)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        flow.close()


def answer_lost(error: BaseException) -> bool:
    """Whether a request that failed with ``error`` may have been applied by the server even
    so: it went out, and no answer came back (a timeout, a reset connection, a gateway's
    502/504, the client closed while it was in flight)."""
    if isinstance(error, TransportError):
        return error.request_sent
    if isinstance(error, ClientClosedError):
        return error.__cause__ is not None  # closed under a request in flight
    return isinstance(error, StatusError) and error.status_code in _GATEWAY_STATUSES


def fresh(error: E) -> E:
    """A new exception like ``error``: its class, arguments and attributes (a shallow copy),
    with no traceback of its own yet. Raise it ``from error``, so that each task that waited
    for one failure gets its own exception, whose traceback only that task grows."""
    try:
        clone = copy.copy(error)
    except Exception:  # an exception that cannot be rebuilt from its arguments: the original
        return error
    return clone if type(clone) is type(error) else error


class _Flight:
    """One renewal in progress: the others wait for ``done``; ``error`` is how it failed.

    ``settled`` is false if it stopped before it ended (it was cancelled while it waited for
    the store's lock, before anything was sent): the calls that waited for it start over.
    """

    __slots__ = ("done", "error", "settled")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: Exception | None = None
        self.settled = False


class Auth:
    """The credentials of one transport, and their renewal.

    ``authorization`` is the ``Authorization`` value sent now (``None``: nothing is sent);
    ``generation`` changes whenever it does; ``refresh_at`` is when a session's token should be
    renewed (``None`` for credentials that never are). ``on_change(authorization)`` is called
    after every change, so the transport can precompute what it sends.

    A login kept by ``remember=True`` (or loaded from the store) has ``remembered_at`` set to
    the server URL it is kept under: its renewals are written back there, under the store's
    lock, and a renewal first looks whether another process renewed it already.
    """

    def __init__(
        self,
        credential: Credential | None,
        *,
        store: CredentialStore | None = None,
        on_change: Callable[[str | None], None] = lambda authorization: None,
    ) -> None:
        self.credential: Credential | None = None
        self.authorization: str | None = None
        self.generation = 0
        self.refresh_at: float | None = None
        self.remembered_at: str | None = None
        self.store = store
        self.cache: dict[str, object] = {}
        """Answers that hold as long as the identity does (the user's profile)."""
        self._on_change = on_change
        self._flight: _Flight | None = None
        # The session that ended, the error that says why, and whether its renewal's answer
        # was lost (then its access token is used while it works).
        self._ended: tuple[SessionCredential, InvalidTokenError, bool] | None = None
        if credential is not None:
            self._adopt(credential)

    def __repr__(self) -> str:
        kind = type(self.credential).__name__ if self.credential else "no credentials"
        return f"<Auth {kind} generation={self.generation}>"

    # -- what is sent ------------------------------------------------------------------------

    def use(self, credential: Credential | None, *, remembered_at: str | None = None) -> None:
        """Authenticate as ``credential`` from now on (``None``: send no credentials)."""
        self.cache.clear()
        self.remembered_at = remembered_at
        self._ended = None
        self._adopt(credential)

    def _adopt(self, credential: Credential | None) -> None:
        self.credential = credential
        self.authorization = credential.authorization if credential is not None else None
        self.refresh_at = (
            credential.refresh_at if isinstance(credential, SessionCredential) else None
        )
        self.generation += 1
        self._on_change(self.authorization)

    @property
    def session(self) -> SessionCredential | None:
        """The login session in use, if the credentials are one."""
        credential = self.credential
        return credential if isinstance(credential, SessionCredential) else None

    @property
    def username(self) -> str | None:
        """Who the credentials name, when they say (a session, Basic credentials)."""
        credential = self.credential
        if isinstance(credential, SessionCredential | BasicCredential):
            return credential.username
        return None

    def abandon(self) -> None:
        """In a forked child: forget a renewal the parent was running, and renew nothing.

        Parent and child hold the same refresh token, and the server takes a second use of one
        for a stolen copy and ends the session: the child keeps using the access token until it
        expires, then must log in itself. A remembered login stays renewable: renewals of it go
        through the store's lock, where each process finds what the other renewed.
        """
        self._flight = None
        session = self.credential
        if isinstance(session, SessionCredential) and self.remembered_at is None:
            error = InvalidTokenError(
                "This process was forked from the one that logged in, whose session it may not"
                " renew (the server would end it for both): log in again in this process"
            )
            self._end(session, error, lost=False)

    # -- renewal -----------------------------------------------------------------------------

    def renewal_due(self) -> bool:
        """Whether a session's token should be renewed before the next call is sent."""
        return self.refresh_at is not None and time.time() >= self.refresh_at

    async def ensure_fresh(self, send: Send) -> None:
        """Renew the session before its token expires (the transport calls this once
        ``refresh_at`` has passed).

        While another call renews it, the others wait for that renewal. If renewing fails for
        a reason other than the session having ended while the token still works, the calls go
        on with it, and renewing is tried again a little later (only if the refresh token was
        not sent: a renewal whose answer was lost is never sent again).
        """
        session = self.session
        if session is None:
            return
        self._raise_if_ended(session)
        flight = self._flight
        if flight is not None:
            # One round trip: sending the old token meanwhile could only add refusals (the
            # server may count its lifetime from earlier than the client does).
            await flight.done.wait()
            return
        try:
            await self._renew(session, send)
        except AiosdkError as exc:
            left = session.expires_at - time.time()
            if self.credential is not session or left < 1:
                raise
            ended = self._ended
            if ended is not None and ended[0] is session:
                if not ended[2]:
                    raise  # refused: the session is over
                log.warning("%s; meanwhile, calls go on with its access token", exc)
                return
            if isinstance(exc, AuthenticationError):
                raise
            log.warning("renewing the login session failed (%s); retrying soon", exc)
            self.refresh_at = time.time() + min(_RETRY_REFRESH_AFTER, left / 2)

    async def recover(self, generation: int, send: Send) -> bool:
        """After a request sent with the credentials of ``generation`` was refused as
        unauthenticated: whether to send it once more (the credentials are new now).

        With a session still on the credentials of ``generation``, renews it (single-flight);
        its failure (the session ended, say) is raised in place of the refusal.
        """
        while True:
            if generation != self.generation:
                return self.authorization is not None  # renewed (or logged in) since: try that
            session = self.session
            if session is None:
                return False  # an API token or a password: nothing to renew
            self._raise_if_ended(session)
            flight = self._flight
            if flight is None:
                await self._renew(session, send)
                return True
            await flight.done.wait()
            if flight.settled:
                if generation == self.generation and flight.error is not None:
                    raise fresh(flight.error) from flight.error
                return generation != self.generation
            # (it was cancelled before it renewed anything: renew it now)

    async def refresh(self, send: Send) -> None:
        """Renew the session now (or wait for the renewal in flight)."""
        while True:
            session = self.session
            if session is None:
                raise ConfigurationError(
                    "refresh() renews a login session, and this client has "
                    + (
                        "none: log in with login(username=..., password=...) or login(token=...)"
                        if self.credential is None or isinstance(self.credential, TokenCredential)
                        else _NO_SESSION
                    )
                )
            self._raise_if_ended(session)
            flight = self._flight
            if flight is None:
                await self._renew(session, send)
                return
            await flight.done.wait()
            if flight.settled:
                if flight.error is not None:
                    raise fresh(flight.error) from flight.error
                return

    async def _renew(self, session: SessionCredential, send: Send) -> None:
        flight = self._flight = _Flight()
        try:
            renewed = await self._rotate(session, send)
            if self.credential is session:  # not replaced meanwhile (a login, a logout)
                self._adopt(renewed)
        except Exception as exc:
            error: Exception = exc
            if self.credential is session:
                if isinstance(exc, InvalidTokenError):
                    self._end(session, exc, lost=False)  # no call renews it again
                elif answer_lost(exc):
                    error = InvalidTokenError(
                        f"the answer to the renewal of the login session of {session.username!r}"
                        f" was lost ({exc}): the server may have spent its refresh token, which"
                        " is never sent twice, so the session ends: log in again",
                        status_code=401,
                    )
                    error.__cause__ = exc
                    self._end(session, error, lost=True)
            flight.error = error
            flight.settled = True
            if error is exc:
                raise
            raise error from exc
        else:
            flight.settled = True
        finally:
            self._flight = None
            flight.done.set()

    def _end(self, session: SessionCredential, error: InvalidTokenError, *, lost: bool) -> None:
        self._ended = (session, error, lost)  # each later call gets (a copy of) this error
        self.refresh_at = None

    def _raise_if_ended(self, session: SessionCredential) -> None:
        ended = self._ended
        if ended is not None and ended[0] is session:
            raise fresh(ended[1]) from ended[1]

    async def _rotate(self, session: SessionCredential, send: Send) -> SessionCredential:
        url, store = self.remembered_at, self.store
        if url is None or store is None:
            # Once the server answered, its refresh token is spent: the answer must not be lost
            # to the cancellation of the call that asked (a timeout around it, Ctrl-C).
            return await to_the_end(lambda: run(refresh(session), send))
        taken = await self._lock(store, "the login session is not renewed", url, session)
        if isinstance(taken, SessionCredential):
            return taken  # renewed by whoever held the lock: nothing to send
        lock = taken

        async def rotate() -> SessionCredential:  # (as above; the store is written back too)
            try:
                return await self._rotate_locked(session, send, store, url)
            finally:
                await anyio.to_thread.run_sync(lock.release)

        return await to_the_end(rotate)

    async def _rotate_locked(
        self, session: SessionCredential, send: Send, store: CredentialStore, url: str
    ) -> SessionCredential:
        stored = await anyio.to_thread.run_sync(store.load, url)
        ours = isinstance(stored, SessionCredential) and stored.session_id == session.session_id
        latest = stored if ours and isinstance(stored, SessionCredential) else session
        # Another process (or client) renewed this session: its tokens are the latest, and
        # ours are spent. Take them if they are still good, else renew with them.
        if _renewed_elsewhere(latest, session):
            return latest
        try:
            renewed = await run(refresh(latest), send)
        except AiosdkError as exc:
            if isinstance(exc, InvalidTokenError) or answer_lost(exc):
                # Ended, or its refresh token perhaps spent: no process may send it again.
                if ours:
                    await self._remove(store, url)
                self.remembered_at = None
            raise
        if ours:
            await self._save(store, url, renewed)
        else:  # logged out, or another login is kept there now: not ours to overwrite
            self.remembered_at = None
        return renewed

    async def _lock(
        self,
        store: CredentialStore,
        otherwise: str,
        url: str | None = None,
        session: SessionCredential | None = None,
    ) -> FileLock | SessionCredential:
        """Take the store's lock, waiting while another process holds it.

        With ``session``, each try also reads the login kept for ``url``: if the holder renewed
        the session meanwhile, its tokens are returned instead (there is nothing to renew). The
        wait ends after ten seconds or shortly before the call's deadline, whichever is first,
        with a :class:`~aiosdk.TimeoutError` that says ``otherwise`` (what is not done without
        the lock); a store that cannot be locked at all is a :class:`~aiosdk.ConfigurationError`.
        The wait may be cancelled; a lock taken is never lost to that.
        """
        started = anyio.current_time()
        deadline = anyio.current_effective_deadline()
        limit = started + _credentials._LOCK_TIMEOUT
        if deadline < limit:
            limit = deadline - max(_LOCK_MARGIN, (deadline - started) / 4)
        while True:
            try:
                lock, stored = await to_the_end(
                    lambda: anyio.to_thread.run_sync(_attempt_lock, store, url)
                )
            except OSError as exc:
                raise ConfigurationError(
                    f"the credential store {store.directory} cannot be locked ({exc}):"
                    f" {otherwise} without its lock"
                ) from exc
            if lock is not None:
                return lock
            if (
                session is not None
                and isinstance(stored, SessionCredential)
                and stored.session_id == session.session_id
                and _renewed_elsewhere(stored, session)
            ):
                log.debug("the remembered session was renewed elsewhere; using its tokens")
                return stored
            if anyio.current_time() + LOCK_POLL > limit:
                raise SdkTimeoutError(
                    f"the credential store's lock ({store.lock_path}) is held by another process"
                    f" (waited {anyio.current_time() - started:.1f} s): {otherwise} without it,"
                    " since two processes must never spend one refresh token",
                    request_sent=False,
                )
            await anyio.sleep(LOCK_POLL)

    # -- the store ---------------------------------------------------------------------------

    async def load_remembered(self, url: str) -> None:
        """Use the login remembered for ``url``, if there is one (and no credentials yet)."""
        store = self.store
        if store is None or self.credential is not None:
            return
        credential = await anyio.to_thread.run_sync(store.load, url)
        if credential is not None and self.credential is None:
            self.use(credential, remembered_at=url)
            log.debug("using the login remembered for %s", url)

    async def remember(self, url: str) -> None:
        """Keep the credentials in use for ``url`` in the store (never a password)."""
        credential, store = self.credential, self.store
        if store is None or credential is None:
            return
        if isinstance(credential, BasicCredential):
            raise ConfigurationError(
                "remember=True keeps session tokens or API tokens, never a password: log in"
                " without no_session=True, or with a token"
            )
        try:
            lock = await self._lock(store, "the login is not remembered")
        except AiosdkError as exc:
            raise ConfigurationError(
                f"logged in, but the login cannot be remembered in {store.directory}: {exc}"
            ) from exc
        assert isinstance(lock, FileLock)
        try:
            await anyio.to_thread.run_sync(store.save, url, credential)
        except OSError as exc:
            raise ConfigurationError(
                f"logged in, but the login cannot be remembered in {store.directory}: {exc}"
            ) from exc
        finally:
            await anyio.to_thread.run_sync(lock.release)
        self.remembered_at = url

    async def forget(self) -> None:
        """Stop sending credentials; remove them from the store if they came from there."""
        url, store, credential = self.remembered_at, self.store, self.credential
        self.use(None)
        if url is None or store is None or credential is None:
            return
        try:
            lock = await self._lock(store, "the login is not removed from it")
        except AiosdkError as exc:
            log.warning("could not remove the remembered login from %s: %s", store.directory, exc)
            return
        assert isinstance(lock, FileLock)
        try:
            stored = await anyio.to_thread.run_sync(store.load, url)
            if _same_login(stored, credential):
                await self._remove(store, url)
        except ConfigurationError as exc:  # a file others may read: refused, not ours to judge
            log.warning("could not remove the remembered login from %s: %s", store.directory, exc)
        finally:
            await anyio.to_thread.run_sync(lock.release)

    @staticmethod
    async def _remove(store: CredentialStore, url: str) -> None:
        try:
            await anyio.to_thread.run_sync(store.remove, url)
        except OSError as exc:
            log.warning("could not remove the remembered login from %s: %s", store.directory, exc)

    @staticmethod
    async def _save(store: CredentialStore, url: str, credential: SessionCredential) -> None:
        try:
            await anyio.to_thread.run_sync(store.save, url, credential)
        except OSError as exc:  # the renewed tokens still work in memory
            log.warning("could not write the renewed login to %s: %s", store.directory, exc)


def _attempt_lock(
    store: CredentialStore, url: str | None
) -> tuple[FileLock | None, Credential | None]:
    """One try of the store's lock (in a worker thread); if it is held, the login kept for
    ``url`` (when one is asked for), to see whether the holder renewed it."""
    lock = store.attempt_lock()
    if lock is not None or url is None:
        return lock, None
    return None, store.load(url)


def _renewed_elsewhere(latest: SessionCredential, session: SessionCredential) -> bool:
    """Whether ``latest`` holds newer tokens of ``session`` that are still good to use."""
    return latest.refresh_token != session.refresh_token and time.time() < latest.refresh_at


def _same_login(stored: Credential | None, credential: Credential) -> bool:
    if isinstance(stored, SessionCredential) and isinstance(credential, SessionCredential):
        return stored.session_id == credential.session_id
    return stored is not None and stored == credential
