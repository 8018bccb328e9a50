"""``Idempotency-Key``: mutating requests applied once per (principal, key).

The first request with a key claims it (an insert; the unique constraint settles races), runs,
and stores its response. A repeat of the same request replays the stored response with
``Idempotent-Replayed: true``; a different request under the same key gets 422; a repeat while
the first still runs gets 409 ``idempotency_in_progress`` with ``Retry-After: 1``. 5xx responses
are not stored: the claim is released so that a retry runs again. Records expire after 24 hours.

Nothing a client sent is stored in the clear: the key is stored hashed, the request target
(method, path and query) and the body only as HMACs under the key, and the response sealed
under the key. The stored values are also of fixed size whatever the request looks like.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

import anyio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import Principal
from ..storage import IdempotencyKey, IdempotencyState, utcnow
from .errors import IdempotencyInProgressError, IdempotencyKeyReusedError, InvalidRequestError

__all__ = [
    "IDEMPOTENCY_TTL",
    "IN_PROGRESS_LEASE",
    "IdempotencyMiddleware",
    "IdempotencyStore",
    "StoredResponse",
    "claim_record",
]

logger = logging.getLogger("aiosdk.server")

IDEMPOTENCY_TTL = timedelta(hours=24)
"""How long a key and its stored response are kept."""

IN_PROGRESS_LEASE = timedelta(minutes=10)
"""An in-progress claim older than this is taken to belong to a crashed server.

A retry that finds the claim younger waits (409 ``idempotency_in_progress``), and one that
finds it older takes it over and runs the request again. The lease must therefore outlast any
request still running, so it is far longer than any client timeout plus retry backoff: a
request that is slow, not dead, is never run twice. The price: the claims of a server that
crashed mid-request block their keys for up to this long, answering 409 meanwhile (retrying
with a new key, or waiting, gets through).
"""

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REPLAYED_HEADER = "Idempotent-Replayed"
_STORED_HEADERS = frozenset({"content-type", "content-language", "location", "etag"})
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_CLAIM_ATTEMPTS = 3


def _lookup_hash(key: str) -> str:
    return hashlib.sha256(b"aiosdk idempotency key\0" + key.encode()).hexdigest()


def _keyed_digest(key: str, purpose: bytes, *parts: bytes) -> str:
    mac = hmac.new(b"aiosdk idempotency " + purpose + b"\0" + key.encode(), digestmod="sha256")
    for part in parts:  # length-prefixed, so that no two different part lists collide
        mac.update(len(part).to_bytes(8, "big") + part)
    return mac.hexdigest()


def claim_record(
    principal: str, key: str, method: str, path: str, query: bytes, body: bytes
) -> IdempotencyKey:
    """The record claiming ``key`` for a request: what is stored, what a repeat must match.

    Fixed-size digests stand for the key, the request target and the body, whatever their size
    or characters: a long path or a NUL in the query cannot overflow or upset a column.
    """
    return IdempotencyKey(
        principal=principal,
        key=_lookup_hash(key),
        method=method,
        target=_keyed_digest(
            key, b"target", method.encode(), path.encode(errors="surrogatepass"), query
        ),
        fingerprint=_keyed_digest(key, b"body", body),
    )


def _box(key: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"aiosdk idempotency response\0" + key.encode()).digest())


def seal(key: str, body: bytes) -> bytes:
    """Encrypt a stored response body under the request's own key.

    A replayed response may hold a secret (a new token), and secrets are not kept in the clear:
    the database holds only a hash of the key and the body sealed under it, so a stored response
    is readable only by a request that presents the key again.
    """
    nonce = secrets.token_bytes(12)
    return nonce + _box(key).encrypt(nonce, body, None)


def unseal(key: str, sealed: bytes) -> bytes:
    """The body :func:`seal` encrypted."""
    return _box(key).decrypt(sealed[:12], sealed[12:], None)


@dataclass(frozen=True)
class StoredResponse:
    """A response kept for replay."""

    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


class IdempotencyStore:
    """Claims, completes and releases idempotency keys in the database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def claim(self, record: IdempotencyKey) -> IdempotencyKey | None:
        """Claim ``record``'s key; ``None`` if claimed, else the record that holds the key."""
        for _ in range(_CLAIM_ATTEMPTS):
            now = utcnow()
            same_key = and_(
                IdempotencyKey.principal == record.principal, IdempotencyKey.key == record.key
            )
            async with self.sessions() as session:
                stale = or_(
                    IdempotencyKey.created_at < now - IDEMPOTENCY_TTL,
                    and_(
                        IdempotencyKey.state == IdempotencyState.IN_PROGRESS,
                        IdempotencyKey.created_at < now - IN_PROGRESS_LEASE,
                    ),
                )
                await session.execute(delete(IdempotencyKey).where(same_key, stale))
                if record.created_at is None:
                    record.created_at = now  # set here: completing and releasing match on it
                session.add(record)
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                else:
                    return None
                holder = await session.scalar(select(IdempotencyKey).where(same_key))
                if holder is not None:
                    return holder
            record = _copy(record)  # the holder released the key meanwhile: try again
        raise IdempotencyInProgressError("Idempotency-Key is busy; retry")

    async def complete(self, claim: IdempotencyKey, response: StoredResponse) -> None:
        """Store the response of a claimed key.

        Only ``claim``'s own row is updated: if the lease ran out and a retry took the key over
        meanwhile, the retry's claim is left alone.
        """
        async with self.sessions() as session:
            await session.execute(
                update(IdempotencyKey)
                .where(_own_row(claim), IdempotencyKey.state == IdempotencyState.IN_PROGRESS)
                .values(
                    state=IdempotencyState.DONE,
                    status_code=response.status_code,
                    response_headers=[list(pair) for pair in response.headers],
                    response_body=response.body,
                )
            )
            await session.commit()

    async def release(self, claim: IdempotencyKey) -> None:
        """Forget a claimed key, so that a retry runs again (only ``claim``'s own row)."""
        async with self.sessions() as session:
            await session.execute(
                delete(IdempotencyKey).where(
                    _own_row(claim), IdempotencyKey.state == IdempotencyState.IN_PROGRESS
                )
            )
            await session.commit()

    async def purge_expired(self) -> int:
        """Delete expired records; return how many."""
        async with self.sessions() as session:
            result = await session.execute(
                delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - IDEMPOTENCY_TTL)
            )
            await session.commit()
            return int(getattr(result, "rowcount", 0) or 0)


