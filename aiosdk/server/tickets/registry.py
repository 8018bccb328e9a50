"""The server's record of sessions and what they export: every function works in the caller's
unit of work (an ``AsyncSession``: it flushes, never commits) and raises the server's
:class:`~..errors.ApiError` subclasses, which both wires answer.

Notes for the gRPC service (and any other caller):

- **Begin writing first.** Call ``await work.begin_write()`` before any function that writes
  (:func:`open_session`, :func:`refresh_session`, :func:`close_session`, :func:`expire_sessions`,
  :func:`add_export`, :func:`release_export`, :func:`new_object`, :func:`app_object`,
  :func:`publish`, :func:`bind`, :func:`lock_object_state`, :func:`update_object_state`): on
  SQLite that takes the database's write lock, so that their checks and their writes are one
  (on PostgreSQL they lock the rows they depend on themselves). The sweeper too: one
  :class:`~..unit_of_work.UnitOfWork` per :func:`expire_sessions` round.
- **Remove data after commit.** Functions that can end exports (:func:`close_session`,
  :func:`expire_sessions`, :func:`release_export`, :func:`bind`) return the ids of the server
  objects they deleted that had data: remove it once the transaction commits
  (``work.after_commit(lambda: remove(ids))`` with ``state.catalog.remove_data`` or the
  :class:`~..data.cleanup.DataCleanup`). An object goes when no live export and no scope
  variable refers to it any more; an application's plugin objects never go.
- **Errors.** :class:`~..errors.NotFoundError`: a session closed, expired, another user's or
  never opened; an export number never used or released; an unknown shared ticket or scope
  variable. :class:`TicketExistsError` (a :class:`~..errors.ConflictError`, 409 over HTTP):
  a used export number, a shared ticket published already (answer ``ALREADY_EXISTS``).
  :class:`~..errors.InvalidRequestError`: an export number out of range, a bad scope name or
  shared ticket, a ttl that is no number. A plain :class:`~..errors.ConflictError` (not
  :class:`TicketExistsError`): a concurrent bind of the same new name (retry).
- **Access.** The registry checks ownership (a session is its owner's only); whether the caller
  may read a target's sources is :func:`readable`, which the caller checks on every use of a
  target it did not just make (fetch, query, HTTP reads: :mod:`.resolve` does it for those).
- **Sessions end lazily too.** An expired session is treated as closed wherever it is looked
  at (:func:`live_session`, :func:`shared_target`); :func:`expire_sessions` releases what it
  exported. Closed sessions' rows are kept :data:`RETAIN_CLOSED_SECONDS` (closing again answers
  0 released), then :func:`expire_sessions` deletes them.
- **Locks.** ``live_session(..., lock=True)`` locks the session's row ``FOR UPDATE`` (the
  calls of one session then take turns); the functions that add to a session hold it
  ``FOR SHARE`` themselves, so a concurrent close waits for them or they find it closed (a
  session :func:`live_session` locked in the same transaction is held already: they skip
  the statement).
- **Ticket paths.** :func:`ticket_path` is ``ExportInfo.path``: the HTTP routes read the export's
  data and metadata there (see :mod:`.resolve`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import and_, delete, func, or_, select, union, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..._core.keys import key_problem
from ..._core.ticket_bytes import MAX_EXPORT_NUMBER, parse_ticket
from ..authorization import READ
from ..catalog.access import covering, shares_covering
from ..catalog.models import Node
from ..errors import ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from ..storage.models import new_id, utcnow
from .models import TicketExport, TicketObject, TicketScope, TicketSession, TicketShared

if TYPE_CHECKING:
    from ..catalog.nodes import Viewer

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "MAX_TTL_SECONDS",
    "MIN_TTL_SECONDS",
    "RETAIN_CLOSED_SECONDS",
    "TICKET_ROOT",
    "Target",
    "TicketExistsError",
    "add_export",
    "app_object",
    "bind",
    "clamp_ttl",
    "close_session",
    "expire_sessions",
    "export_target",
    "get_object",
    "live_session",
    "lock_object_state",
    "new_object",
    "open_session",
    "publish",
    "readable",
    "refresh_session",
    "release_export",
    "replayed_export",
    "sweep_due",
    "scope_target",
    "shared_digest",
    "shared_target",
    "ticket_path",
    "update_object_state",
]

DEFAULT_TTL_SECONDS = 300.0
"""A session's lifetime without a refresh when the client asks for none."""
MAX_TTL_SECONDS = 86400.0
"""The longest lifetime without a refresh a session gets (longer requests are cut to it)."""
MIN_TTL_SECONDS = 1.0
"""The shortest (shorter requests are raised to it)."""
RETAIN_CLOSED_SECONDS = 3600.0
"""How long a closed (or expired) session's row is kept, so that closing it again (a retry)
answers "nothing released" rather than not found."""
TICKET_ROOT = "~session"
"""The first key of every ticket path (no namespace can be named so: no node has such a
path)."""
_SWEEP_BATCH = 500
"""How many expired sessions :func:`expire_sessions` ends at most per call."""
_IDS_PER_QUERY = 500
_LOCKED = "aiosdk_locked_ticket_sessions"
"""The key, in an ``AsyncSession``'s ``info``, of the transaction and the ids of the sessions
:func:`live_session` found live and locked ``FOR UPDATE`` in it (see :func:`_hold`)."""


