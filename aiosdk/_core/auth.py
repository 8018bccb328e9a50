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
out, and the others wait for it. Each
request is tagged with the :attr:`Auth.generation` of the credentials it carried, so a call
refused with the old token after the renewal simply goes again with the new one. A renewal runs
to its end even if the call that started it is cancelled: the server has rotated the refresh
token once it answered, and losing the answer would lose the session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from .credentials import (
    BasicCredential,
    Credential,
    CredentialStore,
    SessionCredential,
    TokenCredential,
)
from .errors import AiosdkError, AuthenticationError, ConfigurationError, InvalidTokenError
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

_RETRY_REFRESH_AFTER = 5.0  # seconds, at most, after a renewal failed while the token still works


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


class _Flight:
    """One renewal in progress: the others wait for ``done``; ``error`` is how it failed."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: Exception | None = None


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
        self._ended: tuple[SessionCredential, InvalidTokenError] | None = None
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
        """In a forked child: forget a renewal the parent was running."""
        self._flight = None

    # -- renewal -----------------------------------------------------------------------------

    async def ensure_fresh(self, send: Send) -> None:
        """Renew the session before its token expires (the transport calls this once
        ``refresh_at`` has passed).

        While another call renews it, the others wait for that renewal. If renewing fails for
        a reason other than the session having ended while the token still works, the calls go
        on with it, and renewing is tried again a little later.
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
            if isinstance(exc, AuthenticationError) or self.credential is not session or left < 1:
                raise
            log.warning("renewing the login session failed (%s); retrying soon", exc)
            self.refresh_at = time.time() + min(_RETRY_REFRESH_AFTER, left / 2)

    async def recover(self, generation: int, send: Send) -> bool:
        """After a request sent with the credentials of ``generation`` was refused as
        unauthenticated: whether to send it once more (the credentials are new now).

        With a session still on the credentials of ``generation``, renews it (single-flight);
        its failure (the session ended, say) is raised in place of the refusal.
        """
        if generation != self.generation:
            return self.authorization is not None  # renewed (or logged in) since: try that
        session = self.session
        if session is None:
            return False  # an API token or a password: nothing to renew
        self._raise_if_ended(session)
        flight = self._flight
        if flight is not None:
            await flight.done.wait()
            if generation == self.generation and flight.error is not None:
                raise flight.error
            return generation != self.generation
        await self._renew(session, send)
        return True

    async def refresh(self, send: Send) -> None:
        """Renew the session now (or wait for the renewal in flight)."""
        session = self.session
        if session is None:
            raise ConfigurationError(
                "refresh() renews a login session, and this client has "
                + (
                    "none: log in with login(username=..., password=...) or login(token=...)"
                    if self.credential is None or isinstance(self.credential, TokenCredential)
                    else "a no_session login, which sends the password itself: nothing to renew"
                )
            )
        flight = self._flight
        if flight is not None:
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return
        await self._renew(session, send)

    async def _renew(self, session: SessionCredential, send: Send) -> None:
        flight = self._flight = _Flight()
        try:
            # Once the server answered, its refresh token is spent: the answer must not be lost
            # to the cancellation of the call that asked (a timeout around it, Ctrl-C).
            with anyio.CancelScope(shield=True):
                renewed = await self._rotate(session, send)
            if self.credential is session:  # not replaced meanwhile (a login, a logout)
                self._adopt(renewed)
        except Exception as exc:
            flight.error = exc
            if isinstance(exc, InvalidTokenError) and self.credential is session:
                self._ended = (session, exc)  # no call renews it again: each gets this error
                self.refresh_at = None
            raise
        finally:
            self._flight = None
            flight.done.set()

    def _raise_if_ended(self, session: SessionCredential) -> None:
        ended = self._ended
        if ended is not None and ended[0] is session:
            raise ended[1]

    async def _rotate(self, session: SessionCredential, send: Send) -> SessionCredential:
        url, store = self.remembered_at, self.store
        if url is None or store is None:
            return await run(refresh(session), send)
        lock = await anyio.to_thread.run_sync(store.lock)
        try:
            stored = await anyio.to_thread.run_sync(store.load, url)
            ours = isinstance(stored, SessionCredential) and stored.session_id == session.session_id
            latest = stored if ours and isinstance(stored, SessionCredential) else session
            # Another process (or client) renewed this session: its tokens are the latest, and
            # ours are spent. Take them if they are still good, else renew with them.
            if latest.refresh_token != session.refresh_token and time.time() < latest.refresh_at:
                return latest
            try:
                renewed = await run(refresh(latest), send)
            except InvalidTokenError:
                if ours:
                    await self._remove(store, url)
                self.remembered_at = None
                raise
            if ours:
                await self._save(store, url, renewed)
            else:  # logged out, or another login is kept there now: not ours to overwrite
                self.remembered_at = None
            return renewed
        finally:
            await anyio.to_thread.run_sync(lock.release)

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
        lock = await anyio.to_thread.run_sync(store.lock)
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
        lock = await anyio.to_thread.run_sync(store.lock)
        try:
            stored = await anyio.to_thread.run_sync(store.load, url)
            if _same_login(stored, credential):
                await self._remove(store, url)
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


def _same_login(stored: Credential | None, credential: Credential) -> bool:
    if isinstance(stored, SessionCredential) and isinstance(credential, SessionCredential):
        return stored.session_id == credential.session_id
    return stored is not None and stored == credential
