"""One pager for every listing: awaitable for the first page, async-iterable for every item."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

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
        """Every page, in order."""
        token: str | None = None
        while True:
            page = await self._fetch(token)
            yield page
            if page.next_page_token is None:
                return
            if page.next_page_token == token:
                raise RuntimeError("the server returned the same page cursor twice")
            token = page.next_page_token

    async def __aiter__(self) -> AsyncIterator[T]:
        """Every item of every page, each once."""
        async for page in self.pages():
            for item in page.items:
                yield item
