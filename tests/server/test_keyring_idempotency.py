"""Idempotency records are keyed by the server keyring as well as the client's key."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import httpx
import pytest
from cryptography.exceptions import InvalidTag
from grpclib import GRPCError, Status
from grpclib.client import Channel
from sqlalchemy import select

from aiosdk.proto import CreateTokenRequest, TokenServiceStub
from aiosdk.server import Server, ServerConfig
from aiosdk.server.idempotency import claim_record, request_keys
from aiosdk.server.keyring import KEYRING_FILE, Keyring, create_keyring_file, rotate_keyring_file
from aiosdk.server.storage import IdempotencyKey, create_engine, session_factory

from .conftest import make_client

pytestmark = pytest.mark.anyio


async def post_token(server: Server, key: str, label: str) -> httpx.Response:
    async with make_client(server, server.admin_token) as http:
        response = await http.post(
            "/tokens", json={"label": label}, headers={"Idempotency-Key": key}
        )
    assert response.status_code == 201, response.text
    return response


async def grpc_create(server: Server, key: str, label: str) -> tuple[str, str]:
    """A token created over gRPC with ``key``: its id and secret."""
    channel = Channel(server.grpc_host, server.grpc_port)
    try:
        stub = TokenServiceStub(
            channel,
            metadata={"authorization": f"Bearer {server.admin_token}", "idempotency-key": key},
        )
        reply = await stub.create_token(CreateTokenRequest(label=label))
    finally:
        channel.close()
    return reply.token.id, reply.secret


async def test_a_record_written_before_a_rotation_replays_after_it(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", admin_token=f"aio_{uuid.uuid4().hex}")
    key, label = f"key-{uuid.uuid4()}", f"rotation-{uuid.uuid4()}"
    grpc_key = f"key-{uuid.uuid4()}"
    async with Server(config) as server:
        first = await post_token(server, key, label)
        grpc_first = await grpc_create(server, grpc_key, label)
    await anyio.to_thread.run_sync(rotate_keyring_file, tmp_path / "data" / KEYRING_FILE)

    async with Server(config) as server:
        assert len(server.keyring.keys) == 2  # the new key signs; the old one still reads
        repeat = await post_token(server, key, label)
        assert repeat.headers["idempotent-replayed"] == "true"
        assert repeat.json() == first.json()  # the same token, its secret unsealed again
        assert await grpc_create(server, grpc_key, label) == grpc_first
        # A new request is recorded under the new key, and replays too.
        fresh = f"key-{uuid.uuid4()}"
        created = await post_token(server, fresh, label)
        again = await post_token(server, fresh, label)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == created.json()


async def test_another_keyring_can_neither_find_nor_read_a_record(tmp_path: Path) -> None:
    """A database copied to a server with other keys (or read on its own) gives nothing away:
    the record is not found (the request runs as new), and its answer does not unseal."""
    config = ServerConfig(data_dir=tmp_path / "data", admin_token=f"aio_{uuid.uuid4().hex}")
    key, label = f"key-{uuid.uuid4()}", f"other-{uuid.uuid4()}"
    async with Server(config) as server:
        first = await post_token(server, key, label)
        original = server.keyring
    keyring_path = tmp_path / "data" / KEYRING_FILE
    await anyio.Path(keyring_path).unlink()
    other = await anyio.to_thread.run_sync(create_keyring_file, keyring_path)

    async with Server(config) as server:
        assert server.keyring.current.key_id == other.current.key_id
        second = await post_token(server, key, label)
        assert "idempotent-replayed" not in second.headers  # not found: run as a new request
        assert second.json()["id"] != first.json()["id"]

    engine = await anyio.to_thread.run_sync(
        create_engine, f"sqlite+aiosqlite:///{tmp_path / 'data' / 'aiosdk.db'}"
    )
    try:
        async with session_factory(engine)() as session:
            rows = list(await session.scalars(select(IdempotencyKey)))
    finally:
        await engine.dispose()
    assert len(rows) == 2  # one record per keyring, each under its own lookup hash
    body = f'{{"label": "{label}"}}'.encode()
    by_original = claim_record(original, "admin", key, "POST", "/api/v1/tokens", b"", body)
    stored = next(row for row in rows if row.key == by_original.key)
    assert stored.response_body is not None
    (foreign,) = request_keys(other, key)
    (own,) = request_keys(original, key)
    with pytest.raises(InvalidTag):
        foreign.unseal(stored.response_body)
    assert first.json()["token"].encode() in own.unseal(stored.response_body)
    # Without any server key (the client's key alone, as before the keyring) nothing matches.
    (keyless,) = request_keys(Keyring.generate(), key)
    assert keyless.lookup_hash not in {row.key for row in rows}


async def test_a_mismatch_is_found_under_an_older_key(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", admin_token=f"aio_{uuid.uuid4().hex}")
    key = f"key-{uuid.uuid4()}"
    async with Server(config) as server:
        await post_token(server, key, "one")
        grpc_key = f"key-{uuid.uuid4()}"
        await grpc_create(server, grpc_key, "one")
    await anyio.to_thread.run_sync(rotate_keyring_file, tmp_path / "data" / KEYRING_FILE)
    async with Server(config) as server, make_client(server, server.admin_token) as http:
        response = await http.post(
            "/tokens", json={"label": "two"}, headers={"Idempotency-Key": key}
        )
        assert response.status_code == 422, response.text
        with pytest.raises(GRPCError) as raised:
            await grpc_create(server, grpc_key, "two")
        assert raised.value.status is Status.INVALID_ARGUMENT
