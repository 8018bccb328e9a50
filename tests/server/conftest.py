"""Fixtures for the server tests: a real server on loopback, raw httpx and grpclib clients; the
catalog helpers the tests share (users, nodes) and a user and containers of its own for a module."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import anyio
import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from blockbuster import blockbuster_ctx
from grpclib.client import Channel
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.server import Server, ServerConfig
from aiosdk.server.storage import create_engine, default_database_url, session_factory
from aiosdk.server.unit_of_work import UnitOfWork

POSTGRES_URL_ENV = "AIOSDK_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_blocking_calls(anyio_backend: str) -> Iterator[None]:
    """Fail on blocking calls made inside the event loop."""
    with blockbuster_ctx(["aiosdk"]) as blockbuster:
        # asyncpg looks for ~/.pgpass and ~/.postgresql/ certificates on each new connection.
        for function in blockbuster.functions.values():
            function.can_block_in("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args")
        yield


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite"),
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ],
)
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """``None`` (SQLite in the data directory), or a fresh PostgreSQL database, dropped after."""
    if request.param == "sqlite":
        yield None
        return
    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        pytest.skip(
            f"PostgreSQL cases are off: {POSTGRES_URL_ENV} is empty"
            if POSTGRES_URL_ENV in os.environ
            else f"no PostgreSQL: none answered on 127.0.0.1:5432 (trust auth, database test)"
            f" and {POSTGRES_URL_ENV} is not set"
        )
    async with fresh_postgres_database(base_url) as url:
        yield url


class fresh_postgres_database:
    """An async context manager giving the URL of a new, empty database on the same server."""

    def __init__(self, base_url: str) -> None:
        self.base = make_url(base_url)
        self.name = f"aiosdk_test_{uuid.uuid4().hex[:12]}"

    async def _admin(self) -> asyncpg.Connection:
        dsn = self.base.set(drivername="postgresql").render_as_string(hide_password=False)
        return await asyncpg.connect(dsn)

    async def __aenter__(self) -> str:
        connection = await self._admin()
        try:
            await connection.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await connection.close()
        return self.base.set(database=self.name).render_as_string(hide_password=False)

    async def __aexit__(self, *exc_info: object) -> None:
        connection = await self._admin()
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await connection.close()


@pytest.fixture(scope="module")
async def server(
    database_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    """One running server per test module (and database backend)."""
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("data"), database_url=database_url)
    async with Server(config) as running:
        yield running


@pytest.fixture
async def database(
    server: Server, database_url: str | None
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the running server's own database, to look at or arrange its rows."""
    url = database_url or default_database_url(server.data_dir)
    engine = await anyio.to_thread.run_sync(create_engine, url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An admin HTTP client on ``/api/v1``."""
    async with make_client(server, server.admin_token) as http:
        yield http


@pytest.fixture
async def anonymous(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on ``/api/v1`` without credentials."""
    async with make_client(server, None) as http:
        yield http


@pytest.fixture
async def channel(server: Server) -> AsyncIterator[Channel]:
    """A gRPC channel to the server."""
    grpc_channel = Channel(server.grpc_host, server.grpc_port)
    try:
        yield grpc_channel
    finally:
        grpc_channel.close()


def make_client(server: Server, token: str | None) -> httpx.AsyncClient:
    """An HTTP client on ``/api/v1``, authenticated with ``token`` when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"{server.http_url}/api/v1", headers=headers)


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, str]:
    """Check ``response`` is an error in the API's shape; return its ``error`` member."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, str] = response.json()["error"]
    assert set(error) == {"type", "message", "request_id"}
    assert error["type"] == error_type
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


async def create_token(client: httpx.AsyncClient, **body: object) -> dict[str, str]:
    """Create a token through the API and return the response body."""
    response = await client.post("/tokens", json={"label": "test", **body})
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def url(path: str) -> str:
    """A catalog path as it goes into a URL: each key percent-encoded."""
    return "/".join(quote(key, safe="") for key in path.split("/"))


async def new_user(admin: httpx.AsyncClient) -> str:
    name = unique("u")
    response = await admin.post("/admin/users", json={"username": name})
    assert response.status_code == 201, response.text
    return name


async def new_org(admin: httpx.AsyncClient, owner: str, **fields: object) -> str:
    name = unique("org")
    response = await admin.post(
        "/admin/organizations", json={"name": name, "owner": owner, **fields}
    )
    assert response.status_code == 201, response.text
    return name


async def add_member(admin: httpx.AsyncClient, org: str, username: str, role: str) -> None:
    response = await admin.post(
        f"/organizations/{org}/members", json={"username": username, "role": role}
    )
    assert response.status_code == 201, response.text


class Users:
    """HTTP clients authenticated as new users (an API token each, minted by the admin)."""

    def __init__(self, server: Server, admin: httpx.AsyncClient) -> None:
        self.server = server
        self.admin = admin
        self.opened: list[httpx.AsyncClient] = []

    async def new(self) -> tuple[str, httpx.AsyncClient]:
        """A new user and a client of it."""
        name = await new_user(self.admin)
        return name, await self.client(name)

    async def client(self, username: str, **token_fields: object) -> httpx.AsyncClient:
        token = (await create_token(self.admin, owner=username, **token_fields))["token"]
        http = make_client(self.server, token)
        self.opened.append(http)
        return http

    async def aclose(self) -> None:
        for http in self.opened:
            await http.aclose()


async def create(http: httpx.AsyncClient, parent: str, key: str, **body: Any) -> dict[str, Any]:
    response = await http.post(f"/catalog/children/{url(parent)}", json={"key": key, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def get(http: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await http.get(f"/catalog/nodes/{url(path)}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def children(http: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    target = f"/catalog/children/{url(path)}" if path else "/catalog/children"
    response = await http.get(target, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def all_keys(http: httpx.AsyncClient, path: str, **params: Any) -> list[str]:
    keys: list[str] = []
    token = None
    while True:
        query = dict(params, fields="keys")
        if token:
            query["page_token"] = token
        page = await children(http, path, **query)
        keys += [item["key"] for item in page["items"]]
        token = page["next_page_token"]
        if token is None:
            return keys


@pytest.fixture(scope="module")
async def users(server: Server) -> AsyncIterator[Users]:
    """New users and clients of them, for the whole module (each test makes its own nodes)."""
    async with make_client(server, server.admin_token) as admin:
        made = Users(server, admin)
        try:
            yield made
        finally:
            await made.aclose()


@pytest.fixture(scope="module")
async def owner(users: Users) -> tuple[str, httpx.AsyncClient]:
    """One user for the module's tests, each under a container of its own (:func:`home`)."""
    return await users.new()


@pytest.fixture
async def home(owner: tuple[str, httpx.AsyncClient]) -> tuple[str, httpx.AsyncClient]:
    """A new container of the owner's for one test, and the owner's client."""
    name, http = owner
    box = await create(http, name, unique("t"))
    return box["path"], http


@asynccontextmanager
async def unit(database: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work, begun for writing and committed at the end (rolled back on error)."""
    work = UnitOfWork(database)
    try:
        await work.begin_write()
        yield work.session
        await work.commit()
    finally:
        await work.close()
