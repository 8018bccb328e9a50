"""The server's errors (:mod:`aiosdk.server.errors`, raised by code shared by both wires) as
gRPC statuses."""

from __future__ import annotations

from grpclib import GRPCError, Status
from starlette.exceptions import HTTPException

__all__ = ["grpc_error"]

_STATUS_BY_HTTP = {
    400: Status.INVALID_ARGUMENT,
    401: Status.UNAUTHENTICATED,
    403: Status.PERMISSION_DENIED,
    404: Status.NOT_FOUND,
    409: Status.ABORTED,
    413: Status.RESOURCE_EXHAUSTED,
    422: Status.INVALID_ARGUMENT,
    429: Status.RESOURCE_EXHAUSTED,
    503: Status.UNAVAILABLE,
}


def grpc_error(exc: HTTPException) -> GRPCError:
    """The gRPC error standing for ``exc``, with its message."""
    message = getattr(exc, "message", None) or str(exc.detail)
    return GRPCError(_STATUS_BY_HTTP.get(exc.status_code, Status.INTERNAL), message)
