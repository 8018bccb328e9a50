"""A client's mistake is a 4xx in the error shape, never a 500, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Receive, Scope, Send

from aiosdk.server import Server
from aiosdk.server.authenticator import Authenticator
from aiosdk.server.http.app import create_app
from aiosdk.server.http.middleware import RequestContextMiddleware
from aiosdk.server.notify import Notifier
from aiosdk.server.state import Metrics, ServerState

from .conftest import assert_error

pytestmark = pytest.mark.anyio


def page_token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def raw_page_token(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        # Valid times that leave datetime's range once converted to UTC.
        page_token(["9999-12-31T23:59:59-14:00", "x"]),
        page_token(["0001-01-01T00:00:00+14:00", "x"]),
        page_token(["2024-01-01T00:00:00+00:00", "a\x00b"]),  # NUL: PostgreSQL cannot compare it
        page_token(["2024-01-01T00:00:00+00:00", ""]),
        page_token(["2024-01-01T00:00:00", "x"]),  # no offset
        page_token(["2024-01-01T00:00:00+00:00", "x", "y"]),
        page_token({"created_at": "2024-01-01T00:00:00+00:00", "id": "x"}),
        page_token("2024-01-01T00:00:00+00:00"),
        raw_page_token(b"[" * 20_000),  # deep nesting, and far too long
        raw_page_token(b'["\xff\xfe", "x"]'),  # not UTF-8
        page_token(["2024-01-01T00:00:00+00:00", "x" * 1000]),  # too long
        "",
        "é",
    ],
)
async def test_crafted_page_tokens_are_a_400(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get("/tokens", params={"page_token": token})
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/tokens/%00"),
        ("DELETE", "/tokens/%00"),
        ("GET", "/tokens/abc%00def"),
        ("GET", "/tokens?page_token=%00"),
        ("GET", "/tokens?page_size=10&%00=1"),
    ],
)
@pytest.mark.parametrize("idempotency_key", [None, "nul-key"])
async def test_nul_in_the_path_or_query_is_a_400(
    client: httpx.AsyncClient, method: str, target: str, idempotency_key: str | None
) -> None:
    headers = {"Idempotency-Key": f"{idempotency_key}-{uuid.uuid4()}"} if idempotency_key else {}
    response = await client.request(method, target, headers=headers)
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("label", ["\x00", "a\x00b", "trailing\x00"])
async def test_nul_in_a_string_field_is_a_422(client: httpx.AsyncClient, label: str) -> None:
    response = await client.post("/tokens", json={"label": label})
    error = assert_error(response, 422, "invalid_request")
    assert "label" in error["message"]
    assert "NUL" in error["message"]


async def test_other_control_characters_and_astral_text_are_stored(
    client: httpx.AsyncClient,
) -> None:
    label = "tab\tbell\x07 \U0001f600" + "\U0001d54f" * 80  # 100 code points, 4 bytes apiece
    response = await client.post("/tokens", json={"label": label})
    assert response.status_code == 201, response.text
    fetched = await client.get(f"/tokens/{response.json()['id']}")
    assert fetched.json()["label"] == label


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"page_size": "9" * 5000}, "page_size"),
        ({"page_size": "99999999999999999999999999"}, "page_size"),
        ({"page_size": "1e400"}, "page_size"),
        ({"page_size": "NaN"}, "page_size"),
    ],
)
async def test_huge_or_odd_numbers_in_the_query_are_a_422(
    client: httpx.AsyncClient, params: dict[str, str], mentions: str
) -> None:
    error = assert_error(await client.get("/tokens", params=params), 422, "invalid_request")
    assert mentions in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"label": "x", "expires_in": 1' + b"0" * 5000 + b"}",  # past int() digit limit
        b'{"label": "x", "expires_in": 1e400}',
        b'{"label": "x", "expires_in": NaN}',
        b'{"label": "x", "expires_in": Infinity}',
        b'{"label": "x", "expires_in": true}',
        b'{"label": ["x"]}',
        b'{"label": {"x": 1}}',
        b'{"label": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"label": "\xff"}',
        b'{"label": "\\ud800"}',
        b"\xef\xbb\xbf{}",
        b"",
        b"null",
    ],
)
async def test_malformed_or_mistyped_json_bodies_are_a_4xx(
    client: httpx.AsyncClient, body: bytes
) -> None:
    response = await client.post(
        "/tokens", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert_error(response, response.status_code, "invalid_request")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Authorization", b"Bearer \xff\xfe")],
        [(b"Authorization", b"Bearer " + b"a" * 20_000)],
        [(b"Authorization", "Bearer aio_é".encode())],
    ],
)
async def test_unusable_credentials_are_a_401(
    anonymous: httpx.AsyncClient, headers: list[tuple[bytes, bytes]]
) -> None:
    assert_error(await anonymous.get("/tokens", headers=headers), 401, "unauthenticated")


async def test_non_utf8_in_headers_and_path_is_not_a_500(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        headers = [
            (b"Authorization", f"Bearer {server.admin_token}".encode()),
            (b"X-Request-ID", b"\xff\xfe"),
            (b"Idempotency-Key", b"k\xff"),
        ]
        response = await http.get("/api/v1/tokens/%FF%FE", headers=headers)
        assert_error(response, 404, "not_found")
        response = await http.delete("/api/v1/tokens/%FF%FE", headers=headers)
        assert_error(response, 400, "invalid_request")  # the key is not printable ASCII


class _DatabaseRefusal:
    """A route that makes the database refuse a value: the safety net's test subject."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def __call__(self) -> None:
        async with self.sessions() as session:
            if (await session.connection()).dialect.name != "postgresql":
                raise DataError("SELECT 1", {}, ValueError("simulated: SQLite takes a NUL"))
            await session.execute(text("SELECT CAST(:value AS TEXT)"), {"value": "a\x00b"})
        raise AssertionError("PostgreSQL took a NUL")


