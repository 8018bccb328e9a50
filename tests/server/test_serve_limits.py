"""``aiosdk serve`` with its limit flags, and under a flood of silent sockets with few file
descriptors: the server stays up, serves again once the flood times out, and logs a little."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError

from aiosdk.proto import StatusServiceStub
from aiosdk.server import Limits

pytestmark = pytest.mark.anyio

TOKEN = "aio_serve-limits-test-token"
GUARD_SECONDS = 60  # a hang guard, not a timing assertion

# Runs the command line with a soft and hard descriptor limit of its first argument.
WITH_DESCRIPTOR_LIMIT = (
    "import resource, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))\n"
    "from aiosdk.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


@dataclass
class Served:
    process: anyio.abc.Process
    http_url: str
    grpc_port: int
    stderr: bytearray


@contextlib.asynccontextmanager
async def serve(
    data_dir: Path, *flags: str, descriptors: int | None = None
) -> AsyncIterator[Served]:
    """``aiosdk serve`` on free ports with ``flags``, until SIGINT; it must exit cleanly."""
    command = ["serve", "--data", str(data_dir), "--http-port", "0", "--grpc-port", "0"]
    command += ["--admin-token", TOKEN, "--log-level", "info", *flags]
    if descriptors is None:
        argv = [sys.executable, "-m", "aiosdk.cli", *command]
    else:
        argv = [sys.executable, "-c", WITH_DESCRIPTOR_LIMIT, str(descriptors), *command]
    async with await anyio.open_process(argv) as process, anyio.create_task_group() as group:
        assert process.stdout is not None
        assert process.stderr is not None
        stderr = bytearray()

        async def collect_stderr(stream: anyio.abc.ByteReceiveStream) -> None:
            async for chunk in stream:
                stderr.extend(chunk)

        group.start_soon(collect_stderr, process.stderr)
        output = b""
        with anyio.fail_after(GUARD_SECONDS):
            while b"gRPC:" not in output:
                output += await process.stdout.receive()
        text = output.decode()
        http = re.search(r"(http://127\.0\.0\.1:\d+)", text)
        grpc = re.search(r"gRPC: 127\.0\.0\.1:(\d+)", text)
        assert http is not None, text
        assert grpc is not None, text
        try:
            yield Served(process, http.group(1), int(grpc.group(1)), stderr)
        finally:
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(GUARD_SECONDS):
                assert await process.wait() == 0, stderr.decode()


async def test_the_limit_flags_reach_the_server(tmp_path: Path) -> None:
    flags = ["--max-header-bytes", "2048", "--max-body-bytes", "1000"]
    flags += ["--max-data-body-bytes", "3000"]
    flags += ["--max-grpc-message-bytes", "5000", "--idle-timeout", "2.5"]
    async with (
        serve(tmp_path, *flags) as served,
        httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
    ):
        limits = (await http.get(f"{served.http_url}/api/v1/")).json()["limits"]
        assert limits == {
            "max_page_size": 1000,
            "max_request_body_bytes": 1000,
            "max_data_body_bytes": 3000,
            "max_header_bytes": 2048,
            "max_grpc_message_bytes": 5000,
            "http_idle_timeout_seconds": 2.5,
        }
        too_long = await http.get(f"{served.http_url}/api/v1/", headers={"X-Big": "b" * 2048})
        assert too_long.status_code == 431


@pytest.mark.parametrize(
    ("flag", "value", "complaint"),
    [
        ("--max-connections", "0", "max_connections must be a positive whole number"),
        ("--max-header-bytes", "1.5", "max_header_bytes must be a positive whole number"),
        ("--header-timeout", "nan", "header_timeout_seconds must be a positive number"),
        ("--grpc-idle-timeout", "-1", "grpc_idle_timeout_seconds must be a positive number"),
        ("--idle-timeout", "soon", "not a number: 'soon'"),
    ],
)
async def test_a_bad_limit_is_refused_at_once(
    tmp_path: Path, flag: str, value: str, complaint: str
) -> None:
    command = [sys.executable, "-m", "aiosdk.cli", "serve", "--data", str(tmp_path), flag, value]
    result = await anyio.run_process(command, check=False)
    assert result.returncode == 2
    assert complaint in result.stderr.decode()


async def test_the_help_tells_the_defaults() -> None:
    result = await anyio.run_process([sys.executable, "-m", "aiosdk.cli", "serve", "--help"])
    help_text = " ".join(result.stdout.decode().split())
    defaults = {f.name: f.default for f in fields(Limits)}
    for flag, name in [
        ("--max-body-bytes", "max_request_body_bytes"),
        ("--max-header-bytes", "max_header_bytes"),
        ("--max-grpc-message-bytes", "max_grpc_message_bytes"),
        ("--header-timeout", "header_timeout_seconds"),
        ("--idle-timeout", "http_idle_timeout_seconds"),
        ("--grpc-idle-timeout", "grpc_idle_timeout_seconds"),
    ]:
        default = defaults[name]
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        described = help_text.split(flag, 2)[2]  # the usage line names it first
        assert f"(default: {shown})" in described.split("--", 1)[0], flag


async def test_silent_sockets_with_few_descriptors_do_not_take_the_server_down(
    tmp_path: Path,
) -> None:
    """400 silent sockets on each port of a server limited to 300 descriptors.

    Each port takes a quarter of the descriptors (75); the rest of the flood is refused or
    waits in the accept queue, accept() runs out of descriptors meanwhile, and the header
    timeout closes the silent ones: HTTP and gRPC serve again, and the log stays short.
    """
    async with (
        serve(tmp_path, "--header-timeout", "1", descriptors=300) as served,
        contextlib.AsyncExitStack() as flood,
    ):
        http_port = int(served.http_url.rsplit(":", 1)[1])
        with anyio.fail_after(GUARD_SECONDS):
            for port in (http_port, served.grpc_port):
                for _ in range(400):
                    await flood.enter_async_context(await anyio.connect_tcp("127.0.0.1", port))

        with anyio.fail_after(GUARD_SECONDS):
            await _until_served_over_http(served.http_url)
            await _until_served_over_grpc(served.grpc_port)

    log = served.stderr.decode()
    assert "Traceback" not in log
    assert "out of system resource" not in log  # asyncio's report, once per accept()
    assert len(log.splitlines()) < 100, log


async def _until_served_over_http(url: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=5) as http:
        while True:
            try:
                response = await http.get(f"{url}/api/v1/")
            except httpx.TransportError:
                continue  # still queued behind the flood
            if response.status_code == 200:
                return
            assert response.status_code == 503, response.text  # at the cap: the API's answer
            assert response.json()["error"]["type"] == "unavailable"
            await anyio.sleep(0.1)


async def _until_served_over_grpc(port: int) -> None:
    while True:
        channel = Channel("127.0.0.1", port)
        try:
            stub = StatusServiceStub(channel, metadata={"authorization": f"Bearer {TOKEN}"})
            with anyio.move_on_after(5):
                await stub.get_status()
                return
        except (StreamTerminatedError, ConnectionError):
            await anyio.sleep(0.1)  # refused at the cap
        finally:
            channel.close()
