"""The gRPC token service: the HTTP API's rules, idempotency keys, and immediate revocation.

Over loopback with grpclib and with the official grpcio client built from our .proto files, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import anyio
import grpc
import httpx
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel

from aiosdk.proto import (
    CreateTokenRequest,
    RevokeTokenRequest,
    StatusServiceStub,
    TokenServiceStub,
)
from aiosdk.server import Server, ServerConfig, notify

from .conftest import create_token, make_client
from .grpcio_stubs import grpcio_stubs

pytestmark = pytest.mark.anyio


def stub_for(channel: Channel, token: str, key: str | None = None) -> TokenServiceStub:
    metadata = {"authorization": f"Bearer {token}"}
    if key is not None:
        metadata["idempotency-key"] = key
    return TokenServiceStub(channel, metadata=metadata)


async def labels(client: httpx.AsyncClient) -> list[str]:
    items = (await client.get("/tokens", params={"page_size": 1000})).json()["items"]
    return [item["label"] for item in items]


async def test_create_is_applied_once_per_key(
    server: Server, channel: Channel, client: httpx.AsyncClient
) -> None:
    label, key = f"grpc-{uuid.uuid4().hex}", uuid.uuid4().hex
    stub = stub_for(channel, server.admin_token, key)
    first = await stub.create_token(CreateTokenRequest(label=label, expires_in=3600))
    again = await stub.create_token(CreateTokenRequest(label=label, expires_in=3600))
    assert again.token.id == first.token.id  # a replay ...
    assert again.secret == first.secret
    assert (await labels(client)).count(label) == 1  # ... not a second token
    assert first.token.expires_at is not None
    assert first.token.created_at is not None
    assert first.token.expires_at > first.token.created_at
    listed = (await client.get(f"/tokens/{first.token.id}")).json()
    assert listed["label"] == label  # the same store as the HTTP API
    with pytest.raises(GRPCError) as info:  # the same key for another call is refused
        await stub.create_token(CreateTokenRequest(label="other"))
    assert info.value.status is Status.INVALID_ARGUMENT
    without_key = stub_for(channel, server.admin_token)
    made = [await without_key.create_token(CreateTokenRequest(label=label)) for _ in range(2)]
    assert made[0].token.id != made[1].token.id  # without a key, each call is its own


@pytest.mark.parametrize(
    "request_",
    [
        CreateTokenRequest(label=""),
        CreateTokenRequest(label="x" * 101),
        CreateTokenRequest(label="nul\x00inside"),
        CreateTokenRequest(label="t", expires_in=0),
        CreateTokenRequest(label="t", expires_in=10**12),
        CreateTokenRequest(label="t", owner="no spaces allowed"),
    ],
)
async def test_invalid_requests_are_invalid_argument(
    server: Server, channel: Channel, client: httpx.AsyncClient, request_: CreateTokenRequest
) -> None:
    before = await labels(client)
    with pytest.raises(GRPCError) as info:
        await stub_for(channel, server.admin_token).create_token(request_)
    assert info.value.status is Status.INVALID_ARGUMENT
    assert info.value.message
    assert await labels(client) == before


async def test_who_may_do_what(server: Server, channel: Channel, client: httpx.AsyncClient) -> None:
    with pytest.raises(GRPCError) as info:
        await TokenServiceStub(channel).create_token(CreateTokenRequest(label="anonymous"))
    assert info.value.status is Status.UNAUTHENTICATED

    alice = await create_token(client, owner=f"alice-{uuid.uuid4().hex[:8]}")
    as_alice = stub_for(channel, alice["token"])
    with pytest.raises(GRPCError) as info:
        await as_alice.create_token(CreateTokenRequest(label="for bob", owner="bob"))
    assert info.value.status is Status.PERMISSION_DENIED
    admins = (await client.get("/tokens")).json()["items"][0]["id"]
    with pytest.raises(GRPCError) as info:  # not hers to see, let alone revoke
        await as_alice.revoke_token(RevokeTokenRequest(id=admins))
    assert info.value.status is Status.NOT_FOUND
    own = await as_alice.create_token(CreateTokenRequest(label="alice's own"))
    assert own.token.owner == alice["owner"]


async def test_a_refusal_is_replayed_under_its_key(server: Server, channel: Channel) -> None:
    stub = stub_for(channel, server.admin_token, uuid.uuid4().hex)
    for _ in range(2):
        with pytest.raises(GRPCError) as info:
            await stub.revoke_token(RevokeTokenRequest(id="no-such-token"))
        assert info.value.status is Status.NOT_FOUND
        assert "no-such-token" in (info.value.message or "")


@pytest.mark.parametrize("key", ["k" * 256, "k" * 4000])  # (grpclib sends printable ones only)
async def test_a_malformed_key_is_invalid_argument(
    server: Server, channel: Channel, client: httpx.AsyncClient, key: str
) -> None:
    label = f"badkey-{uuid.uuid4().hex}"
    with pytest.raises(GRPCError) as info:
        await stub_for(channel, server.admin_token, key).create_token(
            CreateTokenRequest(label=label)
        )
    assert info.value.status is Status.INVALID_ARGUMENT
    assert label not in await labels(client)


async def test_revocation_is_immediate_even_for_a_token_just_used(
    server: Server, channel: Channel, client: httpx.AsyncClient
) -> None:
    made = await stub_for(channel, server.admin_token).create_token(
        CreateTokenRequest(label="used, then revoked")
    )
    holder = StatusServiceStub(channel, metadata={"authorization": f"Bearer {made.secret}"})
    async with make_client(server, made.secret) as http:
        for _ in range(3):  # used on both wires: now it is in the server's cache
            assert (await http.get("/")).status_code == 200
            assert (await holder.get_status()).version
        revoke = RevokeTokenRequest(id=made.token.id)
        await stub_for(channel, server.admin_token).revoke_token(revoke)
        assert (await http.get("/")).status_code == 401  # at once, not after a cache expiry
        with pytest.raises(GRPCError) as info:
            await holder.get_status()
        assert info.value.status is Status.UNAUTHENTICATED


@pytest.fixture(scope="module")
def grpcio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    with grpcio_stubs(tmp_path_factory.mktemp("grpcio"), "tokens") as modules:
        yield modules


async def test_the_official_grpcio_client_gets_the_same_answers(
    server: Server, grpcio: dict[str, ModuleType]
) -> None:
    await anyio.to_thread.run_sync(grpcio_calls, server, grpcio)  # (it blocks)


def grpcio_calls(server: Server, grpcio: dict[str, ModuleType]) -> None:
    messages, services = grpcio["tokens_pb2"], grpcio["tokens_pb2_grpc"]
    key, label = uuid.uuid4().hex, f"grpcio-{uuid.uuid4().hex}"
    auth = ("authorization", f"Bearer {server.admin_token}")
    with grpc.insecure_channel(f"{server.grpc_host}:{server.grpc_port}") as channel:
        stub = services.TokenServiceStub(channel)
        request = messages.CreateTokenRequest(label=label, expires_in=60)
        first = stub.CreateToken(request, metadata=[auth, ("idempotency-key", key)], timeout=10)
        again = stub.CreateToken(request, metadata=[auth, ("idempotency-key", key)], timeout=10)
        assert (again.token.id, again.secret) == (first.token.id, first.secret)
        assert first.token.label == label
        assert first.token.HasField("expires_at")
        assert first.token.expires_at.ToDatetime() > first.token.created_at.ToDatetime()
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateToken(messages.CreateTokenRequest(label=""), metadata=[auth], timeout=10)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        revoke = messages.RevokeTokenRequest(id=first.token.id)
        stub.RevokeToken(revoke, metadata=[auth], timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            stub.RevokeToken(revoke, metadata=[("authorization", f"Bearer {first.secret}")])
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
async def second_server(
    server: Server, database_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Server]:
    """Another server process's stand-in: the same database, caches of its own, and a listener
    that checks its connection every 20 ms (every 10 s otherwise)."""
    if database_url is None:
        pytest.skip("one SQLite database is served by one server process")
    monkeypatch.setattr(notify, "_HEALTH_CHECK_INTERVAL", 0.02)
    async with Server(ServerConfig(data_dir=tmp_path, database_url=database_url)) as other:
        yield other


@pytest.mark.parametrize("after_health_checks", [False, True])
async def test_a_revocation_reaches_every_server_on_the_database(
    server: Server,
    second_server: Server,
    client: httpx.AsyncClient,
    after_health_checks: bool,
) -> None:
    if after_health_checks:  # the listener's health checks must not stop the notifications
        await anyio.sleep(0.2)
    made = await create_token(client, label="shared")
    async with make_client(second_server, made["token"]) as elsewhere:
        for _ in range(3):  # cached by the second server
            assert (await elsewhere.get("/")).status_code == 200
        assert (await client.delete(f"/tokens/{made['id']}")).status_code == 204
        # PostgreSQL delivers the notification on commit; the other server drops its entry.
        for _ in range(500):
            if (await elsewhere.get("/")).status_code != 200:
                break
            await anyio.sleep(0.01)
        assert (await elsewhere.get("/")).status_code == 401
