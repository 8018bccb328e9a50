"""The keys, values and items of a container, with random access that never loads it whole.

``await view[i]`` is one request for one entry (``offset=i``, ``page_size=1``); ``view[-i]``
is one request too, in the reversed order (``reverse=true``, ``offset=i-1``), never a count;
a slice with non-negative bounds is one request per 1000 entries; one with negative bounds
reads the reversed order, or, when the bounds mix signs, counts once first. Steps are applied
to what was fetched. ``async for`` pages lazily with the server's keyset cursor, so entries
added or removed meanwhile never make it skip or repeat one of those that stay.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

if TYPE_CHECKING:
    from .containers import AsyncContainer
    from .nodes import AsyncNode

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "AsyncContainerItems",
    "AsyncContainerKeys",
    "AsyncContainerValues",
    "Plan",
    "plan_counted",
    "plan_index",
    "plan_slice",
]

DEFAULT_PAGE_SIZE = 100
"""Entries per request when iterating."""
MAX_PAGE_SIZE = 1000
"""The most entries the server sends in one page."""

Fields = Literal["keys", "full", "no_metadata"]
T = TypeVar("T")


# -- index arithmetic (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How to read a slice: ``limit`` entries (``None``: to the end) from ``offset`` of the
    order (``reverse``: of the reversed order), then reversed if ``flip``, then every
    ``step``-th of them."""

    reverse: bool
    offset: int
    limit: int | None
    flip: bool = False
    step: int = 1

    def take(self, items: Sequence[T]) -> list[T]:
        """The slice's entries, from what the plan fetched."""
        ordered = list(reversed(items)) if self.flip else list(items)
        return ordered[:: self.step]


def plan_index(index: int) -> tuple[bool, int]:
    """``(reverse, offset)`` of entry ``index``: a negative index counts from the end, which
    is the reversed order's ``-index - 1``."""
    return (True, -index - 1) if index < 0 else (False, index)


def _bounds(index: slice) -> tuple[int | None, int | None, int]:
    start = None if index.start is None else operator.index(index.start)
    stop = None if index.stop is None else operator.index(index.stop)
    step = 1 if index.step is None else operator.index(index.step)
    if step == 0:
        raise ValueError("slice step cannot be zero")
    return start, stop, step


def _span(start: int, stop: int | None) -> int | None:
    return None if stop is None else max(0, stop - start)


def plan_slice(index: slice) -> Plan | None:
    """The plan of ``index`` without knowing the length; ``None`` when its bounds mix signs
    (then :func:`plan_counted`, with one count)."""
    start, stop, step = _bounds(index)
    neg_start = start is not None and start < 0
    neg_stop = stop is not None and stop < 0
    if step > 0:
        if not neg_start and not neg_stop:
            first = start or 0
            return Plan(False, first, _span(first, stop), step=step)
        if neg_start and (stop is None or neg_stop):
            # Entries n+start .. n+stop-1 are the reversed order's -stop .. -start-1.
            assert start is not None
            first = 0 if stop is None else -stop
            return Plan(True, first, max(0, -start - first), flip=True, step=step)
        if start is None and neg_stop:
            assert stop is not None
            return Plan(True, -stop, None, flip=True, step=step)
        return None
    if (start is None or start < 0) and (stop is None or stop < 0):
        # Walking backwards from n+start is walking the reversed order forwards from -start-1.
        first = 0 if start is None else -start - 1
        return Plan(True, first, _span(first, None if stop is None else -stop - 1), step=-step)
    if (start is None or start >= 0) and (stop is None or stop >= 0):
        first = 0 if stop is None else stop + 1
        end = None if start is None else start + 1
        return Plan(False, first, _span(first, end), flip=True, step=-step)
    return None


def plan_counted(index: slice, count: int) -> Plan:
    """The plan of ``index`` for a container of ``count`` entries."""
    start, stop, step = index.indices(count)
    if step > 0:
        return Plan(False, start, max(0, stop - start), step=step)
    return Plan(False, stop + 1, max(0, start - stop), flip=True, step=-step)


# -- reading ---------------------------------------------------------------------------------


