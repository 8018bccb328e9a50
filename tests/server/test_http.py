"""The HTTP API over loopback: info, authentication, tokens, errors, request ids, limits."""

from __future__ import annotations

import uuid
from datetime import datetime

import anyio
import httpx
import pytest

from aiosdk import _version
from aiosdk.server import Server

from .conftest import assert_error, create_token, make_client

pytestmark = pytest.mark.anyio

ROUTES = [
    ("GET", "/tokens"),
    ("POST", "/tokens"),
    ("GET", "/tokens/abc"),
    ("DELETE", "/tokens/abc"),
    ("GET", "/no/such/route"),
]


async def test_info(server: Server, client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.json() == {
        "name": "aiosdk",
        "version": _version.__version__,
        "api_version": "v1",
        "grpc": {"host": server.grpc_host, "port": server.grpc_port, "tls": False},
        "limits": {
            "max_page_size": 1000,
            "max_request_body_bytes": 16 * 1024 * 1024,
            "max_data_body_bytes": 512 * 1024 * 1024,
            "max_header_bytes": 64 * 1024,
            "max_grpc_message_bytes": 4 * 1024 * 1024,
            "http_idle_timeout_seconds": 5.0,
        },
        "principal": "admin",
    }


async def test_info_needs_no_credentials_but_checks_those_sent(
    server: Server, anonymous: httpx.AsyncClient
) -> None:
    # (a channel token holder has no login: it finds the gRPC endpoint here all the same)
    info = (await anonymous.get("/")).json()
    assert info["principal"] == "~anonymous"
    assert info["grpc"] == {"host": server.grpc_host, "port": server.grpc_port, "tls": False}
    for authorization in ("Bearer aio_not-a-token", "Basic YWRtaW46YWRtaW4=", "Bearer"):
        response = await anonymous.get("/", headers={"Authorization": authorization})
        assert_error(response, 401, "unauthenticated")


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer aio_not-a-token", "Basic YWRtaW46YWRtaW4=", "Bearer"]
)
async def test_every_route_requires_a_valid_token(
    anonymous: httpx.AsyncClient, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await anonymous.request(method, path, headers=headers, json={"label": "x"})
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_openapi_document_is_public(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert "/api/v1/tokens" in document["paths"]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert (await anonymous.get("/docs")).status_code == 200


async def test_revoked_token_stops_authenticating_at_once(
    server: Server, client: httpx.AsyncClient
) -> None:
    created = await create_token(client, label="short-lived")
    async with make_client(server, created["token"]) as holder:
        assert (await holder.get("/")).status_code == 200
        assert (await holder.delete(f"/tokens/{created['id']}")).status_code == 204
        assert_error(await holder.get("/"), 401, "unauthenticated")


async def test_expired_token_is_rejected(server: Server, client: httpx.AsyncClient) -> None:
    created = await create_token(client, label="expiring", expires_in=1)
    assert created["expires_at"] is not None
    async with make_client(server, created["token"]) as holder:
        assert (await holder.get("/")).status_code == 200
        await anyio.sleep(1.1)
        assert_error(await holder.get("/"), 401, "unauthenticated")


def expiry(token: dict[str, str]) -> datetime | None:
    value = token["expires_at"]
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_a_token_never_outlives_the_token_that_creates_it(
    server: Server, client: httpx.AsyncClient
) -> None:
    """A token's expiry caps those it creates: longer lifetimes, or none, are clamped."""
    parent = await create_token(client, label="parent", expires_in=3600)
    limit = expiry(parent)
    assert limit is not None
    async with make_client(server, parent["token"]) as http:
        forever = await create_token(http, label="forever")
        longer = await create_token(http, label="longer", expires_in=7200)
        shorter = await create_token(http, label="shorter", expires_in=60)
        for_other = await create_token(http, label="other", owner=f"o-{uuid.uuid4().hex[:8]}")
    assert expiry(forever) == expiry(longer) == expiry(for_other) == limit
    shorter_expiry = expiry(shorter)
    assert shorter_expiry is not None
    assert shorter_expiry < limit
    async with make_client(server, shorter["token"]) as http:
        grandchild = await create_token(http, label="grandchild")
        assert expiry(grandchild) == shorter_expiry
        listed = (await http.get(f"/tokens/{grandchild['id']}")).json()
        assert expiry(listed) == shorter_expiry  # as stored, not just as answered

    # A token that never expires still creates tokens that never do.
    assert (await create_token(client, label="unbounded"))["expires_at"] is None


async def test_token_lifecycle(client: httpx.AsyncClient) -> None:
    created = await create_token(client, label="lifecycle")
    assert created["token"].startswith("aio_")
    assert created["owner"] == "admin"
    token_id = created["id"]

    fetched = (await client.get(f"/tokens/{token_id}")).json()
    assert fetched == {key: value for key, value in created.items() if key != "token"}
    listed = (await client.get("/tokens", params={"page_size": 1000})).json()["items"]
    assert fetched in listed

    assert (await client.delete(f"/tokens/{token_id}")).status_code == 204
    assert_error(await client.get(f"/tokens/{token_id}"), 404, "not_found")
    assert_error(await client.delete(f"/tokens/{token_id}"), 404, "not_found")
    listed = (await client.get("/tokens", params={"page_size": 1000})).json()["items"]
    assert token_id not in {item["id"] for item in listed}


async def test_non_admins_see_and_manage_only_their_own_tokens(
    server: Server, client: httpx.AsyncClient
) -> None:
    owner = f"alice-{uuid.uuid4().hex[:8]}"
    alice = await create_token(client, label="alice", owner=owner)
    assert alice["owner"] == owner
    admins = await create_token(client, label="admin's")
    async with make_client(server, alice["token"]) as http:
        info = (await http.get("/")).json()
        assert info["principal"] == owner
        second = await create_token(http, label="alice 2")
        assert second["owner"] == owner

        items = (await http.get("/tokens")).json()["items"]
        assert {item["id"] for item in items} == {alice["id"], second["id"]}
        assert_error(await http.get(f"/tokens/{admins['id']}"), 404, "not_found")
        assert_error(await http.delete(f"/tokens/{admins['id']}"), 404, "not_found")
        forbidden = await http.post("/tokens", json={"label": "x", "owner": "mallory"})
        assert_error(forbidden, 403, "permission_denied")

        # A token created by a non-admin is not an admin token.
        async with make_client(server, second["token"]) as http2:
            assert (
                await http2.post("/tokens", json={"label": "x", "owner": "bob"})
            ).status_code == 403
    assert (await client.get(f"/tokens/{alice['id']}")).status_code == 200


async def test_pagination_yields_every_item_exactly_once(
    server: Server, client: httpx.AsyncClient
) -> None:
    owner = f"pager-{uuid.uuid4().hex[:8]}"
    first = await create_token(client, label="pager 0", owner=owner)
    async with make_client(server, first["token"]) as http:
        created = [first["id"]]
        for number in range(1, 8):
            created.append((await create_token(http, label=f"pager {number}"))["id"])

        seen: list[str] = []
        page_token: str | None = None
        pages = 0
        while True:
            params: dict[str, str | int] = {"page_size": 3}
            if page_token is not None:
                params["page_token"] = page_token
            response = await http.get("/tokens", params=params)
            assert response.status_code == 200
            page = response.json()
            assert len(page["items"]) <= 3
            seen.extend(item["id"] for item in page["items"])
            pages += 1
            page_token = page["next_page_token"]
            if page_token is None:
                break
        assert pages == 3
        assert seen == created  # oldest first, each exactly once

        whole = (await http.get("/tokens")).json()
        assert [item["id"] for item in whole["items"]] == created
        assert whole["next_page_token"] is None


@pytest.mark.parametrize("page_token", ["garbage", "W10", "bm90IGpzb24", "WyJ4IiwgMV0"])
async def test_bad_page_token_is_a_400(client: httpx.AsyncClient, page_token: str) -> None:
    response = await client.get("/tokens", params={"page_token": page_token})
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("page_size", ["0", "1001", "-1", "ten"])
async def test_bad_page_size_is_a_422(client: httpx.AsyncClient, page_size: str) -> None:
    response = await client.get("/tokens", params={"page_size": page_size})
    error = assert_error(response, 422, "invalid_request")
    assert "page_size" in error["message"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"label": ""}, "label"),
        ({"label": "x" * 101}, "label"),
        ({}, "label"),
        ({"label": "x", "expires_in": 0}, "expires_in"),
        ({"label": "x", "expires_in": "soon"}, "expires_in"),
        ({"label": "x", "expires_in": "60"}, "expires_in"),
        ({"label": "x", "expires_in": True}, "expires_in"),
        ({"label": "x", "expires_in": 60.5}, "expires_in"),
        ({"label": "x", "colour": "red"}, "colour"),
        ({"label": "x", "owner": "has space"}, "owner"),
        ([1, 2], "body"),
    ],
)
async def test_validation_errors_are_422_in_the_error_shape(
    client: httpx.AsyncClient, body: object, mentions: str
) -> None:
    error = assert_error(await client.post("/tokens", json=body), 422, "invalid_request")
    assert mentions in error["message"]


async def test_malformed_json_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/tokens", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "invalid_request")


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/no/such/route"), 404, "not_found")
    response = await client.put("/tokens")
    assert_error(response, 405, "invalid_request")
    assert "allow" in response.headers


async def test_request_id_is_echoed_or_generated(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    response = await client.get("/", headers={"X-Request-ID": "my-request.42"})
    assert response.headers["x-request-id"] == "my-request.42"

    generated = await client.get("/", headers={"X-Request-ID": "not sane " + "x" * 200})
    assert generated.headers["x-request-id"] not in ("", "my-request.42")
    assert " " not in generated.headers["x-request-id"]

    failed = await anonymous.get("/tokens", headers={"X-Request-ID": "abc-123"})
    assert assert_error(failed, 401, "unauthenticated")["request_id"] == "abc-123"


async def test_oversized_body_is_a_413(client: httpx.AsyncClient, server: Server) -> None:
    limit = server.config.limits.max_request_body_bytes
    response = await client.post(
        "/tokens", content=b"x" * (limit + 1), headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, "invalid_request")
