"""Token scope: a "read" token only reads, on HTTP (any non-GET/HEAD request but logging out is
403) and on gRPC (mutating calls are PERMISSION_DENIED), and sessions it opens are read-only
too; and how long the tokens a session mints may live.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import ModuleType

import anyio
import grpc
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.server import Server
from aiosdk.server.accounts.models import LoginSession
from aiosdk.server.auth import Principal
from aiosdk.server.errors import PermissionDeniedError
from aiosdk.server.tokens import MAX_EXPIRES_IN, TokenCreate
from aiosdk.server.tokens import create_token as mint

from .conftest import assert_error, create_token, make_client
from .grpcio_stubs import grpcio_stubs
from .test_sessions import PASSWORD, grpc_code, login, new_user

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def grpcio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    with grpcio_stubs(tmp_path_factory.mktemp("grpcio"), "status", "tokens") as modules:
        yield modules


async def test_tokens_carry_their_scope(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    username = await new_user(client)
    grant = await login(anonymous, username=username, password=PASSWORD)
    async with make_client(server, grant["access_token"]) as alice:
        read = await create_token(alice, label="reader", scope="read")
        full = await create_token(alice, label="writer")
        assert (read["scope"], full["scope"]) == ("read", None)
        assert (await alice.get(f"/tokens/{read['id']}")).json()["scope"] == "read"
        listed = {t["id"]: t["scope"] for t in (await alice.get("/tokens")).json()["items"]}
        assert listed == {read["id"]: "read", full["id"]: None}
        for scope in ("write", "", "READ", 1):
            response = await alice.post("/tokens", json={"label": "x", "scope": scope})
            assert_error(response, 422, "invalid_request")


async def test_a_read_token_only_reads_on_http(server: Server, client: httpx.AsyncClient) -> None:
    username = await new_user(client)
    read = await create_token(client, owner=username, scope="read")
    other = await create_token(client, owner=username)
    async with make_client(server, read["token"]) as reader:
        assert (await reader.get("/")).json()["principal"] == username
        assert (await reader.get("/tokens")).status_code == 200
        assert (await reader.head("/tokens")).status_code == 200
        assert (await reader.get("/user")).status_code == 200
        refusals = [
            await reader.post("/tokens", json={"label": "x", "scope": "read"}),
            await reader.post("/tokens", json={"label": "x"}),
            await reader.delete(f"/tokens/{other['id']}"),
            await reader.delete(f"/tokens/{read['id']}"),
            await reader.post("/organizations/nope/members", json={"username": "x"}),
            await reader.put("/tokens", json={}),
        ]
        for response in refusals:
            error = assert_error(response, 403, "permission_denied")
            assert "read-only" in error["message"]
        assert (await reader.post("/auth/logout")).status_code == 204  # allowed: a no-op here
        assert (await reader.get("/")).status_code == 200
    labels = [
        t["label"]
        for t in (await client.get("/tokens", params={"page_size": 1000})).json()["items"]
    ]
    assert other["label"] in labels  # nothing was revoked
    assert (await client.get(f"/tokens/{other['id']}")).status_code == 200


async def test_a_read_token_only_reads_on_grpc(
    server: Server, client: httpx.AsyncClient, grpcio: dict[str, ModuleType]
) -> None:
    username = await new_user(client)
    read = await create_token(client, owner=username, scope="read")
    full = await create_token(client, owner=username)
    assert await grpc_code(server, grpcio, f"Bearer {read['token']}") == grpc.StatusCode.OK

    def calls() -> None:
        messages, services = grpcio["tokens_pb2"], grpcio["tokens_pb2_grpc"]
        with grpc.insecure_channel(f"{server.grpc_host}:{server.grpc_port}") as channel:
            stub = services.TokenServiceStub(channel)
            as_reader = [("authorization", f"Bearer {read['token']}")]
            for call, request in [
                (stub.CreateToken, messages.CreateTokenRequest(label="x", scope="read")),
                (stub.CreateToken, messages.CreateTokenRequest(label="x")),
                (stub.RevokeToken, messages.RevokeTokenRequest(id=full["id"])),
            ]:
                with pytest.raises(grpc.RpcError) as info:
                    call(request, metadata=as_reader, timeout=10)
                assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
                assert "read-only" in info.value.details()
            as_writer = [("authorization", f"Bearer {full['token']}")]
            made = stub.CreateToken(
                messages.CreateTokenRequest(label="scoped", scope="read"),
                metadata=as_writer,
                timeout=10,
            )
            assert made.token.scope == "read"
            assert made.token.owner == username
            unscoped = stub.CreateToken(
                messages.CreateTokenRequest(label="full"), metadata=as_writer, timeout=10
            )
            assert not unscoped.token.HasField("scope")
            with pytest.raises(grpc.RpcError) as info:
                stub.CreateToken(
                    messages.CreateTokenRequest(label="x", scope="write"),
                    metadata=as_writer,
                    timeout=10,
                )
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    await anyio.to_thread.run_sync(calls)
    assert (await client.get(f"/tokens/{full['id']}")).status_code == 200  # not revoked


async def test_a_session_opened_with_a_read_token_is_read_only(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    grpcio: dict[str, ModuleType],
) -> None:
    username = await new_user(client)
    read = await create_token(client, owner=username, scope="read")
    grant = await login(anonymous, token=read["token"])
    renewed = (
        await anonymous.post("/auth/refresh", json={"refresh_token": grant["refresh_token"]})
    ).json()
    for access in (grant["access_token"], renewed["access_token"]):
        async with make_client(server, access) as session:
            assert (await session.get("/tokens")).status_code == 200
            response = await session.post("/tokens", json={"label": "x", "scope": "read"})
            assert_error(response, 403, "permission_denied")

    def create() -> grpc.StatusCode:
        messages, services = grpcio["tokens_pb2"], grpcio["tokens_pb2_grpc"]
        with grpc.insecure_channel(f"{server.grpc_host}:{server.grpc_port}") as channel:
            try:
                services.TokenServiceStub(channel).CreateToken(
                    messages.CreateTokenRequest(label="x"),
                    metadata=[("authorization", f"Bearer {renewed['access_token']}")],
                    timeout=10,
                )
            except grpc.RpcError as exc:
                code: grpc.StatusCode = exc.code()
                return code
        return grpc.StatusCode.OK

    assert await anyio.to_thread.run_sync(create) == grpc.StatusCode.PERMISSION_DENIED
    async with make_client(server, renewed["access_token"]) as session:
        assert (await session.post("/auth/logout")).status_code == 204  # logging out is allowed
        assert (await session.get("/")).status_code == 401


async def test_a_read_only_principal_may_only_mint_read_tokens(
    database: async_sessionmaker[AsyncSession],
) -> None:
    """The rule itself, below the layers that refuse a read-only caller's changes first."""
    reader = Principal(name="someone", is_admin=False, token_id="t", scope="read")
    async with database() as session:
        with pytest.raises(PermissionDeniedError):
            await mint(session, reader, TokenCreate(label="full"))
        token, secret = await mint(session, reader, TokenCreate(label="read", scope="read"))
        assert token.scope == "read"
        assert secret.startswith("aio_")
        await session.rollback()


