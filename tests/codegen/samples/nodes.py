"""Nodes of an in-memory store, shaped like the catalog's: containers as mappings, with views.

The store is what the loop owns: every access records the thread it ran on, so the tests can
see which twin members run on the facade's loop thread and which on the caller's.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, overload

import anyio
from typing_extensions import Self

from aiosdk._core.paging import AsyncPager, Page

from .constants import REMOTE_PAGE_SIZE
from .sessions import AsyncConnection, AsyncSession

if TYPE_CHECKING:
    from .arrays import AsyncArrayClient

DEFAULT_PAGE_SIZE = 2
_SEPARATOR = "/"


@dataclass
class Store:
    """Containers (their children's names, in order) and arrays (their values), by path."""

    containers: dict[str, list[str]] = field(default_factory=lambda: {"/": []})
    arrays: dict[str, list[int]] = field(default_factory=dict)
    threads: list[str] = field(default_factory=list)  # the thread of each access, in order
    walking: int = 0  # walks started and not yet closed

    def touch(self) -> None:
        self.threads.append(threading.current_thread().name)

    @property
    def revision(self) -> int:
        self.touch()
        return len(self.threads)

    def add(self, path: str, values: list[int] | None = None) -> None:
        """Add a container (or an array of ``values``) at ``path``, under its parent."""
        parent, _, name = path.rpartition(_SEPARATOR)
        self.containers[parent or _SEPARATOR].append(name)
        if values is None:
            self.containers[path] = []
        else:
            self.arrays[path] = values


def join(*parts: str, separator: str = _SEPARATOR) -> str:
    return separator + separator.join(p.strip(separator) for p in parts if p.strip(separator))


def node_at(path: str, store: Store) -> AsyncNode:
    """The node at ``path``, of its kind's class."""
    from .arrays import AsyncArrayClient

    if path in store.arrays:
        return AsyncArrayClient(path, store)
    if path in store.containers:
        return AsyncContainer(path, store)
    raise KeyError(path)


class AsyncNode:
    """A node of the store at ``path``."""

    kind: ClassVar[str] = "node"

    def __init__(self, path: str, store: Store | None = None) -> None:
        self.path = path
        self._store = store if store is not None else Store()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r}>"

    @property
    def name(self) -> str:
        """The last segment of the path (computed: runs on the loop thread)."""
        self._store.touch()
        return self.path.rpartition(_SEPARATOR)[2]

    @property
    def store(self) -> Store:
        """The store."""
        return self._store

    @property
    def revision(self) -> int:
        """The store's revision (an attribute read: runs on the caller's thread)."""
        return self._store.revision

    async def parent(self) -> AsyncContainer | None:
        """The container holding this node; ``None`` for the root."""
        await asyncio.sleep(0)
        if self.path == _SEPARATOR:
            return None
        return AsyncContainer(self.path.rpartition(_SEPARATOR)[0] or _SEPARATOR, self._store)

    def sibling(self, name: str) -> Self:
        """A node of the same class next to this one."""
        self._store.touch()
        return type(self)(join(self.path.rpartition(_SEPARATOR)[0], name), self._store)

    @staticmethod
    def join(*parts: str, separator: str = _SEPARATOR) -> str:
        """``parts`` joined into an absolute path."""
        return join(*parts, separator=separator)

    @classmethod
    def at(cls, path: str, store: Store) -> Self:
        """A node of this very class at ``path``."""
        return cls(path, store)

    @classmethod
    async def lookup(cls, path: str, store: Store) -> AsyncNode:
        """The node at ``path``, of the class its kind says (declared as a node)."""
        await asyncio.sleep(0)
        return node_at(path, store)

    async def fail(self) -> None:
        """Raise ``LookupError`` from two calls deep."""
        await self._deeper()

    async def _deeper(self) -> None:
        await asyncio.sleep(0)
        raise LookupError(self.path)