def _own_row(claim: IdempotencyKey) -> ColumnElement[bool]:
    # SQLite reuses the id of a deleted last row: the claim time tells a successor apart.
    return and_(IdempotencyKey.id == claim.id, IdempotencyKey.created_at == claim.created_at)


def _copy(record: IdempotencyKey) -> IdempotencyKey:
    return IdempotencyKey(
        principal=record.principal,
        key=record.key,
        method=record.method,
        target=record.target,
        fingerprint=record.fingerprint,
    )


class IdempotencyMiddleware:
    """Applies mutating requests carrying ``Idempotency-Key`` at most once.

    Must run inside the authentication middleware (keys are scoped per principal) and inside
    the body-size limit (the body is buffered to fingerprint it).
    """

    def __init__(self, app: ASGIApp, store: IdempotencyStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING_METHODS:
            await self.app(scope, receive, send)
            return
        key = Headers(scope=scope).get("idempotency-key")
        principal: Principal | None = scope.get("state", {}).get("principal")
        if key is None or principal is None:  # no key, or a public route (nothing to apply)
            await self.app(scope, receive, send)
            return
        if not _VALID_KEY.fullmatch(key):
            raise InvalidRequestError("Idempotency-Key must be 1 to 255 printable ASCII characters")
        body = await _read_body(receive)
        record = claim_record(
            principal.name,
            key,
            scope["method"],
            scope["path"],
            scope.get("query_string", b""),
            body,
        )
        holder = await self.store.claim(record)
        if holder is not None:
            await _answer_repeat(record, holder, key)(scope, receive, send)
            return
        await self._run_claimed(scope, _replay_body(body, receive), send, record, key)

    async def _run_claimed(
        self, scope: Scope, receive: Receive, send: Send, record: IdempotencyKey, key: str
    ) -> None:
        status: int | None = None
        headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    decoded = name.decode("latin-1").lower()
                    if decoded in _STORED_HEADERS:
                        headers.append((decoded, value.decode("latin-1")))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.store.release(record)
            raise
        with anyio.CancelScope(shield=True):
            if status is None or status >= 500:
                await self.store.release(record)
            else:
                stored = StoredResponse(status, headers, seal(key, b"".join(chunks)))
                await self.store.complete(record, stored)


def _answer_repeat(request: IdempotencyKey, holder: IdempotencyKey, key: str) -> Response:
    if (holder.method, holder.target, holder.fingerprint) != (
        request.method,
        request.target,
        request.fingerprint,
    ):
        raise IdempotencyKeyReusedError("Idempotency-Key was already used for a different request")
    if holder.state != IdempotencyState.DONE or holder.status_code is None:
        raise IdempotencyInProgressError("A request with this Idempotency-Key is still in progress")
    body = unseal(key, holder.response_body) if holder.response_body else b""
    response = Response(content=body, status_code=holder.status_code)
    for name, value in holder.response_headers or ():
        response.headers.append(name, value)
    response.headers[REPLAYED_HEADER] = "true"
    return response


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay_body(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
