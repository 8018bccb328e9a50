"""``GET /api/v1/``: what this server is and where its gRPC endpoint is."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from ...._version import __version__
from ...config import MAX_PAGE_SIZE
from ..dependencies import Current

__all__ = ["router"]

router = APIRouter(tags=["info"])

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


class GrpcEndpoint(BaseModel):
    """Where the gRPC services listen."""

    host: str
    port: int
    tls: bool
    """Whether gRPC is served over TLS (always so when HTTP is)."""


class ServerLimits(BaseModel):
    """Limits the server enforces that a client can plan for."""

    max_page_size: int
    max_request_body_bytes: int
    max_data_body_bytes: int
    """The largest body of a data route (an array block or region, a table partition, a
    sparse array's entries): 413 past it."""
    max_header_bytes: int
    """The most bytes a request line and its header fields may take (431 past it)."""
    max_grpc_message_bytes: int
    """The largest gRPC request message (``RESOURCE_EXHAUSTED`` past it)."""
    http_idle_timeout_seconds: float
    """How long the server keeps an idle HTTP connection: reuse one only before that."""


class ServerInfo(BaseModel):
    """The server's identity, endpoints and limits, and who is asking."""

    name: str
    version: str
    api_version: str
    grpc: GrpcEndpoint
    limits: ServerLimits
    principal: str


@router.get("/", summary="Server information")
async def get_info(request: Request, call: Current) -> ServerInfo:
    """The server's version, gRPC endpoint and limits."""
    state = call.state
    host = state.grpc_host
    limits = state.limits
    if host in _WILDCARD_HOSTS:  # listening everywhere: the client reaches us by its URL's host
        host = request.url.hostname or "127.0.0.1"
    return ServerInfo(
        name="aiosdk",
        version=__version__,
        api_version="v1",
        grpc=GrpcEndpoint(host=host, port=state.grpc_port, tls=state.grpc_tls),
        limits=ServerLimits(
            max_page_size=MAX_PAGE_SIZE,
            max_request_body_bytes=limits.max_request_body_bytes,
            max_data_body_bytes=limits.max_data_body_bytes,
            max_header_bytes=limits.max_header_bytes,
            max_grpc_message_bytes=limits.max_grpc_message_bytes,
            http_idle_timeout_seconds=limits.http_idle_timeout_seconds,
        ),
        principal=call.principal.name,
    )