class AsyncContainer(AsyncNode):
    """A container of nodes, by name.

    ``await container[name]`` gives a child, ``async for name in container`` the names.
    ``await container.__len__()`` counts them. (async only)
    """

    kind: ClassVar[str] = "container"

    def _names(self) -> list[str]:
        self._store.touch()
        return self._store.containers[self.path]

    async def _children(self) -> list[AsyncNode]:
        await asyncio.sleep(0)
        return [node_at(join(self.path, name), self._store) for name in self._names()]

    async def __getitem__(self, key: str) -> AsyncNode:
        """The child ``key``; ``KeyError`` if there is none."""
        await asyncio.sleep(0)
        if key not in self._names():
            raise KeyError(key)
        return node_at(join(self.path, key), self._store)

    async def __len__(self) -> int:
        """How many children there are."""
        await asyncio.sleep(0)
        return len(self._names())

    async def __aiter__(self) -> AsyncIterator[str]:
        """The children's names, in order."""
        for name in list(self._names()):
            await asyncio.sleep(0)
            yield name

    async def __contains__(self, key: object) -> bool:
        """Whether ``key`` names a child (one request, not a listing)."""
        await asyncio.sleep(0)
        return key in self._names()

    def values(self) -> AsyncValues:
        """The children as a view that indexes like a sequence: ``[i]``, ``[-1]``, ``[:n]``."""
        return AsyncValues(self)

    async def child(self, key: str) -> AsyncArrayClient | AsyncContainer | None:
        """The child ``key``, or ``None``."""
        await asyncio.sleep(0)
        path = join(self.path, key)
        if key not in self._names():
            return None
        from .arrays import AsyncArrayClient

        if path in self._store.arrays:
            return AsyncArrayClient(path, self._store)
        return AsyncContainer(path, self._store)

    async def newest(self) -> AsyncNode | str:
        """The last child, or ``"empty"``."""
        children = await self._children()
        return children[-1] if children else "empty"

    async def children(self) -> tuple[AsyncNode, ...]:
        """Every child."""
        return tuple(await self._children())

    async def first_with_count(self) -> tuple[AsyncNode, int]:
        """The first child and how many there are."""
        children = await self._children()
        return children[0], len(children)

    async def named(self) -> list[tuple[str, AsyncNode]]:
        """(name, child) pairs."""
        return [(child.path.rpartition(_SEPARATOR)[2], child) for child in await self._children()]

    async def by_name(self) -> dict[str, AsyncNode]:
        """The children by name."""
        return dict(await self.named())

    async def grouped(self) -> dict[str, list[AsyncNode]]:
        """The children by kind."""
        groups: dict[str, list[AsyncNode]] = {}
        for child in await self._children():
            groups.setdefault(child.kind, []).append(child)
        return groups

    def listing(
        self, *, page_size: int = DEFAULT_PAGE_SIZE, limit: int = REMOTE_PAGE_SIZE * 10
    ) -> AsyncPager[AsyncNode]:
        """The children, ``page_size`` per page, ``limit`` at most."""

        async def fetch(cursor: str | None) -> Page[AsyncNode]:
            start = int(cursor or 0)
            children = (await self._children())[:limit]
            end = start + page_size
            return Page(children[start:end], str(end) if end < len(children) else None)

        return AsyncPager(fetch)

    async def walk(self) -> AsyncIterator[AsyncNode]:
        """Every node below this one, depth first."""
        self._store.walking += 1
        try:
            for child in await self._children():
                yield child
                if isinstance(child, AsyncContainer):
                    async for below in child.walk():
                        yield below
        finally:
            self._store.walking -= 1

    async def cursor(self) -> AsyncIterator[AsyncNode]:
        """The children through an iterator object (a coroutine that returns an iterator)."""
        return AsyncCursor(await self._children())

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session on this container, open while the block runs."""
        session = AsyncSession(self)
        with anyio.fail_after(60):  # a cancel scope exited in another task raises
            try:
                yield session
            finally:
                session.close()

    def connect(self, token: str) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection to this container's channel."""
        return AsyncConnection(token)

    async def link(self, key: str, target: AsyncNode) -> str:
        """Record ``target`` under ``key``; the path it points to."""
        if not isinstance(target, AsyncNode):
            raise TypeError(f"not an AsyncNode: {target!r}")
        await asyncio.sleep(0)
        return f"{key}->{target.path}"

    async def count_nodes(self, nodes: Sequence[AsyncNode], extra: AsyncNode | None = None) -> int:
        """How many of ``nodes`` (and ``extra``) are nodes of the async API."""
        await asyncio.sleep(0)
        found = [*nodes, *([extra] if extra is not None else [])]
        if not all(isinstance(node, AsyncNode) for node in found):
            raise TypeError("a twin reached the async code")
        return len(found)


class AsyncValues:
    """The children of a container, in order."""

    def __init__(self, container: AsyncContainer) -> None:
        self._container = container

    @overload
    async def __getitem__(self, index: int) -> AsyncNode: ...
    @overload
    async def __getitem__(self, index: slice) -> list[AsyncNode]: ...
    async def __getitem__(self, index: int | slice) -> AsyncNode | list[AsyncNode]:
        """One child by position (negative from the end), or a slice of them."""
        children = await self._container._children()
        return children[index]

    async def __len__(self) -> int:
        """How many children there are."""
        return len(await self._container._children())

    async def __aiter__(self) -> AsyncIterator[AsyncNode]:
        """The children, in order."""
        for child in await self._container._children():
            yield child

    async def __contains__(self, value: object) -> bool:
        """Whether ``value`` is a node among the children (by path)."""
        paths = [child.path for child in await self._container._children()]
        return isinstance(value, AsyncNode) and value.path in paths


class AsyncCursor:
    """An async iterator object over some nodes."""

    def __init__(self, nodes: list[AsyncNode]) -> None:
        self._nodes = list(nodes)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> AsyncNode:
        await asyncio.sleep(0)
        if not self._nodes:
            raise StopAsyncIteration
        return self._nodes.pop(0)
