"""Copying nodes between catalogs (two servers, or two places of one): :func:`copy`.

A copy walks the source tree and makes each node at the destination with the source's structure
family, metadata, specs, tags and structure, then moves its data: an array block by block, a
table partition by partition, a sparse array whole. Transfers run ``concurrency`` at a time
across the whole tree.

Re-running a copy resumes it: a node already at the destination is kept if it is of the same
kind and shape (else the copy stops with :class:`~aiosdk.ConflictError`, overwriting nothing),
its metadata, specs and tags are brought in line, and each block or partition is compared with
the source's and written only if it differs. So an interrupted copy, run again, writes only
what is missing or different. A table at the destination with more partitions than the
source's cannot be made identical in place (partitions are never removed): it is deleted and
copied anew.
"""

from __future__ import annotations

import itertools
from typing import Any

import anyio

from .._core.concurrency import check_concurrency, run_bounded
from .._core.errors import ConfigurationError, ConflictError
from .._core.optional import require
from .._core.progress import Progress, Tracker, check_progress, tracking
from .arrays import AsyncArrayClient
from .containers import AsyncContainer
from .metadata import check_metadata, check_specs
from .nodes import AsyncNode
from .sparse import AsyncSparseClient
from .tables import AsyncTableClient

__all__ = ["copy"]

_SAME_STRUCTURE = {
    "array": ("data_type", "shape", "chunks"),
    "table": ("arrow_schema",),
    "sparse": ("layout", "shape", "data_type"),
}
"""What must agree between a source node and one already at the destination."""
_WALKERS = 64
"""Nodes, blocks and partitions worked on at once; the transfers among them take turns in
``concurrency`` slots."""


async def copy(
    source: AsyncNode,
    destination: AsyncContainer,
    *,
    key: str | None = None,
    concurrency: int = 8,
    progress: Progress = False,
) -> AsyncNode:
    """Copy ``source`` (and, for a container, everything in it) into the container
    ``destination`` as ``key`` (by default the source's key); the copy at the destination.

    The two may be on different servers (each node carries its own client). ``concurrency``
    bounds the transfers in flight across the whole tree; ``progress`` (``True`` for a bar on a
    terminal, or a callable ``(done_bytes, None)``) counts the bytes moved. Running it again
    after an interruption writes only what is missing or different (see the module's
    docstring).
    """
    check_concurrency(concurrency)
    check_progress(progress)
    if not isinstance(source, AsyncNode):
        raise ConfigurationError(f"the source must be a catalog node, not {type(source).__name__}")
    if not isinstance(destination, AsyncContainer):
        raise ConfigurationError(
            f"the destination must be a container, not {type(destination).__name__}"
        )
    if _within(destination, source):
        raise ConfigurationError(
            f"cannot copy {source.path or 'the root'!r} into {destination.path or 'the root'!r},"
            " which is inside it on the same server: the copy would copy itself"
        )
    async with tracking(progress, None, f"copy {source.path}") as tracker:
        copier = _Copier(anyio.CapacityLimiter(concurrency), tracker)
        return await copier.node(source, destination, key or source.key)


def _within(destination: AsyncNode, source: AsyncNode) -> bool:
    """Whether ``destination`` is ``source`` or below it, on the same server."""
    if destination._ctx.transport.url != source._ctx.transport.url:
        return False
    inner, outer = destination.path, source.path
    return not outer or inner == outer or inner.startswith(outer + "/")


