"""Sessions and connections: async context managers, one made by a decorator, one a class."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING

from typing_extensions import Self

if TYPE_CHECKING:
    from .nodes import AsyncContainer


class Dropped(Exception):
    """A connection suppresses this one when it leaves its block."""


class AsyncSession:
    """A session on a container; it notes the task that opened it and the one that closed it."""

    def __init__(self, container: AsyncContainer) -> None:
        self.container = container
        self.tasks: list[asyncio.Task[object] | None] = [asyncio.current_task()]
        self.closed: bool = False

    def close(self) -> None:
        """End the session (the context manager does)."""
        self.tasks.append(asyncio.current_task())
        self.closed = True

    async def names(self) -> list[str]:
        """The names in the container."""
        return [name async for name in self.container]


class AsyncConnection:
    """A connection: messages sent to it come back out of ``async for``."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.open: bool = False
        self._messages: list[str] = []
        self._task: asyncio.Task[object] | None = None

    async def __aenter__(self) -> Self:
        await asyncio.sleep(0)
        if self.token == "revoked":
            raise PermissionError("the token was revoked")
        self._task = asyncio.current_task()
        self.open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if asyncio.current_task() is not self._task:
            raise RuntimeError("exited in another task than the one that entered")
        self.open = False
        return exc_type is Dropped

    async def send(self, text: str) -> None:
        """Queue ``text``."""
        await asyncio.sleep(0)
        self._messages.append(text)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        await asyncio.sleep(0)
        if not self._messages:
            raise StopAsyncIteration
        return self._messages.pop(0)
