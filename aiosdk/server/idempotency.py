"""Idempotency keys: a mutating request (HTTP or gRPC) applied once per (principal, key).

The first request with a key claims it (an insert, committed at once; the unique constraint
settles races) and runs. Its writes and the stored answer then commit together, in the request's
:class:`~aiosdk.server.unit_of_work.UnitOfWork`, before the answer is sent. A repeat of the same
request replays the stored answer; a different request under the same key is refused; a repeat
while the first still runs is told to retry. A failed request (5xx, an exception) releases its
claim and rolls its writes back, so a retry runs again. Records expire after 24 hours.

Nothing a client sent is stored in the clear: the key is stored hashed, the request target and
the body only as HMACs, and the answer sealed (AES-GCM). Every one of those is keyed by the
client's key *and* a server key (the ``"idempotency"`` purpose of the server
:class:`~aiosdk.server.keyring.Keyring`): a copy of the database alone can neither read a stored
answer nor forge a record that a retry would replay, even for a guessable client key. After a
keyring rotation, records written under the older keys are still found (each valid key is
tried: :meth:`IdempotencyStore.begin`) until those keys retire; records older than that have
expired anyway (:data:`IDEMPOTENCY_TTL` is far shorter than a key's retirement). The stored
values are also of fixed size whatever the request looks like.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

import anyio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .keyring import Keyring
from .storage import IdempotencyKey, IdempotencyState, utcnow
from .unit_of_work import UnitOfWork

__all__ = [
    "IDEMPOTENCY_TTL",
    "IN_PROGRESS_LEASE",
    "KEYRING_PURPOSE",
    "VALID_KEY",
    "Answer",
    "Claim",
    "ClaimLost",
    "Holder",
    "IdempotencyKeyBusy",
    "IdempotencyStore",
    "Outcome",
    "Repeat",
    "RequestKey",
    "StoredResponse",
    "apply_once",
    "claim_record",
    "classify_repeat",
    "request_keys",
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

KEYRING_PURPOSE = "idempotency"
"""The purpose of the server keys that key idempotency records (see :meth:`Keyring.derive`)."""

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


class RequestKey:
    """A client's idempotency key under one server key: what the record of a request is stored
    as (a lookup hash), compared by (HMACs) and sealed with (an AES-GCM key), all derived from
    both keys. Its material never shows in a repr."""

    __slots__ = ("_secret",)

    def __init__(self, server_key: bytes, client_key: str) -> None:
        self._secret = hmac.new(
            server_key, b"aiosdk idempotency key\0" + client_key.encode(), hashlib.sha256
        ).digest()

    def __repr__(self) -> str:
        return "<RequestKey>"

    @property
    def lookup_hash(self) -> str:
        """What the record stores for the key (its ``key`` column)."""
        return hmac.new(self._secret, b"lookup", hashlib.sha256).hexdigest()

    def digest(self, purpose: bytes, *parts: bytes | bytearray) -> str:
        """An HMAC of ``parts`` for ``purpose``, hex."""
        mac = hmac.new(self._secret, b"mac\0" + purpose + b"\0", hashlib.sha256)
        for part in parts:  # length-prefixed, so that no two different part lists collide
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.hexdigest()

    def _box(self) -> AESGCM:
        return AESGCM(hmac.new(self._secret, b"seal", hashlib.sha256).digest())

    def seal(self, body: bytes) -> bytes:
        """``body`` encrypted (nonce + AES-GCM ciphertext): how a stored response is kept.

        A replayed response may hold a secret (a new token), and secrets are not kept in the
        clear: the database holds only a hash of the key and the body sealed under it and a
        server key, so a stored response is readable only by this server (its keyring) given
        the client's key again.
        """
        nonce = secrets.token_bytes(12)
        return nonce + self._box().encrypt(nonce, body, None)

    def unseal(self, sealed: bytes) -> bytes:
        """The body :meth:`seal` encrypted; raises ``cryptography``'s ``InvalidTag`` if it was
        sealed under another key."""
        return self._box().decrypt(sealed[:12], sealed[12:], None)


def request_keys(keyring: Keyring, key: str) -> list[RequestKey]:
    """``key`` under each server key that still verifies, the current one first."""
    return [RequestKey(server_key, key) for server_key in keyring.derive(KEYRING_PURPOSE)]


def _record(
    request_key: RequestKey,
    principal: str,
    method: str,
    path: str,
    query: bytes,
    body: bytes | bytearray,
) -> IdempotencyKey:
    return IdempotencyKey(
        principal=principal,
        key=request_key.lookup_hash,
        method=method,
        target=request_key.digest(
            b"target", method.encode(), path.encode(errors="surrogatepass"), query
        ),
        fingerprint=request_key.digest(b"body", body),
    )


def claim_record(
    keyring: Keyring, principal: str, key: str, method: str, path: str, query: bytes, body: bytes
) -> IdempotencyKey:
    """The record claiming ``key`` for a request under the keyring's current key: what is
    stored, what a repeat must match.

    ``method`` is the HTTP method (``"GRPC"`` for a gRPC call, whose ``path`` is the RPC's).
    Fixed-size digests stand for the key, the request target and the body, whatever their size
    or characters: a long path or a NUL in the query cannot overflow or upset a column.
    """
    return _record(request_keys(keyring, key)[0], principal, method, path, query, body)


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


@dataclass(frozen=True)
class StoredResponse:
    """An answer kept for replay (a gRPC answer has status code 0 and no headers)."""

    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


_HASHED_IN_LOOP = 1024 * 1024
"""The largest body :meth:`IdempotencyStore.begin` hashes in the event loop (a data body can
be hundreds of MiB: a second or so of HMAC)."""


class IdempotencyStore:
    """Claims, completes and releases idempotency keys in the database, keyed by ``keyring``."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], keyring: Keyring) -> None:
        self.sessions = sessions
        self.keyring = keyring

    async def begin(
        self,
        principal: str,
        key: str,
        method: str,
        path: str,
        query: bytes,
        body: bytes | bytearray,
    ) -> Claim | Holder:
        """Claim ``key`` for a request (see :func:`claim_record`), or find who holds it: a
        :class:`Claim` to run the request under, or the :class:`Holder` of the key, found
        under any server key that still verifies. Raises :class:`IdempotencyKeyBusy` if the
        key keeps changing hands. A body past :data:`_HASHED_IN_LOOP` bytes is hashed in a
        worker thread."""

        def records() -> list[tuple[RequestKey, IdempotencyKey]]:
            return [
                (request_key, _record(request_key, principal, method, path, query, body))
                for request_key in request_keys(self.keyring, key)
            ]

        if len(body) > _HASHED_IN_LOOP:
            variants = await anyio.to_thread.run_sync(records)
        else:
            variants = records()
        (current_key, record), *earlier = variants
        holder = await self.claim(record, earlier=[older for _, older in earlier])
        if holder is None:
            return Claim(record, current_key)
        for request_key, variant in variants:
            if variant.key == holder.key:
                return Holder(holder, request_key, classify_repeat(variant, holder))
        raise AssertionError("the holder matches none of the request's keys")  # pragma: no cover

    async def claim(
        self, record: IdempotencyKey, *, earlier: Sequence[IdempotencyKey] = ()
    ) -> IdempotencyKey | None:
        """Claim ``record``'s key (committed at once); ``None`` if claimed, else the record that
        holds the key: ``record``'s, or one of ``earlier`` (the same request under older server
        keys, looked up first). Raises :class:`IdempotencyKeyBusy` if the key keeps changing
        hands."""
        earlier_keys = [older.key for older in earlier]
        for _ in range(_CLAIM_ATTEMPTS):
            now = utcnow()
            same_key = and_(
                IdempotencyKey.principal == record.principal, IdempotencyKey.key == record.key
            )
            any_key = and_(
                IdempotencyKey.principal == record.principal,
                IdempotencyKey.key.in_([record.key, *earlier_keys]),
            )
            async with self.sessions() as session:
                stale = or_(
                    IdempotencyKey.created_at < now - IDEMPOTENCY_TTL,
                    and_(
                        IdempotencyKey.state == IdempotencyState.IN_PROGRESS,
                        IdempotencyKey.created_at < now - IN_PROGRESS_LEASE,
                    ),
                )
                await session.execute(delete(IdempotencyKey).where(any_key, stale))
                if earlier_keys:
                    held = await session.scalar(
                        select(IdempotencyKey).where(
                            IdempotencyKey.principal == record.principal,
                            IdempotencyKey.key.in_(earlier_keys),
                        )
                    )
                    if held is not None:
                        await session.commit()  # the stale rows' deletion
                        return held
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
    """A key claimed for a request: its record, and the key (answers are sealed under it)."""

    record: IdempotencyKey
    key: RequestKey


@dataclass(frozen=True)
class Holder:
    """The record holding a request's key, what the request gets (:class:`Repeat`), and the key
    that unseals the record's answer."""

    record: IdempotencyKey
    key: RequestKey
    repeat: Repeat

    def answer(self) -> bytes:
        """The stored answer's body, unsealed (empty if none)."""
        sealed = self.record.response_body
        return self.key.unseal(sealed) if sealed else b""


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
    stored: Callable[[RequestKey], StoredResponse]
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