class _Copier:
    def __init__(self, limiter: anyio.CapacityLimiter, tracker: Tracker) -> None:
        self._limiter = limiter
        self._tracker = tracker

    async def node(self, source: AsyncNode, into: AsyncContainer, key: str) -> AsyncNode:
        existing = await into.get(key, None)
        if existing is not None:
            _check_same_kind(source, existing)
            if _more_partitions(existing, source):
                await existing.delete()  # partitions cannot be removed: the table is made anew
                existing = None
        if existing is None:
            target = await into.new(
                source.structure_family,
                key,
                metadata=dict(source.metadata),
                specs=list(source.specs),
                tags=list(source.tags),
                file_type=source.file_type,
                structure=source.structure(),
            )
        else:
            await _bring_in_line(existing, source)
            target = existing
        fresh = existing is None  # nothing there to compare with
        if isinstance(source, AsyncContainer) and isinstance(target, AsyncContainer):
            children = [item async for item in source.items()]

            async def child(item: tuple[str, AsyncNode]) -> None:
                await self.node(item[1], target, item[0])

            await run_bounded(children, child, _WALKERS)
        elif isinstance(source, AsyncArrayClient) and isinstance(target, AsyncArrayClient):
            await self._array(source, target, fresh)
        elif isinstance(source, AsyncTableClient) and isinstance(target, AsyncTableClient):
            await self._table(source, target, fresh)
        elif isinstance(source, AsyncSparseClient) and isinstance(target, AsyncSparseClient):
            await self._sparse(source, target, fresh)
        return await target.refresh()

    async def _array(self, source: AsyncArrayClient, target: AsyncArrayClient, fresh: bool) -> None:
        async def block(index: tuple[int, ...]) -> None:
            async with self._limiter:
                data = await source.read_block(index)
                if fresh or not await _identical(await target.read_block(index), data):
                    await target.write_block(data, index)
                self._tracker.advance(data.nbytes)

        await run_bounded(itertools.product(*(range(n) for n in source.blocks)), block, _WALKERS)

    async def _table(self, source: AsyncTableClient, target: AsyncTableClient, fresh: bool) -> None:
        there = target.npartitions  # a new table has the source's count, none written yet

        async def partition(i: int) -> None:
            async with self._limiter:
                data = await source.read_partition(i, as_="arrow")
                if (
                    fresh
                    or i >= there
                    or not data.equals(await target.read_partition(i, as_="arrow"))
                ):
                    await target.write_partition(data, i)
                self._tracker.advance(data.nbytes)

        count = source.npartitions
        await run_bounded(range(min(there, count)), partition, _WALKERS)
        for i in range(there, count):  # past the destination's last one: appended in order
            await partition(i)

    async def _sparse(
        self, source: AsyncSparseClient, target: AsyncSparseClient, fresh: bool
    ) -> None:
        async with self._limiter:
            data = await source.read()
            if fresh or target.nnz != data.nnz or not await _same_coo(data, await target.read()):
                await target.write(data.coords, data.data)
            self._tracker.advance(data.data.nbytes + data.coords.nbytes)


def _more_partitions(existing: AsyncNode, source: AsyncNode) -> bool:
    """Whether ``existing`` is a table with more partitions than the table ``source``."""
    return (
        isinstance(existing, AsyncTableClient)
        and isinstance(source, AsyncTableClient)
        and existing.npartitions > source.npartitions
    )


async def _bring_in_line(existing: AsyncNode, source: AsyncNode) -> None:
    """Give ``existing`` the metadata, specs and tags of ``source``, in one change if any
    differs (none if all agree: a re-run moves no revision)."""
    changes: dict[str, Any] = {}
    if dict(existing.metadata) != dict(source.metadata):
        changes["metadata"] = check_metadata(dict(source.metadata))
    if list(existing.specs) != list(source.specs):
        changes["specs"] = check_specs(list(source.specs))
    if sorted(existing.tags) != sorted(source.tags):
        changes["tags"] = list(source.tags)
    if changes:
        await existing._patch(changes, "bring the copy in line")


def _check_same_kind(source: AsyncNode, existing: AsyncNode) -> None:
    if existing.structure_family != source.structure_family:
        raise ConflictError(
            f"{existing.path!r} exists with structure family {existing.structure_family!r}, not"
            f" the source's {source.structure_family!r}: not overwritten"
        )
    fields = _SAME_STRUCTURE.get(source.structure_family, ())
    theirs, ours = existing.structure() or {}, source.structure() or {}
    for name in fields:
        if theirs.get(name) != ours.get(name):
            raise ConflictError(
                f"{existing.path!r} exists with another {name} ({theirs.get(name)!r}, the"
                f" source has {ours.get(name)!r}): not overwritten"
            )


async def _identical(a: Any, b: Any) -> bool:
    """Whether two arrays hold the same bytes (so NaNs match, and -0.0 is not 0.0), compared
    in a worker thread: blocks are megabytes."""

    def compare() -> bool:
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        np = require("numpy", "copying arrays")
        left, right = (np.ascontiguousarray(x).reshape(-1).view(np.uint8) for x in (a, b))
        return bool(np.array_equal(left, right))

    return await anyio.to_thread.run_sync(compare)


async def _same_coo(a: Any, b: Any) -> bool:
    return (
        a.shape == b.shape
        and await _identical(a.coords, b.coords)
        and await _identical(a.data, b.data)
    )
