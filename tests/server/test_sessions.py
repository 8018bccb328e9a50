"""Login sessions over loopback: logging in (password or API token), access tokens that expire,
refresh rotation, reuse of a used refresh token, logging out, Basic credentials; on HTTP and,
with the official grpcio client, gRPC; on SQLite and PostgreSQL. And no secret in any log line.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

import anyio
import grpc
import httpx
import pytest

from aiosdk.server import Server, ServerConfig
from aiosdk.server.accounts import passwords
from aiosdk.server.accounts.sessions import SessionTokens
from aiosdk.server.auth import hash_token
from aiosdk.server.config import AccountSettings
from aiosdk.server.http.routes.auth import PasswordLogin, RefreshRequest, TokenLogin

from .conftest import assert_error, create_token, make_client
from .grpcio_stubs import grpcio_stubs

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery staple"


async def new_user(admin: httpx.AsyncClient, password: str | None = PASSWORD) -> str:
    """A new user, made through the admin API; returns its name."""
    username = f"u-{uuid.uuid4().hex[:12]}"
    response = await admin.post("/admin/users", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    return username


async def login(http: httpx.AsyncClient, **body: str) -> dict[str, str]:
    response = await http.post("/auth/login", json=body)
    assert response.status_code == 200, response.text
    grant: dict[str, str] = response.json()
    return grant


async def refresh(http: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await http.post("/auth/refresh", json={"refresh_token": refresh_token})


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def whoami(server: Server, authorization: str) -> tuple[int, str | None]:
    """``GET /api/v1/`` with ``authorization``: the status, and the principal when 200."""
    async with httpx.AsyncClient(base_url=f"{server.http_url}/api/v1") as http:
        response = await http.get("/", headers={"Authorization": authorization})
    if response.status_code != 200:
        return response.status_code, None
    return 200, response.json()["principal"]


@pytest.fixture(scope="module")
def grpcio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    with grpcio_stubs(tmp_path_factory.mktemp("grpcio"), "status", "tokens") as modules:
        yield modules


async def grpc_code(
    server: Server, grpcio: dict[str, ModuleType], authorization: str
) -> grpc.StatusCode:
    """What the official client gets from ``GetStatus`` with ``authorization`` metadata."""

    def call() -> grpc.StatusCode:
        messages, services = grpcio["status_pb2"], grpcio["status_pb2_grpc"]
        with grpc.insecure_channel(f"{server.grpc_host}:{server.grpc_port}") as channel:
            stub = services.StatusServiceStub(channel)
            try:
                stub.GetStatus(
                    messages.GetStatusRequest(),
                    metadata=[("authorization", authorization)],
                    timeout=10,
                )
            except grpc.RpcError as exc:
                code: grpc.StatusCode = exc.code()
                return code
        return grpc.StatusCode.OK

    return await anyio.to_thread.run_sync(call)


async def test_a_password_login_opens_a_session(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    username = await new_user(client)
    before = datetime.now(timezone.utc)
    response = await anonymous.post(
        "/auth/login", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    grant = response.json()
    assert set(grant) == {
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "expires_at",
        "session_id",
        "username",
    }
    assert grant["token_type"] == "bearer"
    assert grant["username"] == username
    assert grant["expires_in"] == 900  # the default access_token_ttl
    after = datetime.now(timezone.utc)
    expires_at = datetime.fromisoformat(grant["expires_at"])
    # Issued between before and after, whatever the machine's speed.
    assert before + timedelta(seconds=899) <= expires_at <= after + timedelta(seconds=901)
    assert grant["access_token"] != grant["refresh_token"]
    assert await whoami(server, f"Bearer {grant['access_token']}") == (200, username)
    # The refresh token is no bearer token.
    assert (await whoami(server, f"Bearer {grant['refresh_token']}"))[0] == 401


async def test_session_tokens_are_not_listed_as_api_tokens(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    username = await new_user(client)
    grant = await login(anonymous, username=username, password=PASSWORD)
    async with make_client(server, grant["access_token"]) as alice:
        assert (await alice.get("/tokens")).json()["items"] == []
        made = await create_token(alice, label="ci")
        listed = (await alice.get("/tokens")).json()["items"]
        assert [t["id"] for t in listed] == [made["id"]]
        assert listed[0]["owner"] == username
    everyone = (await client.get("/tokens", params={"page_size": 1000})).json()["items"]
    assert all(t["label"] != "session" or t["owner"] != username for t in everyone)


async def test_every_wrong_login_gets_the_same_answer(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    username = await new_user(client)
    disabled = await new_user(client)
    response = await client.patch(f"/admin/users/{disabled}", json={"disabled": True})
    assert response.status_code == 200, response.text
    no_password = await new_user(client, password=None)
    revoked = await create_token(client, owner=username)
    assert (await client.delete(f"/tokens/{revoked['id']}")).status_code == 204
    attempts: list[dict[str, str]] = [
        {"username": username, "password": "wrong password"},
        {"username": f"nobody-{uuid.uuid4().hex[:8]}", "password": PASSWORD},
        {"username": disabled, "password": PASSWORD},
        {"username": no_password, "password": PASSWORD},
        {"username": no_password, "password": ""},
        {"username": "admin", "password": PASSWORD},
        {"username": username.upper(), "password": PASSWORD},
        {"token": "aio_not-a-token"},
        {"token": revoked["token"]},
    ]
    for body in attempts:
        response = await anonymous.post("/auth/login", json=body)
        error = assert_error(response, 401, "unauthenticated")
        assert error["message"] == "Invalid credentials", body
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "x"},
        {"password": "x"},
        {"username": "x", "password": "y", "token": "z"},
        {"username": "x", "password": "y", "extra": 1},
        {"token": ""},
        {"username": "x", "password": "p" * 1025},
        {"username": "nul\x00", "password": "y"},
        {"username": 7, "password": "y"},
    ],
)
async def test_a_malformed_login_is_422_and_shows_no_secret(
    anonymous: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await anonymous.post("/auth/login", json=body)
    assert_error(response, 422, "invalid_request")
    assert "p" * 50 not in response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/auth/login", '{"username": "%(user)s", "password": "\\ud800 lone surrogate"}'),
        ("/auth/login", '{"username": "nobody", "password": "\\udfff lone surrogate"}'),
        ("/auth/login", '{"token": "aio_\\ud800"}'),
        ("/auth/refresh", '{"refresh_token": "aio_\\udc80"}'),
    ],
)
async def test_secrets_that_are_no_unicode_text_are_422_not_500(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, path: str, body: str
) -> None:
    """JSON can escape a lone surrogate, which no UTF-8 text holds: refused as the admin API's
    password field refuses it, never a 500 deeper down."""
    username = await new_user(client, password="\U0001f600 emoji password")
    content = (body % {"user": username}).encode()
    headers = {"Content-Type": "application/json"}
    response = await anonymous.post(path, content=content, headers=headers)
    assert_error(response, 422, "invalid_request")
    assert "surrogate" in response.json()["error"]["message"]
    # A pair of surrogates escapes one character: a password like any other.
    pair = f'{{"username": "{username}", "password": "\\ud83d\\ude00 emoji password"}}'
    response = await anonymous.post("/auth/login", content=pair.encode(), headers=headers)
    assert response.status_code == 200, response.text


async def test_any_text_hashes() -> None:
    assert hash_token("aio_\ud800") != hash_token("aio_\udc80")


async def test_a_password_check_of_any_text_is_false_not_an_error() -> None:
    stored = await passwords.hash_password(PASSWORD)
    assert await passwords.verify_password(stored, PASSWORD)
    for password in ("\ud800", PASSWORD + "\udfff"):
        assert not await passwords.verify_password(stored, password)
        assert not await passwords.verify_password(None, password)


async def test_a_token_login_inherits_the_token_s_scope_and_expiry(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    username = await new_user(client)
    api = await create_token(client, owner=username, scope="read", expires_in=120)
    grant = await login(anonymous, token=api["token"])
    assert grant["username"] == username
    token_expires = datetime.fromisoformat(api["expires_at"])
    # An access token lives 900 s by default: this one ends with the API token.
    assert datetime.fromisoformat(grant["expires_at"]) == token_expires
    assert grant["expires_in"] <= 120
    async with make_client(server, grant["access_token"]) as session:
        assert (await session.get("/")).json()["principal"] == username
        response = await session.post("/tokens", json={"label": "x", "scope": "read"})
        assert_error(response, 403, "permission_denied")  # read-only, like the API token
    renewed = (await refresh(anonymous, grant["refresh_token"])).json()
    assert datetime.fromisoformat(renewed["expires_at"]) <= token_expires
    async with make_client(server, renewed["access_token"]) as session:
        assert_error(await session.delete(f"/tokens/{api['id']}"), 403, "permission_denied")


async def test_the_admin_token_and_access_tokens_open_no_session(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    error = assert_error(
        await anonymous.post("/auth/login", json={"token": server.admin_token}),
        400,
        "invalid_request",
    )
    assert "admin token" in error["message"]
    username = await new_user(client)
    grant = await login(anonymous, username=username, password=PASSWORD)
    response = await anonymous.post("/auth/login", json={"token": grant["access_token"]})
    assert_error(response, 400, "invalid_request")
    # A token of a principal that is no user: the same answer as any bad token.
    stranger = await create_token(client, owner=f"robot-{uuid.uuid4().hex[:8]}")
    error = assert_error(
        await anonymous.post("/auth/login", json={"token": stranger["token"]}),
        401,
        "unauthenticated",
    )
    assert error["message"] == "Invalid credentials"


async def test_a_refresh_rotates_both_tokens(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    username = await new_user(client)
    first = await login(anonymous, username=username, password=PASSWORD)
    response = await refresh(anonymous, first["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert second["session_id"] == first["session_id"]
    assert second["username"] == username
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert await whoami(server, f"Bearer {second['access_token']}") == (200, username)
    third = (await refresh(anonymous, second["refresh_token"])).json()
    assert await whoami(server, f"Bearer {third['access_token']}") == (200, username)


@pytest.mark.parametrize("token", ["aio_unknown", "x" * 512])
async def test_an_unknown_refresh_token_is_401(anonymous: httpx.AsyncClient, token: str) -> None:
    response = await refresh(anonymous, token)
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_reusing_a_used_refresh_token_revokes_the_session_at_once(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    grpcio: dict[str, ModuleType],
) -> None:
    username = await new_user(client)
    stolen = await login(anonymous, username=username, password=PASSWORD)
    current = (await refresh(anonymous, stolen["refresh_token"])).json()
    live = f"Bearer {current['access_token']}"
    for _ in range(2):  # in use on both wires: cached by the server
        assert await whoami(server, live) == (200, username)
        assert await grpc_code(server, grpcio, live) == grpc.StatusCode.OK
    other = await login(anonymous, username=username, password=PASSWORD)  # another session

    response = await refresh(anonymous, stolen["refresh_token"])  # the used one, again
    assert_error(response, 401, "unauthenticated")
    assert await whoami(server, live) == (401, None)
    assert await grpc_code(server, grpcio, live) == grpc.StatusCode.UNAUTHENTICATED
    assert await whoami(server, f"Bearer {stolen['access_token']}") == (401, None)
    assert_error(await refresh(anonymous, current["refresh_token"]), 401, "unauthenticated")
    # Other sessions of the user live on.
    assert await whoami(server, f"Bearer {other['access_token']}") == (200, username)


async def test_concurrent_refreshes_with_one_token_leave_at_most_one_winner(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    username = await new_user(client)
    grant = await login(anonymous, username=username, password=PASSWORD)
    statuses: list[int] = []

    async def attempt() -> None:
        statuses.append((await refresh(anonymous, grant["refresh_token"])).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(attempt)
    # One wins; the others are reuses of a used token (which revoke the session).
    assert sorted(statuses) == [200, 401, 401, 401, 401]


async def test_public_routes_replay_nothing_under_an_idempotency_key(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    # A replayed refresh would hand the new tokens to whoever repeats the captured request,
    # with no reuse detected: keys of requests without a principal are not kept.
    username = await new_user(client)
    grant = await login(anonymous, username=username, password=PASSWORD)
    body = {"refresh_token": grant["refresh_token"]}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await anonymous.post("/auth/refresh", json=body, headers=key)
    assert first.status_code == 200, first.text
    again = await anonymous.post("/auth/refresh", json=body, headers=key)
    assert_error(again, 401, "unauthenticated")  # a reuse, not a replay
    assert "idempotent-replayed" not in again.headers
    renewed = first.json()
    assert await whoami(server, f"Bearer {renewed['access_token']}") == (401, None)


async def test_logout_ends_the_session_at_once_on_http_and_grpc(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    grpcio: dict[str, ModuleType],
) -> None:
    username = await new_user(client)
    grant = await login(anonymous, username=username, password=PASSWORD)
    older = (await refresh(anonymous, grant["refresh_token"])).json()
    bearer = f"Bearer {older['access_token']}"
    first = f"Bearer {grant['access_token']}"  # still within its lifetime
    for _ in range(2):
        assert await whoami(server, bearer) == (200, username)
        assert await whoami(server, first) == (200, username)
        assert await grpc_code(server, grpcio, bearer) == grpc.StatusCode.OK
    async with make_client(server, older["access_token"]) as session:
        assert (await session.post("/auth/logout")).status_code == 204
    assert await whoami(server, bearer) == (401, None)
    assert await whoami(server, first) == (401, None)  # every access token of the session
    assert await grpc_code(server, grpcio, bearer) == grpc.StatusCode.UNAUTHENTICATED
    assert await grpc_code(server, grpcio, first) == grpc.StatusCode.UNAUTHENTICATED
    assert_error(await refresh(anonymous, older["refresh_token"]), 401, "unauthenticated")
    assert_error(await anonymous.post("/auth/logout"), 401, "unauthenticated")


async def test_logout_with_an_api_token_or_basic_credentials_changes_nothing(
    server: Server, client: httpx.AsyncClient
) -> None:
    username = await new_user(client)
    api = await create_token(client, owner=username)
    async with make_client(server, api["token"]) as http:
        assert (await http.post("/auth/logout")).status_code == 204
        assert (await http.get("/")).status_code == 200
    credentials = basic(username, PASSWORD)
    async with httpx.AsyncClient(base_url=f"{server.http_url}/api/v1") as http:
        response = await http.post("/auth/logout", headers={"Authorization": credentials})
        assert response.status_code == 204
    assert await whoami(server, credentials) == (200, username)


async def test_basic_credentials_authenticate_on_http_and_grpc(
    server: Server,
    client: httpx.AsyncClient,
    grpcio: dict[str, ModuleType],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    username = await new_user(client)
    checked = 0
    verify = passwords.verify_password

    async def counting(stored: str | None, password: str) -> bool:
        nonlocal checked
        checked += 1
        return await verify(stored, password)

    monkeypatch.setattr(passwords, "verify_password", counting)
    credentials = basic(username, PASSWORD)
    for _ in range(5):
        assert await whoami(server, credentials) == (200, username)
        assert await grpc_code(server, grpcio, credentials) == grpc.StatusCode.OK
    assert checked == 1  # Argon2 ran once; then the verified pair came from the cache
    async with make_client(server, None) as http:  # tokens made with Basic credentials
        headers = {"Authorization": credentials}
        made = await http.post("/tokens", json={"label": "by basic"}, headers=headers)
        assert made.status_code == 201, made.text
        assert made.json()["owner"] == username
    wrong = basic(username, "not the password")
    assert await whoami(server, wrong) == (401, None)
    assert await grpc_code(server, grpcio, wrong) == grpc.StatusCode.UNAUTHENTICATED
    assert await whoami(server, basic("admin", "whatever")) == (401, None)
    assert await whoami(server, "Basic !!not-base64!!") == (401, None)


async def test_a_new_password_ends_sessions_and_cached_basic_credentials_at_once(
    server: Server, client: httpx.AsyncClient, grpcio: dict[str, ModuleType]
) -> None:
    username = await new_user(client)
    old = basic(username, PASSWORD)
    anonymous = httpx.AsyncClient(base_url=f"{server.http_url}/api/v1")
    async with anonymous:
        grant = await login(anonymous, username=username, password=PASSWORD)
    session = f"Bearer {grant['access_token']}"
    api_token = f"Bearer {(await create_token(client, owner=username))['token']}"
    for _ in range(2):  # cached
        for credential in (old, session, api_token):
            assert await whoami(server, credential) == (200, username)
            assert await grpc_code(server, grpcio, credential) == grpc.StatusCode.OK
    new_password = "a different passphrase"
    response = await client.patch(f"/admin/users/{username}", json={"password": new_password})
    assert response.status_code == 200, response.text
    for credential in (old, session):  # the sessions opened with the old password end too
        assert await whoami(server, credential) == (401, None)
        assert await grpc_code(server, grpcio, credential) == grpc.StatusCode.UNAUTHENTICATED
    assert await whoami(server, api_token) == (200, username)  # never the password
    assert await whoami(server, basic(username, new_password)) == (200, username)


@pytest.fixture
async def short_lived(
    server: Server, database_url: str | None, tmp_path: Path
) -> AsyncIterator[Server]:
    """A server whose access tokens live 1 s and sessions 3 s (on the module server's
    database, if it is PostgreSQL)."""
    config = ServerConfig(
        data_dir=tmp_path,
        database_url=database_url,
        admin_token=server.admin_token,
        accounts=AccountSettings(access_token_ttl=1, session_ttl=3),
    )
    async with Server(config) as running:
        yield running


async def until(moment: str) -> None:
    """Sleep until just after the ISO instant ``moment``."""
    left = (datetime.fromisoformat(moment) - datetime.now(timezone.utc)).total_seconds()
    await anyio.sleep(max(0.0, left) + 0.05)


async def test_access_tokens_expire_and_refresh_renews_them(
    short_lived: Server, grpcio: dict[str, ModuleType]
) -> None:
    server = short_lived
    async with make_client(server, server.admin_token) as admin, make_client(server, None) as anon:
        username = await new_user(admin)
        grant = await login(anon, username=username, password=PASSWORD)
        assert grant["expires_in"] == 1
        bearer = f"Bearer {grant['access_token']}"
        assert await whoami(server, bearer) == (200, username)  # now cached
        await until(grant["expires_at"])
        response = await anon.get("/", headers={"Authorization": bearer})
        assert_error(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"] == "Bearer"
        assert await grpc_code(server, grpcio, bearer) == grpc.StatusCode.UNAUTHENTICATED
        renewed = (await refresh(anon, grant["refresh_token"])).json()
        assert await whoami(server, f"Bearer {renewed['access_token']}") == (200, username)


async def test_nothing_outlives_the_session(short_lived: Server) -> None:
    server = short_lived
    async with make_client(server, server.admin_token) as admin, make_client(server, None) as anon:
        username = await new_user(admin)
        grant = await login(anon, username=username, password=PASSWORD)
        logged_in = datetime.now(timezone.utc)  # the session began before this (on the server)
        # Refresh as each access token expires, until the session's end (3 s) caps one.
        last, capped = grant, False
        while not capped:
            await until(last["expires_at"])
            asked = datetime.now(timezone.utc)
            response = await refresh(anon, last["refresh_token"])
            assert response.status_code == 200, response.text
            last = response.json()
            expires_at = datetime.fromisoformat(last["expires_at"])
            assert (expires_at - logged_in).total_seconds() <= 3.0  # never past the session
            capped = (expires_at - asked).total_seconds() < 0.95  # (1 s otherwise)
        await until(last["expires_at"])
        assert_error(await refresh(anon, last["refresh_token"]), 401, "unauthenticated")
        assert (await whoami(server, f"Bearer {last['access_token']}"))[0] == 401


async def test_no_secret_in_any_log_line_or_repr(
    server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: the server's, uvicorn's, grpclib's...
    username = await new_user(client)
    secrets = [PASSWORD, "wrong-password-1"]
    grant = await login(anonymous, username=username, password=PASSWORD)
    await anonymous.post("/auth/login", json={"username": username, "password": secrets[1]})
    api = await create_token(client, owner=username)
    via_token = await login(anonymous, token=api["token"])
    renewed = (await refresh(anonymous, grant["refresh_token"])).json()
    await refresh(anonymous, grant["refresh_token"])  # a reuse: the session is revoked
    await whoami(server, basic(username, PASSWORD))
    await whoami(server, basic(username, secrets[1]))
    await anonymous.post("/auth/login", json={"username": username, "password": "p" * 2000})
    await anonymous.post("/auth/login", json={"token": api["token"], "password": PASSWORD})
    secrets += [api["token"], "p" * 2000]
    for issued in (grant, via_token, renewed):
        secrets += [issued["access_token"], issued["refresh_token"]]
    logged = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records  # the server did log these requests
    for secret in secrets:
        assert secret not in logged
    shown = [
        repr(PasswordLogin(username=username, password=PASSWORD)),
        repr(TokenLogin(token=api["token"])),
        repr(RefreshRequest(refresh_token=grant["refresh_token"])),
        repr(
            SessionTokens(
                grant["access_token"],
                grant["refresh_token"],
                datetime.now(timezone.utc),
                grant["session_id"],
                username,
            )
        ),
    ]
    for text in shown:
        for secret in secrets:
            assert secret not in text
