"""Watching a container: its children's changes, pushed by the server (a gRPC server stream).

Events are numbered per container, gaplessly, in the order their changes committed. A watch
remembers the number of the last event it received (or of the stream's start), so an interrupted
stream that the retry mode resumes (``"forceful"``) asks for exactly the events after it: none
is lost, none repeated. When the server no longer keeps them (it keeps a container's newest
10,000 events), the watch raises :class:`~aiosdk.WatchGapError` instead of skipping silently.

A caller that reads the container only through a share (or because it is public) may not replay
its history: it watches from now, and ``after`` earlier than the container's current sequence
is a :class:`~aiosdk.WatchGapError`. Its reconnections still resume where they left off: each
stream's first message carries a resume token the next one sends back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from .._core.context import ClientContext
from .._core.errors import ProtocolError, StatusError, WatchGapError
from ..proto import CatalogEvent as WireEvent
from ..proto import CatalogEventKind, CatalogServiceStub, WatchRequest

__all__ = ["CatalogEvent", "EventKind", "watch"]

EventKind = Literal["created", "updated", "deleted"]

_KINDS: dict[CatalogEventKind, EventKind] = {
    CatalogEventKind.CREATED: "created",
    CatalogEventKind.UPDATED: "updated",
    CatalogEventKind.DELETED: "deleted",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class CatalogEvent:
    """A change among a container's children.

    Attributes:
        kind: ``"created"``, ``"updated"`` (metadata, specs, tags or sharing) or ``"deleted"``.
            A rename is a deletion under the old key then a creation under the new one; a move,
            a deletion in the old container and a creation in the new.
        sequence: the event's number in its container, from 1, without gaps: resume a watch
            after it with ``watch(after=sequence)``.
        key: the child's key.
        path: the child's catalog path.
        node_id: the child's id.
        revision: the child's revision after the change (its last one, for a deletion).
        structure_family: ``"container"``, ``"array"``, ``"table"``...
        metadata: the child's metadata after the change; ``None`` for a deletion.
        at: when the change was recorded (UTC).
    """

    kind: EventKind
    sequence: int
    key: str
    path: str
    node_id: str
    revision: int
    structure_family: str
    metadata: Mapping[str, Any] | None
    at: datetime


async def watch(ctx: ClientContext, path: str, after: int | None) -> AsyncIterator[CatalogEvent]:
    """The events of the container at ``path`` numbered above ``after`` (``None``: from now),
    as they happen, until the caller stops iterating.

    Raises :class:`~aiosdk.NotFoundError` when the container does not exist or the caller may
    not read it (also later, if the caller loses access while watching), and
    :class:`~aiosdk.WatchGapError` when the events after ``after`` are no longer kept, or are
    not the caller's to replay (it reads the container only through a share, or as a public
    one: it may watch from now).
    """
    if after is not None and after < 0:
        raise ValueError(f"after must be 0 or more, not {after!r}")
    container_id: str | None = None
    last = after  # what was received: the next stream resumes after it
    resume_token: str | None = None  # the newest stream's: it lets the next one resume there

    def open_stream(stub: CatalogServiceStub, _last: WireEvent | None) -> AsyncIterator[WireEvent]:
        request = WatchRequest(path=path, after_sequence=last, resume_token=resume_token)
        return stub.watch(request)

    stream = ctx.grpc_stream(CatalogServiceStub, open_stream, idempotent=True, what="Watch")
    try:
        async for wire in stream:
            if wire.kind is CatalogEventKind.READY:
                if container_id is not None and wire.node_id != container_id:
                    # Reconnected to another container at the same path: its numbers are not ours.
                    raise WatchGapError(
                        f"Watch {path!r}: the container was replaced while reconnecting;"
                        " watch from now",
                        grpc_status="OUT_OF_RANGE",
                    )
                container_id = wire.node_id
                last = wire.sequence
                if wire.resume_token is not None:
                    resume_token = wire.resume_token
                continue
            if last is not None and wire.sequence <= last:
                continue  # already delivered (the server never repeats one; be sure anyway)
            last = wire.sequence
            yield _event(wire)
    except StatusError as exc:
        if exc.grpc_status == "OUT_OF_RANGE" and not isinstance(exc, WatchGapError):
            raise WatchGapError(
                exc.message,
                status_code=exc.status_code,
                request_id=exc.request_id,
                grpc_status=exc.grpc_status,
            ) from exc
        raise
    finally:
        await stream.aclose()  # type: ignore[attr-defined]  # an async generator


def _event(wire: WireEvent) -> CatalogEvent:
    kind = _KINDS.get(wire.kind)
    if kind is None:
        raise ProtocolError(f"Watch: unknown event kind {wire.kind!r}")
    metadata = None if wire.metadata_json is None else json.loads(wire.metadata_json)
    return CatalogEvent(
        kind=kind,
        sequence=wire.sequence,
        key=wire.key,
        path=wire.path,
        node_id=wire.node_id,
        revision=wire.revision,
        structure_family=wire.structure_family,
        metadata=metadata,
        at=wire.at if wire.at is not None else _EPOCH,
    )
