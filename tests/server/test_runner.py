"""Starting, stopping and restarting the server: Server, ServerThread, persistence, ports."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import anyio
import httpx
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel

from aiosdk.proto import StatusServiceStub, WatchStatusRequest
from aiosdk.server import Server, ServerConfig, ServerThread
from aiosdk.server.config import AccountSettings

from .conftest import create_token, make_client

STOP_GUARD_SECONDS = 15  # a hang guard, not a timing assertion


@pytest.mark.anyio
async def test_data_persists_across_a_restart_on_the_same_ports(
    database_url: str | None, tmp_path: Path
) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", database_url=database_url)
    async with Server(config) as first:
        assert first.admin_token_generated
        async with make_client(first, first.admin_token) as http:
            created = await create_token(http, label="survivor")
        ports = (first.http_port, first.grpc_port)

    again = ServerConfig(
        data_dir=config.data_dir,
        database_url=database_url,
        http_port=ports[0],
        grpc_port=ports[1],
        admin_token=first.admin_token,
    )
    async with Server(again) as second:
        assert (second.http_port, second.grpc_port) == ports
        assert not second.admin_token_generated
        async with make_client(second, created["token"]) as http:
            response = await http.get("/")
        assert response.status_code == 200
        assert response.json()["principal"] == "admin"
        async with make_client(second, second.admin_token) as http:
            tokens = (await http.get("/tokens")).json()["items"]
        assert [t["label"] for t in tokens].count("admin") == 1  # the admin token stored once


@pytest.mark.anyio
async def test_a_generated_admin_token_is_not_shown_again(tmp_path: Path) -> None:
    async with Server(ServerConfig(data_dir=tmp_path)) as first:
        assert first.admin_token.startswith("aio_")
    async with Server(ServerConfig(data_dir=tmp_path)) as second:
        assert not second.admin_token_generated
        with pytest.raises(RuntimeError, match="earlier start"):
            _ = second.admin_token
        async with make_client(second, first.admin_token) as http:
            assert (await http.get("/")).status_code == 200


@pytest.mark.anyio
async def test_stop_ends_open_streams_and_connections(tmp_path: Path) -> None:
    server = Server(ServerConfig(data_dir=tmp_path))
    await server.start()
    http = make_client(server, server.admin_token)
    channel = Channel(server.grpc_host, server.grpc_port)
    stub = StatusServiceStub(channel, metadata={"authorization": f"Bearer {server.admin_token}"})
    updates = []

    async def watch_and_stop_the_server() -> None:
        async for update in stub.watch_status(WatchStatusRequest(interval_seconds=0.05)):
            updates.append(update.sequence)
            if len(updates) == 2:
                await server.stop()

    try:
        assert (await http.get("/")).status_code == 200  # leaves a keep-alive connection open
        with (
            anyio.fail_after(STOP_GUARD_SECONDS),
            pytest.raises(GRPCError) as caught,
        ):
            await watch_and_stop_the_server()
        assert caught.value.status is Status.UNAVAILABLE
        assert updates == [1, 2]
        assert_port_free(server.config.host, server.http_port)
        assert_port_free(server.config.host, server.grpc_port)
    finally:
        channel.close()
        await http.aclose()
        await server.stop()


@pytest.mark.anyio
async def test_a_server_runs_once(tmp_path: Path) -> None:
    server = Server(ServerConfig(data_dir=tmp_path))
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.http_url
    async with server:
        pass
    await server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="runs once"):
        await server.start()


def test_server_thread_start_stop_restart(tmp_path: Path) -> None:
    first = ServerThread(ServerConfig(data_dir=tmp_path))
    with first:
        response = httpx.get(
            f"{first.http_url}/api/v1/", headers={"Authorization": f"Bearer {first.admin_token}"}
        )
        assert response.status_code == 200
        assert response.json()["grpc"] == {
            "host": first.grpc_host,
            "port": first.grpc_port,
            "tls": False,
        }
        ports = (first.server.http_port, first.server.grpc_port)
    first.stop()  # idempotent

    config = ServerConfig(
        data_dir=tmp_path, http_port=ports[0], grpc_port=ports[1], admin_token=first.admin_token
    )
    with ServerThread(config) as second:
        assert second.http_url == first.http_url
        response = httpx.get(
            f"{second.http_url}/api/v1/tokens",
            headers={"Authorization": f"Bearer {second.admin_token}"},
        )
        assert response.status_code == 200


def test_server_thread_reraises_startup_errors(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        thread = ServerThread(ServerConfig(data_dir=tmp_path, http_port=port))
        with pytest.raises(OSError, match="in use"):
            thread.start()
        thread.stop()


def test_temporary_data_dir_is_removed_on_stop() -> None:
    with ServerThread(ServerConfig()) as thread:
        response = httpx.get(
            f"{thread.http_url}/api/v1/", headers={"Authorization": f"Bearer {thread.admin_token}"}
        )
        assert response.status_code == 200
        data_dir = thread.server.data_dir
        assert data_dir.is_dir()
    assert not data_dir.exists()


def assert_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


async def test_the_data_is_its_owner_s_alone(tmp_path: Path) -> None:
    data = tmp_path / "new"
    old_umask = os.umask(0o022)  # the usual default, which would leave files world-readable
    try:
        async with Server(ServerConfig(data_dir=data)):
            pass
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.iterdir():
        if path.name.startswith("aiosdk.db"):  # the database, its WAL and shared memory
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


async def test_x_forwarded_for_picks_no_address(tmp_path: Path) -> None:
    # Failed logins are limited per client address: a header must not choose the address.
    accounts = AccountSettings(login_failures_per_address=2)
    async with (
        Server(ServerConfig(data_dir=tmp_path, accounts=accounts)) as server,
        httpx.AsyncClient(base_url=f"{server.http_url}/api/v1") as http,
    ):
        statuses = [
            (
                await http.post(
                    "/auth/login",
                    json={"username": f"nobody-{i}", "password": "wrong password"},
                    headers={"X-Forwarded-For": f"203.0.113.{i}"},
                )
            ).status_code
            for i in range(4)
        ]
    assert statuses == [401, 401, 429, 429]
