"""``aiosdk serve`` as a subprocess: ports, admin token, signals, restart."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from grpclib.client import Channel

from aiosdk.proto import StatusServiceStub

pytestmark = pytest.mark.anyio

GUARD_SECONDS = 30  # a hang guard, not a timing assertion


async def serve(data_dir: Path, *extra: str) -> tuple[int | None, str, dict[str, str]]:
    """Run ``aiosdk serve`` on free ports, call it, SIGINT it; its exit code, output, and lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiosdk.cli",
        "serve",
        "--data",
        str(data_dir),
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--log-level",
        "warning",
        *extra,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: dict[str, str] = {}
    output = ""
    try:
        with anyio.fail_after(GUARD_SECONDS):
            while "gRPC" not in lines:
                line = (await process.stdout.readline()).decode()
                assert line, f"aiosdk serve exited early: {output!r}"
                output += line
                name, _, value = line.partition(": ")
                lines[name] = value.strip()
        await check_server(lines, extra)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        with anyio.fail_after(GUARD_SECONDS):
            rest, _ = await process.communicate()
    return process.returncode, output + rest.decode(), lines


async def check_server(lines: dict[str, str], extra: tuple[str, ...]) -> None:
    token = lines.get("Admin token (shown once)") or extra[extra.index("--admin-token") + 1]
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient() as http:
        info = (await http.get(lines["HTTP"], headers=headers)).json()
    host, port = lines["gRPC"].rsplit(":", 1)
    assert info["grpc"] == {"host": host, "port": int(port)}
    channel = Channel(host, int(port))
    try:
        status = await StatusServiceStub(channel, metadata=headers).get_status()
    finally:
        channel.close()
    assert status.requests_served >= 1


async def test_serve_prints_its_endpoints_and_stops_on_sigint(tmp_path: Path) -> None:
    code, output, lines = await serve(tmp_path / "data")
    assert code == 0, output
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1/", lines["HTTP"])
    token = lines["Admin token (shown once)"]
    assert token.startswith("aio_")
    assert output.count(token) == 1

    # Second start on the same data directory: the token still works and is not shown again.
    code, output, lines = await serve(tmp_path / "data", "--admin-token", token)
    assert code == 0, output
    assert "Admin token" not in output
    assert token not in output
