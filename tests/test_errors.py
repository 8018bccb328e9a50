"""HTTP and gRPC statuses map to the same exception classes."""

from __future__ import annotations

import pytest
from grpclib.const import Status

import aiosdk
from aiosdk._core.errors import error_for_grpc_status, error_for_http_status


@pytest.mark.parametrize(
    ("http", "grpc", "cls"),
    [
        (400, Status.INVALID_ARGUMENT, aiosdk.BadRequestError),
        (401, Status.UNAUTHENTICATED, aiosdk.AuthenticationError),
        (403, Status.PERMISSION_DENIED, aiosdk.PermissionDeniedError),
        (404, Status.NOT_FOUND, aiosdk.NotFoundError),
        (409, Status.ALREADY_EXISTS, aiosdk.ConflictError),
        (429, Status.RESOURCE_EXHAUSTED, aiosdk.RateLimitError),
        (500, Status.INTERNAL, aiosdk.InternalServerError),
        (503, Status.UNAVAILABLE, aiosdk.ServiceUnavailableError),
    ],
)
def test_both_wires_map_to_one_class(http: int, grpc: Status, cls: type[Exception]) -> None:
    from_http = error_for_http_status(http, "m", request_id="r")
    from_grpc = error_for_grpc_status(grpc, "m")
    assert type(from_http) is type(from_grpc) is cls
    assert from_http.status_code == from_grpc.status_code == http
    assert from_grpc.grpc_status == grpc.name
    assert str(from_http) == f"m (HTTP {http}, request id r)"
    assert f"gRPC {grpc.name}" in str(from_grpc)


def test_unlisted_statuses_fall_back_by_class() -> None:
    assert type(error_for_http_status(418, "teapot")) is aiosdk.StatusError
    assert type(error_for_http_status(599, "odd")) is aiosdk.ServerError
    assert error_for_http_status(429, "slow", retry_after=3).retry_after == 3
    assert "data loss" in error_for_grpc_status(Status.DATA_LOSS, None).message