def state_on(database: async_sessionmaker[AsyncSession]) -> ServerState:
    """The state of a server app on ``database``, to mount extra routes on (not started)."""
    notifier = Notifier(database.kw["bind"])
    return ServerState(
        sessions=database,
        authenticator=Authenticator(database, notifier),
        grpc_host="127.0.0.1",
        grpc_port=1,
    )


@pytest.mark.parametrize("idempotency_key", [None, "refused"])
async def test_a_value_the_database_refuses_is_a_400(
    server: Server,
    database: async_sessionmaker[AsyncSession],
    idempotency_key: str | None,
) -> None:
    """The safety net behind validation: a data error from the database is the client's."""
    app = create_app(state_on(database))
    app.add_api_route("/api/v1/refuse", _DatabaseRefusal(database), methods=["POST"])
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    if idempotency_key:
        headers["Idempotency-Key"] = f"{idempotency_key}-{uuid.uuid4()}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/api/v1/refuse", headers=headers)
        error = assert_error(response, 400, "invalid_request")
        assert "\x00" not in error["message"]
        if idempotency_key:  # a 4xx, so stored and replayed like any other
            again = await http.post("/api/v1/refuse", headers=headers)
            assert again.status_code == 400
            assert again.json() == response.json()
            assert again.headers["idempotent-replayed"] == "true"


async def test_other_database_errors_stay_500s(
    server: Server, database: async_sessionmaker[AsyncSession]
) -> None:
    async def broken() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionError("simulated: database down"))

    app = create_app(state_on(database))
    app.add_api_route("/api/v1/broken", broken)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert_error(await http.get("/api/v1/broken", headers=headers), 500, "internal")


class _SqlState(Exception):
    sqlstate = "22021"  # character_not_in_repertoire, as the asyncpg dialect reports it


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (DataError("SELECT 1", {}, ValueError("refused")), 400),
        (DBAPIError("SELECT 1", {}, _SqlState("refused")), 400),
        (DBAPIError("SELECT 1", {}, ValueError("no SQLSTATE")), 500),
    ],
)
async def test_data_errors_outside_the_routes_are_a_400(error: Exception, status: int) -> None:
    """Raised by a middleware (idempotency, authentication), past FastAPI's handlers."""

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise error

    app = RequestContextMiddleware(failing, Metrics())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/")
    assert_error(response, status, "invalid_request" if status == 400 else "internal")


async def test_a_keyed_request_to_a_public_route_is_not_a_500(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as anonymous:
        for path in ("/api/v1/openapi.json", "/api/v1/docs"):
            response = await anonymous.post(path, headers={"Idempotency-Key": "k-public"})
            assert response.status_code == 405, (path, response.text)
