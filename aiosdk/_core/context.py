"""What every service object of a client holds: the shared transport and the client's options."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from .bulk import Sink
from .errors import ProtocolError
from .options import RequestOptions
from .transport import Transport

__all__ = ["ClientContext"]

T = TypeVar("T")
StubT = TypeVar("StubT")


@dataclass
class ClientContext:
    """The transport plus the options in force; services read ``options`` at call time, so
    ``client.retry_mode(...)`` reaches every service object already handed out."""

    transport: Transport
    options: RequestOptions

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: object = None,
        content: bytes | bytearray | memoryview | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        idempotency_key: bool = True,
    ) -> httpx.Response:
        """An HTTP call through the transport's one request path.

        The body is ``json`` or ``content`` (raw bytes from any C-contiguous buffer, sent with
        ``headers`` such as a ``Content-Type``; see :meth:`Transport.request`).
        ``idempotency_key=False`` sends an idempotent method (a data ``PUT``) without its key.
        """
        return await self.transport.request(
            method,
            path,
            params=params,
            json=json,
            content=content,
            headers=headers,
            idempotent=idempotent,
            idempotency_key=idempotency_key,
            options=self.options,
        )

    async def download(
        self,
        method: str,
        path: str,
        *,
        sink: Sink,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        expected_size: int | None = None,
    ) -> httpx.Response:
        """An HTTP call whose body goes to ``sink(offset, span)`` span by span, resumed after a
        broken connection as the retry mode allows (see :meth:`Transport.download`)."""
        return await self.transport.download(
            method,
            path,
            sink=sink,
            params=params,
            headers=headers,
            expected_size=expected_size,
            options=self.options,
        )

    async def fetch(
        self,
        method: str,
        path: str,
        decode: Callable[[Any], T],
        *,
        params: Mapping[str, Any] | None = None,
        json: object = None,
    ) -> T:
        """An HTTP call whose JSON answer ``decode`` turns into the result.

        An answer that is not the JSON ``decode`` expects is a :class:`~aiosdk.ProtocolError`,
        never a raw ``KeyError`` or ``ValueError``.
        """
        response = await self.request(method, path, params=params, json=json)
        try:
            return decode(response.json())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(
                f"{method} {path}: unexpected response: {type(exc).__name__}: {exc}"
            ) from exc

    async def grpc_unary(
        self,
        stub_cls: Callable[..., StubT],
        invoke: Callable[[StubT], Awaitable[T]],
        *,
        idempotent: bool,
        what: str,
    ) -> T:
        """A unary gRPC call through the transport's one request path."""
        return await self.transport.grpc_unary(
            stub_cls, invoke, idempotent=idempotent, options=self.options, what=what
        )

    def grpc_stream(
        self,
        stub_cls: Callable[..., StubT],
        open_stream: Callable[[StubT, T | None], AsyncIterator[T]],
        *,
        idempotent: bool,
        what: str,
    ) -> AsyncIterator[T]:
        """A server-streaming gRPC call through the transport's one request path."""
        return self.transport.grpc_stream(
            stub_cls, open_stream, idempotent=idempotent, options=self.options, what=what
        )
