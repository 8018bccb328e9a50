"""Answers the SDK does not expect become typed errors, never a raw exception or a false success."""

from __future__ import annotations

import gzip
import json

import pytest

import aiosdk

from .scripted import Respond, ScriptedServer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client_of(server: ScriptedServer) -> aiosdk.AsyncClient:
    return aiosdk.AsyncClient(server.url, token="t")


async def test_a_redirect_is_an_error_not_a_success(scripted: ScriptedServer) -> None:
    scripted.script(Respond(307, {"Location": "http://elsewhere.example/"}))
    async with client_of(scripted) as client:
        with pytest.raises(aiosdk.StatusError, match="unexpected redirect") as caught:
            await client.tokens.revoke("tok-1")
    assert caught.value.status_code == 307
    assert len(scripted.requests) == 1  # neither followed nor retried


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"name": "x"}', b'["a list"]', b'{"items": "no", "next_page_token": 1}'],
)
async def test_a_malformed_answer_is_a_protocol_error(
    scripted: ScriptedServer, body: bytes
) -> None:
    scripted.script(Respond(200, {"Content-Type": "application/json"}, body=body))
    async with client_of(scripted) as client:
        with pytest.raises(aiosdk.ProtocolError, match="unexpected response"):
            await client.server_info()


@pytest.mark.parametrize("token_id", ["", ".", ".."])
async def test_ids_that_would_change_the_path_are_refused(
    scripted: ScriptedServer, token_id: str
) -> None:
    async with client_of(scripted) as client:
        with pytest.raises(ValueError, match="not a valid path segment"):
            await client.tokens.revoke(token_id)
        with pytest.raises(ValueError, match="not a valid path segment"):
            await client.tokens.get(token_id)
    assert scripted.requests == []


async def test_ids_are_percent_encoded(scripted: ScriptedServer) -> None:
    async with client_of(scripted) as client:
        await client.tokens.get("a/b?c#d")
    assert [request.path for request in scripted.requests] == ["/api/v1/tokens/a%2Fb%3Fc%23d"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # gRPC
@pytest.mark.parametrize("grpc", [b"null", b'{"host": "h"}', b'{"host": "h", "port": "x"}'])
async def test_a_malformed_grpc_endpoint_is_a_protocol_error(
    scripted: ScriptedServer, grpc: bytes
) -> None:
    body = b'{"name": "x", "grpc": ' + grpc + b"}"
    scripted.script(then=Respond(200, {"Content-Type": "application/json"}, body=body))
    async with client_of(scripted) as client:
        with pytest.raises(aiosdk.ProtocolError, match="gRPC endpoint"):
            await client.with_options(retry_mode="disabled").get_status()


async def test_a_compressed_answer_is_decoded(scripted: ScriptedServer) -> None:
    body = json.dumps({"items": [], "next_page_token": None}).encode()
    scripted.script(Respond(headers={"Content-Encoding": "gzip"}, body=gzip.compress(body)))
    async with aiosdk.AsyncClient(scripted.url, token="t") as client:
        page = await client.tokens.list()
    assert page.items == []