async def _fetch(container: AsyncContainer, plan: Plan, fields: Fields) -> list[dict[str, Any]]:
    if plan.limit == 0:
        return []
    items: list[dict[str, Any]] = []
    token: str | None = None
    remaining = plan.limit
    while True:
        size = MAX_PAGE_SIZE if remaining is None else min(remaining, MAX_PAGE_SIZE)
        page, token = await container._page(
            offset=plan.offset if token is None else None,
            page_token=token,
            page_size=size,
            reverse=plan.reverse,
            fields=fields,
        )
        items.extend(page[:size])
        if remaining is not None:
            remaining -= min(len(page), size)
        if token is None or not page or (remaining is not None and remaining <= 0):
            return items


async def _at(container: AsyncContainer, index: int, fields: Fields) -> dict[str, Any]:
    if isinstance(index, bool) or not isinstance(index, int):
        index = operator.index(index)  # TypeError for what is not an index
    reverse, offset = plan_index(index)
    page, _ = await container._page(
        offset=offset, page_size=1, reverse=reverse, fields=fields, page_token=None
    )
    if not page:
        raise IndexError(
            f"index {index} is out of range: {container._describe()} has fewer entries"
        )
    return page[0]


async def _slice(container: AsyncContainer, index: slice, fields: Fields) -> list[dict[str, Any]]:
    plan = plan_slice(index)
    if plan is None:
        plan = plan_counted(index, await container.count())
    return plan.take(await _fetch(container, plan, fields))


async def _pages(
    container: AsyncContainer, fields: Fields, page_size: int = DEFAULT_PAGE_SIZE
) -> AsyncIterator[list[dict[str, Any]]]:
    token: str | None = None
    seen: set[str] = set()
    while True:
        page, token = await container._page(
            offset=None, page_token=token, page_size=page_size, reverse=False, fields=fields
        )
        yield page
        if token is None or not page:
            return
        if token in seen:
            from .._core.errors import ProtocolError

            raise ProtocolError("the server returned a page cursor a second time; stopping")
        seen.add(token)


