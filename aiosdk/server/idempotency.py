"""Idempotency keys: a mutating request (HTTP or gRPC) applied once per (principal, key).

The first request with a key claims it (an insert, committed at once; the unique constraint
settles races) and runs. Its writes and the stored answer then commit together, in the request's
:class:`~aiosdk.server.unit_of_work.UnitOfWork`, before the answer is sent. A repeat of the same
request replays the stored answer; a different request under the same key is refused; a repeat
while the first still runs is told to retry. A failed request (5xx, an exception) releases its
claim and rolls its writes back, so a retry runs again. Records expire after 24 hours.

Nothing a client sent is stored in the clear: the key is stored hashed, the request target and
the body only as HMACs under the key, and the answer sealed under the key. The stored values are
also of fixed size whatever the request looks like.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

import anyio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .storage import IdempotencyKey, IdempotencyState, utcnow
from .unit_of_work import UnitOfWork

__all__ = [
    "IDEMPOTENCY_TTL",
    "IN_PROGRESS_LEASE",
    "VALID_KEY",
    "Answer",
    "Claim",
    "ClaimLost",
    "IdempotencyKeyBusy",
    "IdempotencyStore",
    "Outcome",
    "Repeat",
    "StoredResponse",
    "apply_once",
    "claim_record",
    "classify_repeat",
    "seal",
    "unseal",
]

T = TypeVar("T")

IDEMPOTENCY_TTL = timedelta(hours=24)
"""How long a key and its stored response are kept."""

IN_PROGRESS_LEASE = timedelta(minutes=10)
"""An in-progress claim older than this is taken to belong to a crashed server.

A retry that finds the claim younger waits (told to retry), and one that finds it older takes it
over and runs the request again. The lease must therefore outlast any request still running, so
it is far longer than any client timeout plus retry backoff: a request that is slow, not dead, is
never run twice. The price: the claims of a server that crashed mid-request block their keys for
up to this long (retrying with a new key, or waiting, gets through). A crash never leaves a
half-applied request behind: its writes commit with the stored answer or not at all.
"""

VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")
"""What an idempotency key may be: 1 to 255 printable ASCII characters."""

_CLAIM_ATTEMPTS = 3


class IdempotencyKeyBusy(Exception):
    """The key changed hands too often while it was being claimed: the client should retry."""


class ClaimLost(Exception):
    """The request outlived its lease and a retry took its key over: it must not commit (the
    retry applies the change), and its client is told to retry, which gets the retry's answer."""


class Repeat(enum.Enum):
    """What a request finding its key already claimed gets."""

    REPLAY = "replay"
    """The first request finished: its stored answer is the answer."""
    IN_PROGRESS = "in_progress"
    """The first request still runs: retry later."""
    MISMATCH = "mismatch"
    """The key was used for a different request."""


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

    ``method`` is the HTTP method (``"GRPC"`` for a gRPC call, whose ``path`` is the RPC's).
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


def classify_repeat(request: IdempotencyKey, holder: IdempotencyKey) -> Repeat:
    """What ``request`` gets when ``holder`` already claimed its key."""
    if (holder.method, holder.target, holder.fingerprint) != (
        request.method,
        request.target,
        request.fingerprint,
    ):
        return Repeat.MISMATCH
    if holder.state != IdempotencyState.DONE or holder.status_code is None:
        return Repeat.IN_PROGRESS
    return Repeat.REPLAY


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
    """An answer kept for replay (a gRPC answer has status code 0 and no headers)."""

    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


class IdempotencyStore:
    """Claims, completes and releases idempotency keys in the database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def claim(self, record: IdempotencyKey) -> IdempotencyKey | None:
        """Claim ``record``'s key (committed at once); ``None`` if claimed, else the record that
        holds the key. Raises :class:`IdempotencyKeyBusy` if the key keeps changing hands."""
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
        raise IdempotencyKeyBusy

    async def complete(
        self, claim: IdempotencyKey, response: StoredResponse, *, session: AsyncSession
    ) -> None:
        """Store the answer of a claimed key in ``session``: the request's own unit of work, so
        that the answer commits with the request's writes (the caller commits).

        Only ``claim``'s own row is updated: if the lease ran out and a retry took the key over
        meanwhile, the retry's claim is left alone, and :class:`ClaimLost` says so.
        """
        result = await session.execute(
            update(IdempotencyKey)
            .where(_own_row(claim), IdempotencyKey.state == IdempotencyState.IN_PROGRESS)
            .values(
                state=IdempotencyState.DONE,
                status_code=response.status_code,
                response_headers=[list(pair) for pair in response.headers],
                response_body=response.body,
            )
        )
        if getattr(result, "rowcount", 1) != 1:
            raise ClaimLost

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


@dataclass(frozen=True)
class Claim:
    """A key claimed for a request: its record, and the key itself (answers are sealed under it)."""

    record: IdempotencyKey
    key: str


class Outcome(enum.Enum):
    """What a request's handler came to, as far as exactly-once goes."""

    DONE = "done"
    """It succeeded: its writes and its stored answer commit together."""
    REFUSED = "refused"
    """The client's mistake: nothing it wrote is kept; the refusal is stored and replayed."""
    FAILED = "failed"
    """The server's failure (or a transient one): nothing is kept; a retry runs again."""


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A handler's outcome, the answer to store for replay, and whatever the wire sends."""

    outcome: Outcome
    stored: Callable[[str], StoredResponse]
    """The answer to store, sealed under the given key (only called for a claimed key)."""
    value: T


async def apply_once(
    store: IdempotencyStore,
    work: UnitOfWork,
    claim: Claim | None,
    run: Callable[[], Awaitable[Answer[T]]],
) -> Answer[T]:
    """Run a mutating request's handler in ``work`` and settle its claim, the one way both wires
    do it: a success commits with its stored answer (before anything is sent), a refusal keeps no
    write but is stored, a failure or an exception keeps nothing and releases the key. Raises
    :class:`ClaimLost` when a retry took the key over meanwhile (nothing committed)."""
    try:
        answer = await run()
        if answer.outcome is Outcome.DONE:
            if claim is not None:
                stored = answer.stored(claim.key)
                await store.complete(claim.record, stored, session=work.session)
            await work.commit()
        elif answer.outcome is Outcome.REFUSED:
            await work.close()
            if claim is not None:
                async with store.sessions() as session:
                    await store.complete(claim.record, answer.stored(claim.key), session=session)
                    await session.commit()
        else:
            await _abandon(store, work, claim)
    except BaseException:
        await _abandon(store, work, claim)
        raise
    return answer


async def _abandon(store: IdempotencyStore, work: UnitOfWork, claim: Claim | None) -> None:
    # Roll back first: on SQLite the request's writes hold the lock the release needs.
    with anyio.CancelScope(shield=True):
        await work.close()
        if claim is not None:
            await store.release(claim.record)
