"""TLS end to end: ``aiosdk serve --tls-cert/--tls-key`` serves HTTPS and gRPC over TLS, and the
client verifies both like the HTTP side (``verify=``), with certificates from a local CA."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import trustme
import uvicorn

import aiosdk
from aiosdk.server import ServerConfig, ServerThread

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certificate(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = directory / "chain.pem", directory / "key.pem"
    cert.private_key_pem.write_to_path(key)
    for index, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(chain, append=index > 0)
    return chain, key


@pytest.fixture(scope="module")
def ca_bundle(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(path)
    return str(path)


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[ServerThread]:
    chain, key = certificate
    thread = ServerThread(ServerConfig(tls_cert=chain, tls_key=key))
    thread.start()
    yield thread
    thread.stop()


async def test_https_and_grpc_over_tls(tls_server: ServerThread, ca_bundle: str) -> None:
    assert tls_server.http_url.startswith("https://127.0.0.1:")
    async with aiosdk.AsyncClient(
        tls_server.http_url, token=tls_server.admin_token, verify=ca_bundle
    ) as client:
        info = await client.server_info()  # HTTPS
        assert info.principal == "admin"
        assert (await client.get_status()).version == aiosdk.__version__  # gRPC over TLS
        updates = [s.sequence async for s in client.watch_status(interval=0.05, max_updates=2)]
        assert updates == [1, 2]
        assert (await client.tokens.create("over tls")).label == "over tls"


def test_the_blocking_client_over_tls(tls_server: ServerThread, ca_bundle: str) -> None:
    with aiosdk.Client(tls_server.http_url, token=tls_server.admin_token, verify=ca_bundle) as c:
        assert c.server_info().name == "aiosdk"
        assert c.get_status().version == aiosdk.__version__


async def test_an_untrusted_certificate_is_refused(tls_server: ServerThread) -> None:
    async with aiosdk.AsyncClient(
        tls_server.http_url, token=tls_server.admin_token, retry_mode="disabled"
    ) as client:
        with pytest.raises(aiosdk.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.server_info()


@pytest.fixture
def trusting_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_grpc_verifies_the_certificate_too(
    tls_server: ServerThread, trusting_context: ssl.SSLContext
) -> None:
    # HTTP trusts the local CA through a transport of the caller's; verify= (the system's CAs,
    # which do not include it) is what gRPC goes by, so gRPC must refuse the certificate.
    trusting = httpx.AsyncHTTPTransport(verify=trusting_context)
    async with aiosdk.AsyncClient(
        tls_server.http_url,
        token=tls_server.admin_token,
        http_transport=trusting,
        retry_mode="disabled",
    ) as client:
        assert (await client.server_info()).name == "aiosdk"
        with pytest.raises(aiosdk.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get_status()


@pytest.fixture
def https_without_grpc_tls(certificate: tuple[Path, Path]) -> Iterator[str]:
    """An HTTPS server whose discovery names a plaintext gRPC endpoint."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = json.dumps(
            {
                "name": "stub",
                "version": "0",
                "api_version": "v1",
                "grpc": {"host": "127.0.0.1", "port": 9, "tls": False},
                "principal": "p",
                "limits": {},
            }
        ).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    chain, key = certificate
    config = uvicorn.Config(
        app, port=port, log_level="warning", lifespan="off", ssl_certfile=chain, ssl_keyfile=key
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    yield f"https://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


async def test_grpc_never_sends_a_token_in_plaintext_for_an_https_server(
    https_without_grpc_tls: str, ca_bundle: str
) -> None:
    async with aiosdk.AsyncClient(
        https_without_grpc_tls, token="secret", verify=ca_bundle
    ) as client:
        assert (await client.server_info()).name == "stub"
        with pytest.raises(aiosdk.ConfigurationError, match="plaintext"):
            await client.get_status()


@pytest.mark.parametrize("bundle", ["/no/such/ca.pem", __file__])
async def test_a_bad_ca_bundle_is_a_configuration_error(
    tls_server: ServerThread, bundle: str
) -> None:
    async with aiosdk.AsyncClient(tls_server.http_url, verify=bundle) as client:
        with pytest.raises(aiosdk.ConfigurationError, match="not a usable CA bundle"):
            await client.server_info()


async def test_aiosdk_serve_with_tls(
    certificate: tuple[Path, Path], ca_bundle: str, tmp_path: Path
) -> None:
    chain, key = certificate
    command = [
        sys.executable, "-m", "aiosdk.cli", "serve", "--data", str(tmp_path), "--http-port", "0",
        "--grpc-port", "0", "--log-level", "warning", "--tls-cert", str(chain),
    ]  # fmt: skip
    refused = await anyio.run_process(command, check=False)
    assert refused.returncode == 2
    assert b"both a certificate" in refused.stderr
    process = await anyio.open_process([*command, "--tls-key", str(key)])
    try:
        assert process.stdout is not None
        output = b""
        with anyio.fail_after(30):
            while b"Admin token" not in output:
                output += await process.stdout.receive()
        lines = dict(line.split(": ", 1) for line in output.decode().splitlines() if ": " in line)
        assert lines["URL"].startswith("https://127.0.0.1:")
        assert lines["gRPC"].endswith("(TLS)")
        token = lines["Admin token (shown once; only its hash is kept)"].strip()
        async with aiosdk.AsyncClient(lines["URL"], token=token, verify=ca_bundle) as client:
            assert (await client.server_info()).principal == "admin"
            assert (await client.get_status()).version == aiosdk.__version__
    finally:
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(30):
            await process.wait()


async def test_closing_releases_the_grpc_socket_at_once(
    tls_server: ServerThread, ca_bundle: str
) -> None:
    # A graceful close of a TLS connection waits for the peer's answer: when the loop stops
    # first (the end of asyncio.run), the socket outlived the client, found later by the
    # garbage collector. Closing a client aborts its gRPC connection instead.
    client = aiosdk.AsyncClient(tls_server.http_url, token=tls_server.admin_token, verify=ca_bundle)
    async with client:
        assert (await client.get_status()).version
        channel = client._ctx.transport._channel
        assert channel is not None
        sock = channel._protocol.connection._transport.get_extra_info("socket")
    await anyio.lowlevel.checkpoint()
    assert sock.fileno() == -1
