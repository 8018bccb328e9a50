"""``aiosdk serve`` as a subprocess: ports, admin token, signals, restart."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from grpclib.client import Channel

import aiosdk
from aiosdk.cli import build_parser
from aiosdk.cli.serve import server_config
from aiosdk.proto import StatusServiceStub
from aiosdk.server import ServerConfig
from aiosdk.server.config import AccountSettings

pytestmark = pytest.mark.anyio

GUARD_SECONDS = 30  # a hang guard, not a timing assertion


async def serve(
    data_dir: Path, *extra: str, token: str | None = None
) -> tuple[int | None, str, dict[str, str]]:
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
            while "Admin token" not in lines and SHOWN_ONCE not in lines:
                line = (await process.stdout.readline()).decode()
                assert line, f"aiosdk serve exited early: {output!r}"
                output += line
                name, _, value = line.partition(": ")
                lines[name] = value.strip()
        await check_server(lines, token)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        with anyio.fail_after(GUARD_SECONDS):
            rest, _ = await process.communicate()
    return process.returncode, output + rest.decode(), lines


SHOWN_ONCE = "Admin token (shown once; only its hash is kept)"


async def check_server(lines: dict[str, str], token: str | None) -> None:
    token = lines.get(SHOWN_ONCE) or token
    assert token is not None
    headers = {"authorization": f"Bearer {token}"}
    async with aiosdk.AsyncClient(lines["URL"], token=token) as client:  # the URL it printed
        assert (await client.server_info()).principal == "admin"
    async with httpx.AsyncClient() as http:  # and the API address, as printed
        info = (await http.get(lines["API"].split()[0], headers=headers)).json()
    endpoint, _, security = lines["gRPC"].partition(" ")
    host, port = endpoint.rsplit(":", 1)
    assert security == "(plaintext)"
    assert info["grpc"] == {"host": host, "port": int(port), "tls": False}
    channel = Channel(host, int(port))
    try:
        status = await StatusServiceStub(channel, metadata=headers).get_status()
    finally:
        channel.close()
    assert status.requests_served >= 1


async def test_serve_prints_its_endpoints_and_stops_on_sigint(tmp_path: Path) -> None:
    code, output, lines = await serve(tmp_path / "data")
    assert code == 0, output
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", lines["URL"])
    assert lines["API"].startswith(lines["URL"] + "/api/v1/ ")
    token = lines[SHOWN_ONCE]
    assert token.startswith("aio_")
    assert output.count(token) == 1

    # Second start on the same data directory: the token still works and is not shown again;
    # the output says it exists, and how to mint another.
    code, output, lines = await serve(tmp_path / "data", "--admin-token", token, token=token)
    assert code == 0, output
    assert lines["Admin token"].startswith("the one given by --admin-token")
    assert "already stored" in lines["Admin token"]
    assert token not in output
    code, output, lines = await serve(tmp_path / "data", token=token)
    assert lines["Admin token"].startswith("1 made by earlier starts")
    assert f"aiosdk admin-token --data {tmp_path / 'data'}" in lines["Admin token"]
    assert SHOWN_ONCE not in lines


async def test_admin_token_mints_and_rotates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _, _, lines = await serve(data)
    first = lines[SHOWN_ONCE]

    async def admin_token(*extra: str) -> str:
        process = await anyio.run_process(
            [sys.executable, "-m", "aiosdk.cli", "admin-token", "--data", str(data), *extra]
        )
        return process.stdout.decode()

    minted = (await admin_token()).split(": ", 1)[1].split()[0]
    assert minted.startswith("aio_")
    _, output, _ = await serve(data, "--admin-token", minted, token=minted)  # the new one ...
    assert "1 other admin token(s) work too" in output
    _, output, lines = await serve(data, token=first)  # ... works, the first too
    assert lines["Admin token"].startswith("2 made by earlier starts")
    rotated_out = await admin_token("--revoke-others")
    assert "Revoked 2 other admin token(s)." in rotated_out
    rotated = rotated_out.split(": ", 1)[1].split()[0]
    _, output, lines = await serve(data, token=rotated)
    assert lines["Admin token"].startswith("1 made by earlier starts")  # the rest are revoked
    with pytest.raises(aiosdk.InvalidTokenError):
        await serve(data, token=first)  # refused now


async def test_admin_token_without_server_data_says_so(tmp_path: Path) -> None:
    process = await anyio.run_process(
        [sys.executable, "-m", "aiosdk.cli", "admin-token", "--data", str(tmp_path / "none")],
        check=False,
    )
    assert process.returncode == 1
    assert b"no server data" in process.stderr


async def test_version() -> None:
    process = await anyio.run_process([sys.executable, "-m", "aiosdk.cli", "--version"])
    assert process.stdout.decode().strip() == f"aiosdk {aiosdk.__version__}"


def serve_config(*flags: str) -> ServerConfig:
    """What ``aiosdk serve FLAGS`` would run (parsed in-process, not started)."""
    return server_config(build_parser().parse_args(["serve", *flags]))


def test_spec_validators_are_imported_by_name() -> None:
    config = serve_config(
        "--spec-validator", "xrd=json:loads", "--spec-validator", "b=os.path:join"
    )
    assert dict(config.spec_validators) == {"xrd": json.loads, "b": os.path.join}
    for bad in ("xrd", "xrd=json", "=json:loads", "xrd=no_such_module:f", "xrd=json:nothing"):
        with pytest.raises(ValueError, match="--spec-validator"):
            serve_config("--spec-validator", bad)
    with pytest.raises(ValueError, match="not callable"):
        serve_config("--spec-validator", "x=json:__name__")


def test_account_flags_reach_the_server_config() -> None:
    config = serve_config("--access-token-ttl", "60", "--session-ttl", "3600.5")
    assert config.accounts.access_token_ttl == 60
    assert config.accounts.session_ttl == 3600.5
    assert config.accounts.allow_anonymous is False
    assert serve_config("--allow-anonymous").accounts.allow_anonymous is True
    defaults = AccountSettings()
    assert serve_config().accounts == defaults
    assert serve_config("--keyring", "/etc/aiosdk/keyring.json").keyring_file == Path(
        "/etc/aiosdk/keyring.json"
    )


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon"])
async def test_bad_account_flags_are_refused(tmp_path: Path, value: str) -> None:
    process = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "aiosdk.cli",
            "serve",
            "--data",
            str(tmp_path),
            "--session-ttl",
            value,
        ],
        check=False,
    )
    assert process.returncode == 2
    assert b"--session-ttl" in process.stderr
    assert not (tmp_path / "aiosdk.db").exists()  # refused before anything started


def test_account_settings_check_their_values() -> None:
    for bad in ({"access_token_ttl": 0}, {"session_ttl": -1.0}, {"login_failures_per_account": 0}):
        with pytest.raises(ValueError, match="AccountSettings"):
            AccountSettings(**bad)  # type: ignore[arg-type]
