"""``aiosdk channel create``, ``send`` and ``listen`` against the session's server: the token
printed, positions as JSON, messages printed as they come (plain and JSON lines), ``listen``
without any login, Ctrl-C ending it with a clean disconnect, and the refusals as one line."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from _cli import cli, isolate, ok, refused, token

import aiosdk
from aiosdk._sync.testing import Accounts


@dataclass
class App:
    """A user whose API token is in the environment, and a client of that user."""

    client: aiosdk.Client
    url: str


@pytest.fixture
def app(aiosdk_accounts_sync: Accounts, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> App:
    isolate(monkeypatch, tmp_path / "config")
    client = aiosdk_accounts_sync.client(aiosdk_accounts_sync.user("app"))
    monkeypatch.setenv("AIOSDK_URL", str(client.url))
    monkeypatch.setenv("AIOSDK_TOKEN", token(client))
    return App(client, str(client.url))


def test_create_send_and_listen(
    app: App, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = ok(capsys, "channel", "create", "device-1", "--minutes", "5").strip()
    assert secret.startswith("aio_ch_")
    assert app.client.channels.validate_token_and_extract_client_id(secret) == "device-1"
    first = json.loads(ok(capsys, "channel", "send", "device-1", "hello"))
    second = json.loads(ok(capsys, "channel", "send", "device-1", "wörld"))
    assert first["epoch"] == second["epoch"]
    assert [first["offset"], second["offset"]] == [1, 2]
    app.client.channels.send_message("device-1", b"\x00\xff")

    monkeypatch.delenv("AIOSDK_TOKEN")  # the holder needs no login
    out = ok(capsys, "channel", "listen", secret, "--count", "2")
    assert out.splitlines() == ["hello", "wörld"]
    # Those two were consumed (acknowledged): the next listen starts with the third.
    lines = ok(capsys, "channel", "listen", secret, "--count", "1", "--json").splitlines()
    shown = json.loads(lines[0])
    assert shown["offset"] == 3
    assert shown["epoch"] == first["epoch"]
    assert base64.b64decode(shown["data"]) == b"\x00\xff"
    assert "text" not in shown
    assert not app.client.channels.has_channel_messages(secret)


def test_the_message_and_the_token_may_come_from_standard_input(
    app: App, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    secret = ok(capsys, "channel", "create", "device-2").strip()
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin"))
    ok(capsys, "channel", "send", "device-2", "-")
    monkeypatch.setattr(sys, "stdin", io.StringIO(secret + "\n"))
    assert ok(capsys, "channel", "listen", "-", "--count", "1") == "from stdin\n"


def test_refusals_are_one_line(
    app: App, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "1 to 64 bytes" in refused(capsys, 2, "channel", "create", "x" * 65)
    assert "control" in refused(capsys, 2, "channel", "create", "a\tb")
    assert "no live channel" in refused(capsys, 1, "channel", "send", "nobody", "hi")
    assert "32768 bytes at most" in refused(
        capsys, 2, "channel", "send", "somebody", "x" * (32 * 1024 + 1)
    )
    status, _out, err = cli(capsys, "channel", "create", "d", "--minutes", "1441")
    assert status == 2
    assert "out of range" in err
    secret = ok(capsys, "channel", "create", "device-3").strip()
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    monkeypatch.delenv("AIOSDK_TOKEN")
    line = refused(capsys, 1, "channel", "listen", forged)
    assert "aiosdk login" not in line  # a channel token: no login would help
    assert forged not in line
    assert secret not in line
    monkeypatch.setenv("AIOSDK_TOKEN", token(app.client))
    ok(capsys, "channel", "create", "device-3")  # replaces the token
    monkeypatch.delenv("AIOSDK_TOKEN")
    line = refused(capsys, 1, "channel", "listen", secret)
    assert "expired or was replaced" in line or "not found" in line.lower()
    assert secret not in line


def test_ctrl_c_ends_listen_with_a_clean_disconnect(app: App, tmp_path: Path) -> None:
    channels = app.client.channels
    secret = channels.create_channel("device-4")
    channels.send_message("device-4", "first")
    env = {**os.environ, "AIOSDK_CONFIG_DIR": str(tmp_path / "config"), "AIOSDK_URL": app.url}
    env.pop("AIOSDK_TOKEN", None)
    listener = subprocess.Popen(
        [sys.executable, "-m", "aiosdk.cli", "channel", "listen", secret],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline() == "first\n"  # connected, and printing
        listener.send_signal(signal.SIGINT)
        _, err = listener.communicate(timeout=60)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
    assert listener.returncode == 130, err
    assert err.strip() == "aiosdk channel listen: interrupted"
    kinds = []
    for event in channels.presence(after=0):
        if event.client_id == "device-4":
            kinds.append((event.kind, event.clean))
            if event.kind == "disconnected":
                break
    assert kinds == [("connected", False), ("disconnected", True)]
    assert not channels.has_channel_messages(secret)  # "first" was consumed
