"""The gRPC status service over loopback, with a raw grpclib channel."""

from __future__ import annotations

import anyio
import httpx
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality

from aiosdk import _version
from aiosdk.proto import GetStatusRequest, ServerStatus, StatusServiceStub, WatchStatusRequest
from aiosdk.server import Server

from .conftest import create_token

pytestmark = pytest.mark.anyio

GET_STATUS = "/aiosdk.v1.StatusService/GetStatus"


@pytest.fixture(scope="module")
def database_url() -> None:
    """The gRPC side shares the token store; SQLite is enough here."""


@pytest.fixture
def stub(server: Server, channel: Channel) -> StatusServiceStub:
    return StatusServiceStub(channel, metadata={"authorization": f"Bearer {server.admin_token}"})


async def test_get_status(stub: StatusServiceStub) -> None:
    status = await stub.get_status(GetStatusRequest())
    assert status.version == _version.__version__
    assert status.uptime_seconds > 0
    assert status.load_average >= 0
    assert status.sequence == 0
    assert status.active_streams == 0


async def test_requests_served_counts_http_and_grpc(
    stub: StatusServiceStub, client: httpx.AsyncClient
) -> None:
    before = (await stub.get_status()).requests_served
    for _ in range(3):
        await client.get("/")
    after = (await stub.get_status()).requests_served
    assert after == before + 3 + 1  # three HTTP requests and the first GetStatus


async def test_watch_status_streams_numbered_updates(stub: StatusServiceStub) -> None:
    updates = [
        update
        async for update in stub.watch_status(
            WatchStatusRequest(interval_seconds=0.01, max_updates=3)
        )
    ]
    assert [update.sequence for update in updates] == [1, 2, 3]
    assert all(update.active_streams == 1 for update in updates)
    assert updates[0].uptime_seconds < updates[-1].uptime_seconds


async def test_watch_status_runs_until_the_client_leaves(stub: StatusServiceStub) -> None:
    sequences = []
    async for update in stub.watch_status(WatchStatusRequest(interval_seconds=0.01)):
        sequences.append(update.sequence)
        if len(sequences) == 5:
            break
    assert sequences == [1, 2, 3, 4, 5]
    with anyio.fail_after(10):  # the server notices the client left and ends the stream
        while (await stub.get_status()).active_streams:  # noqa: ASYNC110 - polls the server
            await anyio.sleep(0.01)


async def test_watch_status_rejects_a_negative_interval(stub: StatusServiceStub) -> None:
    with pytest.raises(GRPCError) as caught:
        async for _ in stub.watch_status(WatchStatusRequest(interval_seconds=-1)):
            pass
    assert caught.value.status is Status.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "metadata",
    [{}, {"authorization": "Bearer aio_wrong"}, {"authorization": "Basic YWRtaW46YWRtaW4="}],
)
async def test_calls_require_a_valid_token(channel: Channel, metadata: dict[str, str]) -> None:
    stub = StatusServiceStub(channel, metadata=metadata)
    with pytest.raises(GRPCError) as caught:
        await stub.get_status()
    assert caught.value.status is Status.UNAUTHENTICATED
    with pytest.raises(GRPCError) as caught:
        async for _ in stub.watch_status(WatchStatusRequest(max_updates=1)):
            pass
    assert caught.value.status is Status.UNAUTHENTICATED


async def test_revoked_token_is_rejected(channel: Channel, client: httpx.AsyncClient) -> None:
    created = await create_token(client, label="grpc")
    stub = StatusServiceStub(channel, metadata={"authorization": f"Bearer {created['token']}"})
    await stub.get_status()
    assert (await client.delete(f"/tokens/{created['id']}")).status_code == 204
    with pytest.raises(GRPCError) as caught:
        await stub.get_status()
    assert caught.value.status is Status.UNAUTHENTICATED


@pytest.mark.parametrize("token", ["admin", "none"])
async def test_request_id_in_metadata(server: Server, channel: Channel, token: str) -> None:
    metadata = {"x-request-id": "grpc-call-7"}
    if token == "admin":
        metadata["authorization"] = f"Bearer {server.admin_token}"
    async with channel.request(
        GET_STATUS, Cardinality.UNARY_UNARY, GetStatusRequest, ServerStatus, metadata=metadata
    ) as stream:
        await stream.send_message(GetStatusRequest(), end=True)
        if token == "admin":
            await stream.recv_message()
            await stream.recv_trailing_metadata()
            initial = stream.initial_metadata
            assert initial is not None
            assert initial["x-request-id"] == "grpc-call-7"
        else:
            with pytest.raises(GRPCError):
                await stream.recv_initial_metadata()
    trailing = stream.trailing_metadata
    assert trailing is not None
    assert trailing["x-request-id"] == "grpc-call-7"