def _count_of(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, not {n!r}")
    return n


class AsyncContainerKeys:
    """The keys of a container's children, in the container's order (its sort, then key).

    ``await keys[i]``, ``await keys[-1]``, ``await keys[:10]``, ``await keys.first()``,
    ``await keys.head(5)``, ``async for key in keys``; ``await keys.__len__()`` counts. Keys
    travel alone (``fields=keys``): no metadata is sent.
    """

    def __init__(self, container: AsyncContainer) -> None:
        self._container = container

    def __repr__(self) -> str:
        return f"<AsyncContainerKeys of {self._container._describe()}>"

    @overload
    async def __getitem__(self, index: int) -> str: ...
    @overload
    async def __getitem__(self, index: slice) -> list[str]: ...
    async def __getitem__(self, index: int | slice) -> str | list[str]:
        """One key by position (negative: from the end), or a slice of them; ``IndexError``
        out of range. One request (a slice: one per 1000 keys)."""
        if isinstance(index, slice):
            return [str(item["key"]) for item in await _slice(self._container, index, "keys")]
        return str((await _at(self._container, index, "keys"))["key"])

    async def __len__(self) -> int:
        """How many keys there are (one count)."""
        return await self._container.count()

    async def __aiter__(self) -> AsyncIterator[str]:
        """Every key, page by page."""
        # Keys are small: the largest pages (a tenth of the requests of full pages).
        async for page in _pages(self._container, "keys", MAX_PAGE_SIZE):
            for item in page:
                yield str(item["key"])

    async def __contains__(self, key: object) -> bool:
        """Whether ``key`` is one of the keys (one request)."""
        return await self._container.__contains__(key)

    async def first(self) -> str:
        """The first key; ``IndexError`` if there is none."""
        return await self[0]

    async def last(self) -> str:
        """The last key; ``IndexError`` if there is none."""
        return await self[-1]

    async def head(self, n: int = 5) -> list[str]:
        """The first ``n`` keys (fewer if there are fewer)."""
        return await self[: _count_of(n)]

    async def tail(self, n: int = 5) -> list[str]:
        """The last ``n`` keys (fewer if there are fewer), in order."""
        return await self[-_count_of(n) :] if n else []


class AsyncContainerValues:
    """The children of a container, in the container's order (its sort, then key).

    ``await values[i]`` (one request for one child), ``await values[-1]``,
    ``await values[:10]``, ``await values.first()``, ``await values.tail(5)``,
    ``async for node in values``; ``await values.__len__()`` counts.
    """

    def __init__(self, container: AsyncContainer) -> None:
        self._container = container

    def __repr__(self) -> str:
        return f"<AsyncContainerValues of {self._container._describe()}>"

    @overload
    async def __getitem__(self, index: int) -> AsyncNode: ...
    @overload
    async def __getitem__(self, index: slice) -> list[AsyncNode]: ...
    async def __getitem__(self, index: int | slice) -> AsyncNode | list[AsyncNode]:
        """One child by position (negative: from the end), or a slice of them; ``IndexError``
        out of range. One request (a slice: one per 1000 children)."""
        node = self._container._node
        if isinstance(index, slice):
            return [node(item) for item in await _slice(self._container, index, "full")]
        return node(await _at(self._container, index, "full"))

    async def __len__(self) -> int:
        """How many children there are (one count)."""
        return await self._container.count()

    async def __aiter__(self) -> AsyncIterator[AsyncNode]:
        """Every child, page by page."""
        async for page in _pages(self._container, "full"):
            for item in page:
                yield self._container._node(item)

    async def __contains__(self, value: object) -> bool:
        """Whether ``value`` is a node among the children (the same node: by id)."""
        return await self._container._holds(value)

    async def first(self) -> AsyncNode:
        """The first child; ``IndexError`` if there is none."""
        return await self[0]

    async def last(self) -> AsyncNode:
        """The last child; ``IndexError`` if there is none."""
        return await self[-1]

    async def head(self, n: int = 5) -> list[AsyncNode]:
        """The first ``n`` children (fewer if there are fewer)."""
        return await self[: _count_of(n)]

    async def tail(self, n: int = 5) -> list[AsyncNode]:
        """The last ``n`` children (fewer if there are fewer), in order."""
        return await self[-_count_of(n) :] if n else []


class AsyncContainerItems:
    """``(key, child)`` pairs of a container, in the container's order (its sort, then key).

    ``await items[i]``, ``await items[-1]``, ``await items[:10]``, ``await items.first()``,
    ``async for key, node in items``; ``await items.__len__()`` counts.
    """

    def __init__(self, container: AsyncContainer) -> None:
        self._container = container

    def __repr__(self) -> str:
        return f"<AsyncContainerItems of {self._container._describe()}>"

    @overload
    async def __getitem__(self, index: int) -> tuple[str, AsyncNode]: ...
    @overload
    async def __getitem__(self, index: slice) -> list[tuple[str, AsyncNode]]: ...
    async def __getitem__(
        self, index: int | slice
    ) -> tuple[str, AsyncNode] | list[tuple[str, AsyncNode]]:
        """One ``(key, child)`` by position (negative: from the end), or a slice of them;
        ``IndexError`` out of range. One request (a slice: one per 1000 children)."""
        if isinstance(index, slice):
            return [self._pair(item) for item in await _slice(self._container, index, "full")]
        return self._pair(await _at(self._container, index, "full"))

    def _pair(self, item: dict[str, Any]) -> tuple[str, AsyncNode]:
        node = self._container._node(item)
        return node.key, node

    async def __len__(self) -> int:
        """How many children there are (one count)."""
        return await self._container.count()

    async def __aiter__(self) -> AsyncIterator[tuple[str, AsyncNode]]:
        """Every ``(key, child)``, page by page."""
        async for page in _pages(self._container, "full"):
            for item in page:
                yield self._pair(item)

    async def __contains__(self, item: object) -> bool:
        """Whether ``item`` is a ``(key, node)`` pair of a child and its key."""
        if not (isinstance(item, tuple) and len(item) == 2):
            return False
        key, node = item
        return getattr(node, "key", None) == key and await self._container._holds(node)

    async def first(self) -> tuple[str, AsyncNode]:
        """The first ``(key, child)``; ``IndexError`` if there is none."""
        return await self[0]

    async def last(self) -> tuple[str, AsyncNode]:
        """The last ``(key, child)``; ``IndexError`` if there is none."""
        return await self[-1]

    async def head(self, n: int = 5) -> list[tuple[str, AsyncNode]]:
        """The first ``n`` pairs (fewer if there are fewer)."""
        return await self[: _count_of(n)]

    async def tail(self, n: int = 5) -> list[tuple[str, AsyncNode]]:
        """The last ``n`` pairs (fewer if there are fewer), in order."""
        return await self[-_count_of(n) :] if n else []
