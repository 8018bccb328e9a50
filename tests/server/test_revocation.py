"""Revocation is immediate, on HTTP and gRPC (the official grpcio client), and on every server
of a PostgreSQL database: revoked API tokens, the sessions opened with them, disabled users
(their sessions, tokens and Basic credentials), logouts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import anyio
import grpc
import httpx
import pytest

from aiosdk.server import Server, ServerConfig, notify

from .conftest import assert_error, create_token, make_client
from .grpcio_stubs import grpcio_stubs
from .test_sessions import PASSWORD, basic, grpc_code, login, new_user, whoami

pytestmark = pytest.mark.anyio

OK, UNAUTHENTICATED = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def grpcio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    with grpcio_stubs(tmp_path_factory.mktemp("grpcio"), "status", "tokens") as modules:
        yield modules


async def in_use(server: Server, grpcio: dict[str, ModuleType], *authorizations: str) -> None:
    """Use each credential on both wires, twice: the server has them cached now."""
    for authorization in authorizations:
        for _ in range(2):
            assert (await whoami(server, authorization))[0] == 200
            assert await grpc_code(server, grpcio, authorization) == OK


async def refused(server: Server, grpcio: dict[str, ModuleType], *authorizations: str) -> None:
    for authorization in authorizations:
        assert await whoami(server, authorization) == (401, None)
        assert await grpc_code(server, grpcio, authorization) == UNAUTHENTICATED


async def test_a_revoked_api_token_is_refused_at_once(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    grpcio: dict[str, ModuleType],
) -> None:
    username = await new_user(client)
    grant = await login(anonymous, username=username, password=PASSWORD)
    async with make_client(server, grant["access_token"]) as alice:
        by_http = await create_token(alice, label="revoked over HTTP")
        by_grpc = await create_token(alice, label="revoked over gRPC")
        await in_use(server, grpcio, f"Bearer {by_http['token']}", f"Bearer {by_grpc['token']}")
        assert (await alice.delete(f"/tokens/{by_http['id']}")).status_code == 204
    await refused(server, grpcio, f"Bearer {by_http['token']}")

    def revoke() -> None:
        messages, services = grpcio["tokens_pb2"], grpcio["tokens_pb2_grpc"]
        with grpc.insecure_channel(f"{server.grpc_host}:{server.grpc_port}") as channel:
            services.TokenServiceStub(channel).RevokeToken(
                messages.RevokeTokenRequest(id=by_grpc["id"]),
                metadata=[("authorization", f"Bearer {grant['access_token']}")],
                timeout=10,
            )

    await anyio.to_thread.run_sync(revoke)
    await refused(server, grpcio, f"Bearer {by_grpc['token']}")
    assert await whoami(server, f"Bearer {grant['access_token']}") == (200, username)


async def test_revoking_an_api_token_ends_the_sessions_opened_with_it(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    grpcio: dict[str, ModuleType],
) -> None:
    username = await new_user(client)
    api = await create_token(client, owner=username)
    grant = await login(anonymous, token=api["token"])
    other = await login(anonymous, username=username, password=PASSWORD)
    access = f"Bearer {grant['access_token']}"
    await in_use(server, grpcio, access)
    assert (await client.delete(f"/tokens/{api['id']}")).status_code == 204
    await refused(server, grpcio, access, f"Bearer {api['token']}")
    response = await anonymous.post("/auth/refresh", json={"refresh_token": grant["refresh_token"]})
    assert_error(response, 401, "unauthenticated")
    # The password session was not opened with that token: it lives on.
    assert await whoami(server, f"Bearer {other['access_token']}") == (200, username)


async def test_disabling_a_user_stops_every_credential_at_once(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    grpcio: dict[str, ModuleType],
) -> None:
    username = await new_user(client)
    grant = await login(anonymous, username=username, password=PASSWORD)
    api = await create_token(client, owner=username)
    credentials = [f"Bearer {grant['access_token']}", f"Bearer {api['token']}"]
    credentials.append(basic(username, PASSWORD))
    await in_use(server, grpcio, *credentials)
    response = await client.patch(f"/admin/users/{username}", json={"disabled": True})
    assert response.status_code == 200, response.text
    await refused(server, grpcio, *credentials)
    error = assert_error(
        await anonymous.post("/auth/login", json={"username": username, "password": PASSWORD}),
        401,
        "unauthenticated",
    )
    assert error["message"] == "Invalid credentials"
    response = await anonymous.post("/auth/refresh", json={"refresh_token": grant["refresh_token"]})
    assert_error(response, 401, "unauthenticated")
    # Enabled again: the password works again, the revoked tokens and session do not.
    response = await client.patch(f"/admin/users/{username}", json={"disabled": False})
    assert response.status_code == 200, response.text
    await refused(server, grpcio, *credentials[:2])
    assert await whoami(server, basic(username, PASSWORD)) == (200, username)
    assert (await login(anonymous, username=username, password=PASSWORD))["username"] == username


@pytest.fixture
async def second_server(
    server: Server, database_url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Server]:
    """Another server process's stand-in: the same PostgreSQL database, caches of its own."""
    if database_url is None:
        pytest.skip("one SQLite database is served by one server process")
    monkeypatch.setattr(notify, "_HEALTH_CHECK_INTERVAL", 0.02)
    config = ServerConfig(
        data_dir=tmp_path, database_url=database_url, admin_token=server.admin_token
    )
    async with Server(config) as other:
        yield other


async def eventually_refused(server: Server, authorization: str) -> None:
    """PostgreSQL delivers the notification on commit: the other server drops its entry."""
    for _ in range(500):
        if (await whoami(server, authorization))[0] != 200:
            break
        await anyio.sleep(0.01)
    assert await whoami(server, authorization) == (401, None)


async def test_logouts_and_password_changes_reach_every_server_on_the_database(
    server: Server, second_server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    username = await new_user(client)
    grant = await login(anonymous, username=username, password=PASSWORD)
    access, old = f"Bearer {grant['access_token']}", basic(username, PASSWORD)
    for _ in range(3):  # cached by the second server
        assert await whoami(second_server, access) == (200, username)
        assert await whoami(second_server, old) == (200, username)
    async with make_client(server, grant["access_token"]) as session:
        assert (await session.post("/auth/logout")).status_code == 204
    await eventually_refused(second_server, access)
    response = await client.patch(f"/admin/users/{username}", json={"password": "another one!"})
    assert response.status_code == 200, response.text
    await eventually_refused(second_server, old)
    assert await whoami(second_server, basic(username, "another one!")) == (200, username)