class TicketExistsError(ConflictError):
    """The export number is used already in the session (a released one too), or the shared
    ticket was published already (409 over HTTP, ``ALREADY_EXISTS`` over gRPC)."""


@dataclass(frozen=True)
class Target:
    """What an export (or a shared ticket, or a scope variable) refers to: a catalog node or a
    server object, exactly one of them."""

    type: str
    """``"table"``, ``"array"``, ``"sparse"``, ``"container"`` or a plugin object's type."""
    node_id: str | None = None
    object_id: str | None = None
    sources: tuple[str, ...] = ()
    """The catalog nodes whose ``read`` permission governs access to it (a node: itself; a
    view: its source's sources; an application's object: none)."""
    revision: int = 1
    """The source's revision when it was exported (a view: its source's)."""

    def __post_init__(self) -> None:
        if (self.node_id is None) == (self.object_id is None):
            raise ValueError("a target is a node or a server object: give exactly one id")


def _target(row: TicketExport | TicketScope) -> Target:
    return Target(
        type=row.type,
        node_id=row.node_id,
        object_id=row.object_id,
        sources=tuple(row.sources),
        revision=row.revision,
    )


def ticket_path(session_id: str, number: int) -> str:
    """The catalog path the HTTP routes read export ``number`` of ``session_id`` at
    (``ExportInfo.path``): ``~session/<session_id>/<number>``."""
    return f"{TICKET_ROOT}/{session_id}/{number}"


def shared_digest(shared: bytes) -> str:
    """What is stored of a shared ticket's bytes: their SHA-256, in hex."""
    return hashlib.sha256(bytes(shared)).hexdigest()


def clamp_ttl(
    requested: float | None,
    *,
    default: float = DEFAULT_TTL_SECONDS,
    maximum: float = MAX_TTL_SECONDS,
) -> float:
    """The ttl a session gets for ``requested`` (``None``: ``default``), between
    :data:`MIN_TTL_SECONDS` and ``maximum``; :class:`~..errors.InvalidRequestError` for NaN."""
    ttl = default if requested is None else float(requested)
    if math.isnan(ttl):
        raise InvalidRequestError("ttl_seconds must be a number of seconds")
    return min(max(ttl, MIN_TTL_SECONDS), maximum)


def _check_number(number: int) -> None:
    if not 1 <= number <= MAX_EXPORT_NUMBER:
        raise InvalidRequestError(f"An export number is 1 to {MAX_EXPORT_NUMBER}, not {number}")


def _no_session(session_id: str) -> NotFoundError:
    return NotFoundError(f"No session {session_id[:64]!r}: it was closed, expired, or never opened")


def _no_export(number: int) -> NotFoundError:
    return NotFoundError(f"No export {number} in the session: never made, or released")


# --- sessions ------------------------------------------------------------------------------


