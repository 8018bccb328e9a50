"""Arrays: a subclass of the node with its own ``__init__``, and a cross reference back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, ClassVar

from .nodes import AsyncNode, Store

if TYPE_CHECKING:
    from .nodes import AsyncContainer


class AsyncArrayClient(AsyncNode):
    """An array of integers."""

    kind: ClassVar[str] = "array"

    def __init__(self, path: str, store: Store | None = None, *, dtype: str = "int64") -> None:
        super().__init__(path, store)
        self._dtype = dtype

    @property
    def dtype(self) -> str:
        """The element type."""
        return self._dtype

    @dtype.setter
    def dtype(self, value: str) -> None:
        self._store.touch()
        self._dtype = value

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape (looked up in the store: on the loop thread)."""
        self._store.touch()
        return (len(self._store.arrays[self.path]),)

    async def read(self, start: int = 0, stop: int | None = None) -> list[int]:
        """The values from ``start`` to ``stop``."""
        await asyncio.sleep(0)
        return self._store.arrays[self.path][start:stop]

    async def parent(self) -> AsyncContainer:
        """The container holding this array."""
        container = await super().parent()
        assert container is not None
        return container

    async def iter_blocks(self, size: int = 2) -> AsyncIterator[list[int]]:
        """The values, ``size`` at a time."""
        values = self._store.arrays[self.path]
        for start in range(0, len(values), size):
            await asyncio.sleep(0)
            yield values[start : start + size]