def _seconds_left(created: dict[str, str]) -> float | None:
    if created["expires_at"] is None:
        return None
    expires_at = datetime.fromisoformat(created["expires_at"])
    return (expires_at - datetime.now(timezone.utc)).total_seconds()


async def session_end(database: async_sessionmaker[AsyncSession], session_id: str) -> str:
    """When the login session ``session_id`` ends, as the API shows instants."""
    async with database() as session:
        login = await session.get(LoginSession, session_id)
    assert login is not None
    return login.expires_at.isoformat().replace("+00:00", "Z")


def _same_instant(shown: str | None, expected: str) -> bool:
    return shown is not None and datetime.fromisoformat(shown) == datetime.fromisoformat(expected)


async def test_what_a_password_session_mints_never_outlives_the_session(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    database: async_sessionmaker[AsyncSession],
    grpcio: dict[str, ModuleType],
) -> None:
    """Not capped by its 15-minute access token (the session is refreshed past that), but by
    the session's end: a stolen access token mints nothing that outlives the session."""
    username = await new_user(client)
    grant = await login(anonymous, username=username, password=PASSWORD)  # 900 s access tokens
    ends = await session_end(database, grant["session_id"])
    async with make_client(server, grant["access_token"]) as alice:
        hour = _seconds_left(await create_token(alice, label="ci", expires_in=3600))
        assert hour is not None
        assert 3590 < hour <= 3600
        forever = await create_token(alice, label="forever")
        assert _same_instant(forever["expires_at"], ends), (forever, ends)
        decade = await create_token(alice, label="long", expires_in=MAX_EXPIRES_IN)
        assert _same_instant(decade["expires_at"], ends)
        # What it minted may mint no longer-lived token either.
        async with make_client(server, forever["token"]) as minted:
            again = await create_token(minted, label="forever again")
        assert _same_instant(again["expires_at"], ends)

    def mint_over_grpc() -> str:
        messages, services = grpcio["tokens_pb2"], grpcio["tokens_pb2_grpc"]
        with grpc.insecure_channel(f"{server.grpc_host}:{server.grpc_port}") as channel:
            created = services.TokenServiceStub(channel).CreateToken(
                messages.CreateTokenRequest(label="forever by grpc"),
                metadata=[("authorization", f"Bearer {grant['access_token']}")],
                timeout=10,
            )
        return str(created.token.id)

    by_grpc = await anyio.to_thread.run_sync(mint_over_grpc)
    response = await client.get(f"/tokens/{by_grpc}")
    assert _same_instant(response.json()["expires_at"], ends), response.text


async def test_what_a_token_session_mints_never_outlives_that_token(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    database: async_sessionmaker[AsyncSession],
) -> None:
    username = await new_user(client)
    api = await create_token(client, owner=username, expires_in=300)
    grant = await login(anonymous, token=api["token"])
    async with make_client(server, grant["access_token"]) as session:
        made = await create_token(session, label="longer", expires_in=3600)
        assert made["expires_at"] == api["expires_at"]
        assert (await create_token(session, label="none"))["expires_at"] == api["expires_at"]
        short = _seconds_left(await create_token(session, label="shorter", expires_in=60))
        assert short is not None
        assert short <= 60
    forever = await create_token(client, owner=username)
    grant = await login(anonymous, token=forever["token"])
    ends = await session_end(database, grant["session_id"])  # the session's own end, then
    async with make_client(server, grant["access_token"]) as session:
        made = await create_token(session, label="forever too")
    assert _same_instant(made["expires_at"], ends)
    assert timedelta(0) < datetime.fromisoformat(api["expires_at"]) - datetime.now(timezone.utc)