async def open_session(db: AsyncSession, owner: str, ttl: float) -> TicketSession:
    """A new session of the principal ``owner`` living ``ttl`` seconds without a refresh (as
    :func:`clamp_ttl` granted it; :class:`ValueError` outside the limits)."""
    if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        raise ValueError(f"a session's ttl is {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS} seconds")
    now = utcnow()
    session = TicketSession(
        id=new_id(),
        owner=owner,
        ttl=ttl,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        closed_at=None,
    )
    db.add(session)
    await db.flush()
    return session


async def live_session(
    db: AsyncSession, owner: str, session_id: str, *, lock: bool = False
) -> TicketSession:
    """The session ``session_id`` of ``owner``, if it is open and has not expired;
    :class:`~..errors.NotFoundError` otherwise (another owner's too). With ``lock``, its row is
    locked (``FOR UPDATE``) until the transaction ends."""
    query = select(TicketSession).where(
        TicketSession.id == session_id, TicketSession.owner == owner
    )
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    session = await db.scalar(query)
    if session is None or session.closed_at is not None or session.expires_at <= utcnow():
        raise _no_session(session_id)
    if lock:
        _locked_sessions(db).add(session.id)
    return session


def _locked_sessions(db: AsyncSession) -> set[str]:
    """The ids of the sessions :func:`live_session` found live and locked (``FOR UPDATE``) in
    the transaction ``db`` is in now."""
    transaction = db.sync_session.get_transaction()
    kept: tuple[object, set[str]] | None = db.info.get(_LOCKED)
    if kept is None or kept[0] is not transaction:
        kept = (transaction, set())
        db.info[_LOCKED] = kept
    return kept[1]


async def refresh_session(db: AsyncSession, owner: str, session_id: str) -> TicketSession:
    """Push the expiry of ``owner``'s live session ``session_id`` to now + its ttl
    (:class:`~..errors.NotFoundError` if it is not live)."""
    session = await live_session(db, owner, session_id, lock=True)
    session.expires_at = utcnow() + timedelta(seconds=session.ttl)
    await db.flush()
    return session


