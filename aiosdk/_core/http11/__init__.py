"""A fast asyncio HTTP/1.1 transport for ``httpx.AsyncClient``."""

from __future__ import annotations

import sniffio

from .transport import DEFAULT_LIMITS, AsyncioTransport

__all__ = ["DEFAULT_LIMITS", "AsyncioTransport", "fast_transport_supported"]


def fast_transport_supported() -> bool:
    """Whether ``AsyncioTransport`` can serve the caller: True only inside asyncio."""
    try:
        return sniffio.current_async_library() == "asyncio"
    except sniffio.AsyncLibraryNotFoundError:
        return False
