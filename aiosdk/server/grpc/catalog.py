"""The catalog service: watching a container's children (a server stream of their events).

A watch sends ``READY`` first, then every event of the container numbered above the resume
point, in order, each once (see :mod:`aiosdk.server.catalog.events`). It waits for wake-ups
between batches (:class:`~aiosdk.server.catalog.state.Wakeups`), and looks anyway every
:attr:`~aiosdk.server.catalog.state.Wakeups.poll_seconds`. After every wait it checks again that
the call's credentials still hold and that the caller may still read the container: a watcher
who lost access (or whose container is gone) gets ``NOT_FOUND``, as if it never existed.

How far back a watch may start depends on how the caller reads the container. Through its
namespace (its own, an organization's, or the admin token): from any kept event. Only through
a share, or because the container is public: no earlier than "now", the container's sequence
when it opens its first stream, since the older events are history from before it could read
the container (children since deleted, their metadata then). To resume that stream after an
interruption, ``READY`` carries a *resume token*, signed with the server's keyring and bound to
the caller, the container, the sequence it was admitted at, and the shares it read through: a
request with the token may start at or after that sequence while one of those shares still
stands (a share removed and made again is another share). Anything earlier is ``OUT_OF_RANGE``,
like a pruned resume point: what a client does about both is the same, watch from now.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from grpclib import GRPCError, Status
from sqlalchemy import func, select

from ...proto import CatalogEvent, CatalogEventKind, CatalogServiceBase, WatchRequest
from ..auth import Principal
from ..authorization import READ, Caller
from ..catalog import models
from ..catalog.access import ShareRow, actions_of, node_actions, parse_actions
from ..catalog.models import PUBLIC, Node, NodeShare
from ..catalog.paths import ancestors, join, parse_path
from ..catalog.state import Wakeups
from ..errors import InvalidRequestError
from ..state import ServerState
from ..storage.models import utcnow
from .auth import current_call

__all__ = ["CatalogService"]

BATCH = 500
"""Events read from the database at a time."""
RESUME_PURPOSE = "catalog watch resume"
"""The keyring purpose of resume tokens."""

_KINDS = {
    models.EventKind.CREATED: CatalogEventKind.CREATED,
    models.EventKind.UPDATED: CatalogEventKind.UPDATED,
    models.EventKind.DELETED: CatalogEventKind.DELETED,
}


class CatalogService(CatalogServiceBase):
    """Watches of catalog containers.

    ``closing`` is set when the server stops: open watches then end with ``UNAVAILABLE``.
    """

    def __init__(self, state: ServerState, closing: asyncio.Event) -> None:
        self.state = state
        self._closing = closing

    async def watch(self, message: WatchRequest) -> AsyncIterator[CatalogEvent]:
        """The events of the container at ``message.path`` after ``message.after_sequence``
        (unset: from now), after a ``READY`` message carrying that point."""
        try:
            keys = parse_path(message.path)
        except InvalidRequestError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, exc.message) from None
        if not keys:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                "The catalog's root cannot be watched: watch a namespace or a container",
            )
        path = join(*keys)
        principal = current_call.get().principal
        container, reader = await self._reader(principal, path)
        if container.structure_family != "container":
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"{path!r} is not a container: it has no children"
            )
        after = message.after_sequence
        if after is not None and not reader.full_history:
            after = self._admit(principal, container, reader, after, message.resume_token)
        wakeups = self.state.catalog.wakeups
        with wakeups.waiter(container.id) as woken:
            stream = self._events(principal, container, reader, after, wakeups, woken)
            closing = asyncio.ensure_future(self._closing.wait())
            closing.add_done_callback(lambda _task: woken.set())
            try:
                async for event in stream:
                    yield event
            finally:
                await stream.aclose()
                closing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await closing

    async def _events(
        self,
        principal: Principal,
        container: Node,
        reader: _Reader,
        after: int | None,
        wakeups: Wakeups,
        woken: asyncio.Event,
    ) -> AsyncGenerator[CatalogEvent]:
        current = container.child_sequence
        start = current if after is None else after
        if start > current:
            raise _gap(f"{start} is ahead of the container's current sequence {current}")
        if start < current:
            async with self.state.sessions() as session:
                oldest = await session.scalar(
                    select(func.min(models.CatalogEvent.sequence)).where(
                        models.CatalogEvent.container_id == container.id
                    )
                )
            if oldest is None or oldest > start + 1:
                raise _gap(f"the events after {start} are no longer kept")
        yield CatalogEvent(
            kind=CatalogEventKind.READY,
            sequence=start,
            node_id=container.id,
            key=container.key,
            path=container.path,
            revision=container.revision,
            structure_family=container.structure_family,
            at=utcnow(),
            resume_token=self._resume_token(principal, container.id, start, reader.basis),
        )
        last = start
        call = current_call.get()
        while True:
            woken.clear()  # before the read: a wake-up during it is kept for the wait
            async with self.state.sessions() as session:
                rows = list(
                    await session.scalars(
                        select(models.CatalogEvent)
                        .where(
                            models.CatalogEvent.container_id == container.id,
                            models.CatalogEvent.sequence > last,
                        )
                        .order_by(models.CatalogEvent.sequence)
                        .limit(BATCH)
                    )
                )
            if rows and rows[0].sequence != last + 1:  # pruned while this watcher lagged
                raise _gap(f"the events after {last} are no longer kept")
            for row in rows:
                yield _message(row, container.path)
                last = row.sequence
            if len(rows) < BATCH:
                with anyio.move_on_after(wakeups.poll_seconds):
                    await woken.wait()
            if self._closing.is_set():
                raise GRPCError(Status.UNAVAILABLE, "The server is shutting down")
            if not await call.still_valid():  # logged out, revoked, expired
                raise GRPCError(Status.UNAUTHENTICATED, "Invalid, expired or revoked token")
            container = await self._readable(principal, node_id=container.id, path=container.path)

    def _admit(
        self,
        principal: Principal,
        container: Node,
        reader: _Reader,
        after: int,
        token: str | None,
    ) -> int:
        """``after`` if a caller without the container's full history may start there: from
        the container's current sequence on, or from the point a valid ``token`` of its own
        admitted it at; ``OUT_OF_RANGE`` otherwise."""
        current = container.child_sequence
        if after >= current:
            return after  # from now (or ahead of it: a gap, as for anyone)
        admitted = None if token is None else self._admitted(principal, container.id, token)
        if admitted is not None:
            sequence, basis = admitted
            if sequence <= after and basis & reader.basis:
                return after
        refused = "" if token is None else " (the resume token given is not valid here)"
        raise _gap(
            f"reading the container only through a share or because it is public, this watcher"
            f" may start at its current sequence {current}, not before{refused}"
        )

    def _resume_token(
        self, principal: Principal, container_id: str, sequence: int, basis: frozenset[str]
    ) -> str:
        """A token admitting ``principal`` to resume watching ``container_id`` after
        ``sequence`` or later, while one of the shares in ``basis`` stands."""
        payload = json.dumps(
            [principal.name, container_id, sequence, sorted(basis)], separators=(",", ":")
        ).encode()
        signature = self.state.keyring.sign(RESUME_PURPOSE, payload)
        return f"{base64.urlsafe_b64encode(payload).rstrip(b'=').decode()}.{signature}"

    def _admitted(
        self, principal: Principal, container_id: str, token: str
    ) -> tuple[int, frozenset[str]] | None:
        """The sequence and share basis of ``token`` if the server signed it for this
        ``principal`` and ``container_id``; ``None`` otherwise."""
        encoded, _dot, signature = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            return None
        if not self.state.keyring.verify(RESUME_PURPOSE, payload, signature):
            return None
        name, bound, sequence, basis = json.loads(payload)  # (signed by us: well formed)
        if name != principal.name or bound != container_id:
            return None
        return int(sequence), frozenset(basis)

    async def _reader(self, principal: Principal, path: str) -> tuple[Node, _Reader]:
        """The node at ``path`` and how ``principal`` reads it; ``NOT_FOUND`` if it may not."""
        async with self.state.sessions() as session:
            node = await session.scalar(select(Node).where(Node.path == path))
            if node is not None:
                caller = await self.state.callers.caller(session, principal)
                shares = list(
                    await session.scalars(
                        select(NodeShare).where(NodeShare.path.in_(ancestors(node.path)))
                    )
                )
                rows = [
                    ShareRow(s.node_id, s.path, s.grantee, parse_actions(s.actions)) for s in shares
                ]
                allow_anonymous = self.state.accounts.allow_anonymous
                if READ in actions_of(
                    caller, node.namespace, rows, allow_anonymous=allow_anonymous
                ):
                    basis = frozenset(
                        _share_id(share) for share in shares if _grants_read(caller, share)
                    )
                    return node, _Reader(READ in caller.granted(node.namespace), basis)
        raise GRPCError(Status.NOT_FOUND, f"No catalog node at {path!r}")

    async def _readable(
        self, principal: Principal, *, path: str, node_id: str | None = None
    ) -> Node:
        """The node at ``path`` (or with id ``node_id``: it may have moved) if ``principal``
        may read it; ``NOT_FOUND`` otherwise, whether it exists or not."""
        async with self.state.sessions() as session:
            query = select(Node).where(Node.id == node_id if node_id else Node.path == path)
            node = await session.scalar(query)
            if node is not None:
                caller = await self.state.callers.caller(session, principal)
                allow_anonymous = self.state.accounts.allow_anonymous
                actions, _shares = await node_actions(
                    session, caller, node, allow_anonymous=allow_anonymous
                )
                if READ in actions:
                    return node
        raise GRPCError(Status.NOT_FOUND, f"No catalog node at {path!r}")


@dataclass(frozen=True)
class _Reader:
    """How a watcher reads its container."""

    full_history: bool
    """Through its namespace's grants (or as the admin token): it may replay every kept event."""
    basis: frozenset[str]
    """The shares (:func:`_share_id`) it reads through, public ones included."""


def _grants_read(caller: Caller, share: NodeShare) -> bool:
    return share.grantee == PUBLIC or READ in caller.granted(share.grantee)


def _share_id(share: NodeShare) -> str:
    """A share's identity: made again after a removal, it is another one."""
    made = f"{share.node_id}\0{share.grantee}\0{share.created_at.isoformat()}"
    return hashlib.sha256(made.encode()).hexdigest()[:32]


def _message(row: models.CatalogEvent, container_path: str) -> CatalogEvent:
    metadata: dict[str, Any] | None = row.node_metadata
    return CatalogEvent(
        kind=_KINDS[row.kind],
        sequence=row.sequence,
        node_id=row.node_id,
        key=row.key,
        path=f"{container_path}/{row.key}",
        revision=row.revision,
        structure_family=row.structure_family,
        metadata_json=None if metadata is None else json.dumps(metadata, separators=(",", ":")),
        at=row.at,
    )


def _gap(reason: str) -> GRPCError:
    return GRPCError(
        Status.OUT_OF_RANGE, f"The watch cannot resume there: {reason}; watch from now"
    )