async def close_session(db: AsyncSession, owner: str, session_id: str) -> tuple[int, list[str]]:
    """Close ``owner``'s session ``session_id``, releasing everything it exported: how many
    live exports that released (0 for a session closed or expired already: closing is
    idempotent) and the ids of the server objects whose data to remove after commit.
    :class:`~..errors.NotFoundError` for a session never opened or another owner's."""
    session = await db.scalar(
        select(TicketSession)
        .where(TicketSession.id == session_id, TicketSession.owner == owner)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if session is None:
        raise _no_session(session_id)
    if session.closed_at is not None:
        return 0, []
    now = utcnow()
    live = session.expires_at > now
    released, removed = await _end_sessions(db, [session_id], now)
    return (released if live else 0), removed


async def expire_sessions(db: AsyncSession, now: datetime | None = None) -> tuple[int, list[str]]:
    """End the sessions expired by ``now`` (default: now), up to a few hundred per call
    (another process's sweeper skips those this one has locked), and delete the rows of those
    closed over :data:`RETAIN_CLOSED_SECONDS` ago: how many sessions ended, and the ids of the
    server objects whose data to remove after commit."""
    now = now or utcnow()
    expired = list(
        await db.scalars(
            select(TicketSession.id)
            .where(TicketSession.closed_at.is_(None), TicketSession.expires_at <= now)
            .order_by(TicketSession.expires_at)
            .limit(_SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    removed: list[str] = []
    if expired:
        _, removed = await _end_sessions(db, expired, now)
    await db.execute(
        delete(TicketSession)
        .where(
            TicketSession.closed_at.is_not(None),
            TicketSession.closed_at < now - timedelta(seconds=RETAIN_CLOSED_SECONDS),
        )
        .execution_options(synchronize_session=False)
    )
    return len(expired), removed


async def sweep_due(db: AsyncSession, now: datetime | None = None) -> bool:
    """Whether :func:`expire_sessions` has anything to do: a read, which takes no write lock
    (SQLite's is the whole database's), so an idle sweeper costs the writers nothing."""
    now = now or utcnow()
    due = or_(
        and_(TicketSession.closed_at.is_(None), TicketSession.expires_at <= now),
        TicketSession.closed_at < now - timedelta(seconds=RETAIN_CLOSED_SECONDS),
    )
    return await db.scalar(select(TicketSession.id).where(due).limit(1)) is not None


async def _end_sessions(
    db: AsyncSession, session_ids: Sequence[str], now: datetime
) -> tuple[int, list[str]]:
    """Mark the (locked) sessions closed and delete their exports and shared tickets: how many
    live exports there were, and the data ids of the objects that goes collected."""
    ours = TicketExport.session_id.in_(session_ids)
    await db.execute(
        update(TicketSession)
        .where(TicketSession.id.in_(session_ids))
        .values(closed_at=now)
        .execution_options(synchronize_session=False)
    )
    live = (
        await db.execute(
            select(TicketExport.object_id).where(ours, TicketExport.released.is_(False))
        )
    ).all()
    await db.execute(
        delete(TicketShared)
        .where(TicketShared.session_id.in_(session_ids))
        .execution_options(synchronize_session=False)
    )
    await db.execute(delete(TicketExport).where(ours).execution_options(synchronize_session=False))
    objects = {object_id for (object_id,) in live if object_id is not None}
    return len(live), await _collect(db, objects)


async def _hold(db: AsyncSession, session: TicketSession) -> None:
    """Check ``session`` is still live and keep it so (``FOR SHARE``: a close waits for this
    transaction) while something is added to it; nothing to do if :func:`live_session` found
    it live and locked it ``FOR UPDATE`` in this transaction (a close waits for that lock)."""
    if session.id in _locked_sessions(db):
        return
    found = await db.scalar(
        select(TicketSession.id)
        .where(
            TicketSession.id == session.id,
            TicketSession.closed_at.is_(None),
            TicketSession.expires_at > utcnow(),
        )
        .with_for_update(read=True)
    )
    if found is None:
        raise _no_session(session.id)


# --- exports -------------------------------------------------------------------------------


async def _live_export(
    db: AsyncSession,
    session_id: str,
    number: int,
    *,
    lock: Literal["share", "update"] | None = None,
) -> TicketExport:
    query = select(TicketExport).where(
        TicketExport.session_id == session_id,
        TicketExport.number == number,
        TicketExport.released.is_(False),
    )
    if lock is not None:
        query = query.with_for_update(read=lock == "share").execution_options(
            populate_existing=True
        )
    export = await db.scalar(query)
    if export is None:
        raise _no_export(number)
    return export


async def add_export(
    db: AsyncSession,
    session: TicketSession,
    number: int,
    target: Target,
    request: str | None = None,
) -> TicketExport:
    """Export ``target`` as ``number`` of the live ``session``. :class:`TicketExistsError` if
    the number is used already (or was, and released); :class:`~..errors.NotFoundError` if
    the session ended or the target's server object went meanwhile;
    :class:`~..errors.InvalidRequestError` for a number out of range."""
    _check_number(number)
    await _hold(db, session)
    if target.object_id is not None:
        # Kept from collection (FOR SHARE) until the export commits.
        held = await db.scalar(
            select(TicketObject.id)
            .where(TicketObject.id == target.object_id)
            .with_for_update(read=True)
        )
        if held is None:
            raise NotFoundError("What the ticket refers to was released meanwhile")
    exists = await db.scalar(
        select(func.count())
        .select_from(TicketExport)
        .where(TicketExport.session_id == session.id, TicketExport.number == number)
    )
    if exists:
        raise _number_used(number)
    export = TicketExport(
        session_id=session.id,
        number=number,
        released=False,
        node_id=target.node_id,
        object_id=target.object_id,
        type=target.type,
        sources=list(target.sources),
        revision=target.revision,
        request=request,
        created_at=utcnow(),
    )
    db.add(export)
    try:
        await db.flush()
    except IntegrityError:  # the same number, exported concurrently
        raise _number_used(number) from None
    return export


async def replayed_export(
    db: AsyncSession, session: TicketSession, number: int, request: str
) -> Target | None:
    """The target of the live export ``number`` of ``session`` if the request whose SHA-256
    is ``request`` made it (this request is a retry of that one), else ``None``."""
    _check_number(number)
    export = await db.scalar(
        select(TicketExport).where(
            TicketExport.session_id == session.id,
            TicketExport.number == number,
            TicketExport.released.is_(False),
            TicketExport.request == request,
        )
    )
    return None if export is None else _target(export)


def _number_used(number: int) -> TicketExistsError:
    return TicketExistsError(f"Export number {number} is used already in the session")


async def export_target(db: AsyncSession, session: TicketSession, number: int) -> Target:
    """What the live export ``number`` of ``session`` refers to;
    :class:`~..errors.NotFoundError` if it was never made or was released."""
    _check_number(number)
    return _target(await _live_export(db, session.id, number))


async def release_export(db: AsyncSession, session: TicketSession, number: int) -> list[str]:
    """Release export ``number`` of the live ``session`` (its tombstone stays: the number is
    not used again), and the shared tickets published from it; the data ids to remove after
    commit. Releasing a released export does nothing (a retry whose answer was lost is no
    mistake); :class:`~..errors.NotFoundError` if it was never made."""
    _check_number(number)
    await _hold(db, session)
    export = await db.scalar(
        select(TicketExport)
        .where(TicketExport.session_id == session.id, TicketExport.number == number)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if export is None:
        raise NotFoundError(f"Export {number} was never made in this session")
    if export.released:
        return []
    object_id = export.object_id
    export.released = True
    export.node_id = None
    export.object_id = None
    export.sources = []
    await db.execute(
        delete(TicketShared)
        .where(TicketShared.session_id == session.id, TicketShared.number == number)
        .execution_options(synchronize_session=False)
    )
    await db.flush()
    return await _collect(db, [object_id] if object_id is not None else [])


# --- server objects ------------------------------------------------------------------------


async def new_object(
    db: AsyncSession,
    *,
    type: str,
    family: str | None,
    object_id: str | None = None,
    structure: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    sources: tuple[str, ...] = (),
    owner: str | None = None,
    revision: int = 1,
    app_id: str | None = None,
    field: str | None = None,
) -> str:
    """Record a new server object (``object_id``: the id its data was written under; default a
    new one) and return its id; ``owner``: the principal it was computed for, the only one who
    may read it (see :func:`readable`). Export it in the same transaction: an object no export
    or scope variable refers to is collected by the next release that looks at it."""
    row = TicketObject(
        id=object_id or new_id(),
        type=type,
        family=family,
        structure=structure,
        state=state,
        app_id=app_id,
        field=field,
        sources=list(sources),
        owner=owner,
        revision=revision,
        created_at=utcnow(),
    )
    db.add(row)
    await db.flush()
    return row.id


async def app_object(
    db: AsyncSession, app_id: str, field: str, type: str, initial_state: dict[str, Any]
) -> str:
    """The id of the plugin object of application ``app_id``'s ``field``, made (with
    ``initial_state``) the first time it is asked for; one per field, shared by every session,
    never collected."""
    insert = postgresql.insert if db.get_bind().dialect.name == "postgresql" else sqlite.insert
    await db.execute(
        insert(TicketObject)
        .values(
            id=new_id(),
            type=type,
            family=None,
            structure=None,
            state=initial_state,
            app_id=app_id,
            field=field,
            sources=[],
            revision=1,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["app_id", "field"])
    )
    found = await db.scalar(
        select(TicketObject.id).where(TicketObject.app_id == app_id, TicketObject.field == field)
    )
    assert found is not None
    return found


async def get_object(db: AsyncSession, object_id: str) -> TicketObject:
    """The server object ``object_id`` (its family, structure, state...);
    :class:`~..errors.NotFoundError` if it was collected."""
    found = await db.scalar(
        select(TicketObject)
        .where(TicketObject.id == object_id)
        .execution_options(populate_existing=True)  # as it is now, not as first read
    )
    if found is None:
        raise NotFoundError("The server object was released")
    return found


async def lock_object_state(db: AsyncSession, object_id: str) -> dict[str, Any]:
    """The state of plugin object ``object_id``, its row locked (``FOR UPDATE``) until the
    transaction ends, for a method to change it (:func:`update_object_state`).
    :class:`~..errors.NotFoundError` if it went; :class:`~..errors.InvalidRequestError` if it
    is no plugin object (it has data)."""
    row = (
        await db.execute(
            select(TicketObject.family, TicketObject.state)
            .where(TicketObject.id == object_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise NotFoundError("The server object was released")
    if row.family is not None:
        raise InvalidRequestError(f"The server object is a {row.family}, not a plugin object")
    return dict(row.state or {})


async def update_object_state(db: AsyncSession, object_id: str, state: dict[str, Any]) -> int:
    """Save the new ``state`` of plugin object ``object_id`` (locked by
    :func:`lock_object_state`), bumping its revision; the new revision."""
    revision = await db.scalar(
        update(TicketObject)
        .where(TicketObject.id == object_id)
        .values(state=state, revision=TicketObject.revision + 1)
        .returning(TicketObject.revision)
        .execution_options(synchronize_session=False)
    )
    if revision is None:
        raise NotFoundError("The server object was released")
    return int(revision)


async def _collect(db: AsyncSession, object_ids: Iterable[str]) -> list[str]:
    """Delete those of ``object_ids`` that no live export and no scope variable refers to any
    more (not an application's); the ids of those with data (to remove after commit).

    Each object's row is locked first (``FOR UPDATE``, in id order): an export or a binding of
    it being added holds it ``FOR SHARE`` until it commits, so either it is seen here, or it
    finds the object gone."""
    wanted = sorted(set(object_ids))
    removed: list[str] = []
    for start in range(0, len(wanted), _IDS_PER_QUERY):
        batch = wanted[start : start + _IDS_PER_QUERY]
        rows = (
            await db.execute(
                select(TicketObject.id, TicketObject.family)
                .where(TicketObject.id.in_(batch), TicketObject.app_id.is_(None))
                .order_by(TicketObject.id)
                .with_for_update()
            )
        ).all()
        if not rows:
            continue
        ids = [row.id for row in rows]
        referenced = set(
            await db.scalars(
                union(
                    select(TicketExport.object_id).where(
                        TicketExport.object_id.in_(ids), TicketExport.released.is_(False)
                    ),
                    select(TicketScope.object_id).where(TicketScope.object_id.in_(ids)),
                )
            )
        )
        unreferenced = [row for row in rows if row.id not in referenced]
        if not unreferenced:
            continue
        await db.execute(
            delete(TicketObject)
            .where(TicketObject.id.in_([row.id for row in unreferenced]))
            .execution_options(synchronize_session=False)
        )
        removed.extend(row.id for row in unreferenced if row.family is not None)
    return removed


# --- shared tickets and scope variables ----------------------------------------------------


async def publish(db: AsyncSession, session: TicketSession, number: int, shared: bytes) -> None:
    """Make the shared ticket ``shared`` (its bytes) resolve to the live export ``number`` of
    ``session`` until that export is released. :class:`TicketExistsError` if it was published
    already; :class:`~..errors.InvalidRequestError` if ``shared`` is no shared ticket."""
    _check_number(number)
    try:
        kind = parse_ticket(shared).kind
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
    if kind != "shared":
        raise InvalidRequestError(f"A shared ticket (b'h' and random bytes) is needed, not {kind}")
    await _hold(db, session)
    await _live_export(db, session.id, number, lock="share")  # a release waits for this
    digest = shared_digest(shared)
    if await db.get(TicketShared, digest) is not None:
        raise _published()
    db.add(TicketShared(digest=digest, session_id=session.id, number=number, created_at=utcnow()))
    try:
        await db.flush()
    except IntegrityError:  # published concurrently
        raise _published() from None


def _published() -> TicketExistsError:
    return TicketExistsError("The shared ticket is taken already: publish under new random bytes")


async def shared_target(db: AsyncSession, shared: bytes) -> Target:
    """What the shared ticket ``shared`` resolves to: its export's target, while that export is
    live; :class:`~..errors.NotFoundError` otherwise (never published, released, its session
    ended)."""
    export = await db.scalar(
        select(TicketExport)
        .join(
            TicketShared,
            (TicketShared.session_id == TicketExport.session_id)
            & (TicketShared.number == TicketExport.number),
        )
        .join(TicketSession, TicketSession.id == TicketExport.session_id)
        .where(
            TicketShared.digest == shared_digest(shared),
            TicketExport.released.is_(False),
            TicketSession.closed_at.is_(None),
            TicketSession.expires_at > utcnow(),
        )
    )
    if export is None:
        raise NotFoundError("No such shared ticket: never published, or its source was released")
    return _target(export)


def _check_name(name: str) -> None:
    problem = key_problem(name)
    if problem is not None:
        raise InvalidRequestError(f"Invalid scope variable name {name[:100]!r}: {problem}")


async def bind(
    db: AsyncSession,
    session: TicketSession,
    name: str,
    number: int,
    bound_by: str,
    *,
    may_rebind_any: bool = False,
) -> list[str]:
    """Bind the scope variable ``name`` (a valid catalog key) to the target of the live export
    ``number`` of ``session``, replacing what it was bound to; it outlives the session. The
    data ids to remove after commit (of an object only the old binding kept).
    :class:`~..errors.InvalidRequestError` for a bad name;
    :class:`~..errors.PermissionDeniedError` for a name another principal bound (unless
    ``may_rebind_any``: an admin)."""
    _check_name(name)
    _check_number(number)
    await _hold(db, session)
    export = await _live_export(db, session.id, number, lock="share")  # a release waits
    scope = await db.scalar(
        select(TicketScope)
        .where(TicketScope.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if scope is not None and scope.bound_by != bound_by and not may_rebind_any:
        raise PermissionDeniedError(
            f"The scope variable {name[:100]!r} was bound by another user: only they (or an"
            " admin) may bind it again"
        )
    replaced = None
    now = utcnow()
    values = {
        "node_id": export.node_id,
        "object_id": export.object_id,
        "type": export.type,
        "sources": list(export.sources),
        "revision": export.revision,
        "bound_by": bound_by,
        "bound_at": now,
    }
    if scope is None:
        db.add(TicketScope(name=name, **values))
    else:
        replaced = scope.object_id
        for key, value in values.items():
            setattr(scope, key, value)
    try:
        await db.flush()
    except IntegrityError:  # a first binding of the name, concurrently
        raise ConflictError(f"{name[:100]!r} is being bound concurrently: retry") from None
    if replaced is None or replaced == export.object_id:
        return []
    return await _collect(db, [replaced])


async def scope_target(db: AsyncSession, name: str) -> Target:
    """What the scope variable ``name`` is bound to; :class:`~..errors.NotFoundError` if it is
    not bound."""
    scope = await db.get(TicketScope, name)
    if scope is None:
        raise NotFoundError(f"No scope variable {name[:100]!r}")
    return _target(scope)


# --- access --------------------------------------------------------------------------------


async def readable(db: AsyncSession, viewer: Viewer, target: Target) -> bool:
    """Whether ``viewer`` may read ``target`` now: every one of its source nodes (``False``
    when one was deleted), and, for a server object computed for someone (its ``owner``),
    only as that one."""
    wanted = set(target.sources)
    if not wanted:
        if target.object_id is None:
            return True
        owner = await db.scalar(
            select(TicketObject.owner).where(TicketObject.id == target.object_id)
        )
        caller = viewer.caller
        return owner is None or (caller is not None and caller.name == owner)
    nodes = (
        await db.execute(
            select(Node.id, Node.path, Node.namespace).where(Node.id.in_(sorted(wanted)))
        )
    ).all()
    if len(nodes) != len(wanted):
        return False
    shares = await shares_covering(db, [node.path for node in nodes])
    return all(
        READ in viewer.actions(node.namespace, covering(shares, node.path)) for node in nodes
    )
