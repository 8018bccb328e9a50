"""One pager for every listing: awaitable for the first page, async-iterable for every item."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import ProtocolError

__all__ = ["AsyncPager", "Page"]

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing and the cursor of the next one (``None`` on the last page)."""

    items: Sequence[T]
    next_page_token: str | None

    @property
    def has_next(self) -> bool:
        return self.next_page_token is not None


class AsyncPager(Generic[T]):
    """The pages of a listing, fetched lazily, each request with its own retries.

    ``await pager.first_page()`` gives the first page; ``async for item in pager`` yields every
    item across pages exactly once; ``async for page in pager.pages()`` yields the pages.
    ``await pager`` is short for ``await pager.first_page()``. (async only)
    """

    def __init__(self, fetch: Callable[[str | None], Awaitable[Page[T]]]) -> None:
        self._fetch = fetch

    async def first_page(self) -> Page[T]:
        """Fetch the first page."""
        return await self._fetch(None)

    def __await__(self) -> Generator[object, None, Page[T]]:
        return self.first_page().__await__()

    async def pages(self) -> AsyncIterator[Page[T]]:
        """Every page, in order.

        A server that hands out a cursor it gave before would loop forever: that is a
        :class:`~aiosdk.ProtocolError` instead.
        """
        token: str | None = None
        seen: set[str] = set()
        while True:
            page = await self._fetch(token)
            yield page
            token = page.next_page_token
            if token is None:
                return
            if token in seen:
                raise ProtocolError(
                    f"the server returned page cursor {token[:40]!r} a second time; stopping"
                    " rather than listing the same pages again"
                )
            seen.add(token)

    async def __aiter__(self) -> AsyncIterator[T]:
        """Every item of every page, each once."""
        async for page in self.pages():
            for item in page.items:
                yield item
