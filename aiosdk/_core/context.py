"""What every service object of a client holds: the shared transport and the client's options."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

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
