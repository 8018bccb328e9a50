"""What every service object of a client holds: the shared transport and the client's options."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

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
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """An HTTP call through the transport's one request path."""
        return await self.transport.request(
            method, path, params=params, json=json, idempotent=idempotent, options=self.options
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
