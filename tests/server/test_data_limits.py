"""The data routes' body limit (``Limits.max_data_body_bytes``), apart from every other
route's (``max_request_body_bytes``), declared or streamed; over loopback, real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from aiosdk.server import Limits, Server, ServerConfig

from .conftest import assert_error, create, make_client, new_user

pytestmark = pytest.mark.anyio

REQUEST_LIMIT = 4096
DATA_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
async def limited(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    limits = Limits(max_request_body_bytes=REQUEST_LIMIT, max_data_body_bytes=DATA_LIMIT)
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("data"), limits=limits)
    async with Server(config) as server:
        yield server


@pytest.fixture(scope="module")
async def http(limited: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(limited, limited.admin_token) as admin:
        name = await new_user(admin)
        token = (await admin.post("/tokens", json={"label": "t", "owner": name})).json()["token"]
    async with make_client(limited, token) as client:
        client.headers["X-Test-User"] = name
        yield client


async def _array(http: httpx.AsyncClient, key: str, length: int) -> str:
    name = http.headers["X-Test-User"]
    structure = {"data_type": "|u1", "shape": [length], "chunks": [length]}
    node = await create(http, name, key, structure_family="array", structure=structure)
    return str(node["path"])


async def test_data_bodies_may_pass_the_request_limit(http: httpx.AsyncClient) -> None:
    path = await _array(http, "fits", DATA_LIMIT)
    body = np.arange(DATA_LIMIT, dtype=np.uint8).tobytes()
    response = await http.put(f"/array/block/{path}", params={"block": "0"}, content=body)
    assert response.status_code == 204, response.text
    assert (await http.get(f"/array/block/{path}", params={"block": "0"})).content == body


async def test_data_bodies_past_the_data_limit_are_413(http: httpx.AsyncClient) -> None:
    path = await _array(http, "large", DATA_LIMIT + 1)
    body = b"x" * (DATA_LIMIT + 1)
    declared = await http.put(f"/array/block/{path}", params={"block": "0"}, content=body)
    assert_error(declared, 413, "invalid_request")

    async def streamed() -> AsyncIterator[bytes]:
        for _ in range(DATA_LIMIT // 1024 + 1):
            yield b"x" * 1024

    chunked = await http.put(f"/array/block/{path}", params={"block": "0"}, content=streamed())
    assert_error(chunked, 413, "invalid_request")


async def test_other_routes_keep_the_request_limit(http: httpx.AsyncClient) -> None:
    name = http.headers["X-Test-User"]
    body = {"key": "meta", "metadata": {"s": "x" * REQUEST_LIMIT}}
    response = await http.post(f"/catalog/children/{name}", json=body)
    assert_error(response, 413, "invalid_request")
