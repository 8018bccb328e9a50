"""Remembered logins and saved profiles: where they go, who may read them, and that clients
use them (and write renewals back), against the real server."""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

import aiosdk
from aiosdk._core import credentials
from aiosdk._core.credentials import (
    CredentialStore,
    SessionCredential,
    TokenCredential,
    write_private,
)

if TYPE_CHECKING:
    from faults.proxy import TcpProxy

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions"),
]


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config"
    monkeypatch.setenv("AIOSDK_CONFIG_DIR", str(path))
    monkeypatch.delenv("AIOSDK_TOKEN", raising=False)
    monkeypatch.delenv("AIOSDK_PROFILE", raising=False)
    return path


@pytest.fixture
async def user(client: aiosdk.AsyncClient) -> tuple[str, str]:
    username, password = f"r-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    await client.admin.create_user(username, password=password)
    return username, password


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def _logins(config_dir: Path) -> list[Path]:
    return [p for p in _files(config_dir / "sessions") if p.suffix == ".json"]


def _stored(config_dir: Path) -> dict[str, object]:
    [path] = _logins(config_dir)
    data: dict[str, object] = json.loads(path.read_text())
    return data


def _session(client: aiosdk.AsyncClient) -> SessionCredential:
    session = client._ctx.transport.auth.session
    assert session is not None
    return session


async def test_nothing_is_written_without_remember(
    client: aiosdk.AsyncClient, user: tuple[str, str], config_dir: Path
) -> None:
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=user[0], password=user[1])
        await c.refresh()
        await c.user_profile()
        await c.logout()
        await c.login(username=user[0], password=user[1], no_session=True)
        await c.logout()
    assert not await anyio.Path(config_dir).exists()


async def test_a_remembered_session_is_private_and_picked_up_by_clients_of_its_url(
    client: aiosdk.AsyncClient, user: tuple[str, str], config_dir: Path
) -> None:
    username, password = user
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=username, password=password, remember=True)
        first = _session(c)
    sessions = config_dir / "sessions"
    files = await anyio.to_thread.run_sync(_files, sessions)
    assert sorted(p.name for p in files) == [
        ".lock",
        "http-127.0.0.1_" + client.url.rsplit(":", 1)[1] + ".json",
    ]  # type: ignore[union-attr]
    for directory in (config_dir, sessions):
        assert await anyio.to_thread.run_sync(_mode, directory) == 0o700
    for path in files:
        assert await anyio.to_thread.run_sync(_mode, path) == 0o600
    stored = await anyio.to_thread.run_sync(_stored, config_dir)
    assert stored["url"] == client.url
    text = json.dumps(stored)
    assert password not in text  # never the password
    assert first.refresh_token.reveal() in text

    async with aiosdk.AsyncClient(client.url) as later:  # no token: the remembered login
        assert (await later.user_profile()).username == username
        assert (await later.get_status()).version
        await later.refresh()  # a renewal is written back
        renewed = _session(later)
    stored = await anyio.to_thread.run_sync(_stored, config_dir)
    assert stored["credential"]["refresh_token"] == renewed.refresh_token.reveal()  # type: ignore[index]
    assert renewed.refresh_token != first.refresh_token

    def blocking() -> None:  # the blocking facade reads the same store
        with aiosdk.Client(client.url) as c:
            assert c.user_profile().username == username
            c.logout()  # ends the session and forgets it

    await anyio.to_thread.run_sync(blocking)
    assert await anyio.to_thread.run_sync(_logins, config_dir) == []
    async with aiosdk.AsyncClient(client.url) as after:
        with pytest.raises(aiosdk.AuthenticationError, match="login"):
            await after.user_profile()


async def test_an_explicit_token_wins_over_the_remembered_login(
    client: aiosdk.AsyncClient, user: tuple[str, str], config_dir: Path
) -> None:
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=user[0], password=user[1], remember=True)
    async with aiosdk.AsyncClient(
        client.url, token=client._ctx.transport.auth.credential.token
    ) as admin:  # type: ignore[union-attr]
        assert (await admin.user_profile()).is_admin
    other = "http://127.0.0.1:1"  # another URL remembers nothing
    async with aiosdk.AsyncClient(other) as stranger:
        await stranger._ctx.transport.start()
        assert stranger._ctx.transport.auth.credential is None


async def test_clients_sharing_a_remembered_session_never_spend_a_refresh_token_twice(
    client: aiosdk.AsyncClient, user: tuple[str, str], config_dir: Path
) -> None:
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=user[0], password=user[1], remember=True)
    async with aiosdk.AsyncClient(client.url) as a, aiosdk.AsyncClient(client.url) as b:
        assert (await a.user_profile()).username == (await b.user_profile()).username
        assert _session(a) == _session(b)  # the same tokens, from the store
        await a.refresh()  # rotates: the refresh token b holds is spent now
        await b.refresh()  # b finds a's renewal in the store, and renews with that
        await a.refresh()  # and a with b's
        assert (await a.user_profile()).username == user[0]  # the session lives
        assert (await b.user_profile()).username == user[0]
        stored = await anyio.to_thread.run_sync(_stored, config_dir)
        assert stored["credential"]["refresh_token"] == _session(a).refresh_token.reveal()  # type: ignore[index]


async def test_a_remembered_session_that_ended_elsewhere_is_forgotten(
    client: aiosdk.AsyncClient, user: tuple[str, str], config_dir: Path, server: object
) -> None:
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=user[0], password=user[1], remember=True)
        refresh_token = _session(c).refresh_token.reveal()
        await c.refresh()  # (rotated; the old one is spent)
        await c.user_profile()  # (and the new tokens are in use)
    async with httpx.AsyncClient() as raw:  # someone replays the spent one: the session ends
        url = f"{server.http_url}/api/v1/auth/refresh"  # type: ignore[attr-defined]
        assert (await raw.post(url, json={"refresh_token": refresh_token})).status_code == 401
    async with aiosdk.AsyncClient(client.url) as later:
        with pytest.raises(aiosdk.InvalidTokenError, match="log in again"):
            await later.user_profile()
    assert await anyio.to_thread.run_sync(_logins, config_dir) == []


async def test_a_remembered_api_token(
    client: aiosdk.AsyncClient, user: tuple[str, str], config_dir: Path
) -> None:
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=user[0], password=user[1])
        made = await c.tokens.create("remembered")
        await c.login(token=made.secret, no_session=True, remember=True)
    async with aiosdk.AsyncClient(client.url) as later:
        assert (await later.user_profile()).username == user[0]
        assert later._ctx.transport.auth.session is None
        await later.logout()  # forgets it (an API token is not revoked by a logout)
    assert await anyio.to_thread.run_sync(_logins, config_dir) == []
    async with aiosdk.AsyncClient(client.url, token=made.secret.reveal()) as still:
        assert (await still.user_profile()).username == user[0]
    async with aiosdk.AsyncClient(client.url) as after:
        with pytest.raises(aiosdk.AuthenticationError):
            await after.user_profile()


# -- the store's files -----------------------------------------------------------------------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    yield
    os.umask(old)


def test_private_files_are_written_atomically_and_owner_only(
    tmp_path: Path, permissive_umask: None
) -> None:
    path = tmp_path / "lax" / "secret.json"
    path.parent.mkdir(mode=0o777)
    path.parent.chmod(0o777)
    write_private(path, "one")
    write_private(path, "two")
    assert path.read_text() == "two"
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o777  # not ours: its mode is its owner's choice
    assert [p.name for p in path.parent.iterdir()] == ["secret.json"]  # no temporary left
    made = tmp_path / "new" / "deeper" / "secret.json"
    write_private(made, "three")
    assert _mode(made) == 0o600
    assert _mode(made.parent) == _mode(made.parent.parent) == 0o700  # made by us: owner-only


def test_the_store_ignores_files_it_cannot_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CredentialStore(tmp_path)
    url = "http://127.0.0.1:8000"
    assert store.load(url) is None
    store.path(url).write_text("{not json")
    store.path(url).chmod(0o600)
    assert store.load(url) is None
    assert "ignoring the remembered login" in caplog.text
    other = {"version": 1, "url": "http://elsewhere:1", "credential": {"kind": "token"}}
    store.path(url).write_text(json.dumps(other))
    assert store.load(url) is None  # recorded for another URL
    assert store.path("https://h:1/a b") != store.path("http://h:1/a b")
    lock = store.lock()
    lock.release()
    lock.release()  # twice is fine


def test_the_store_follows_no_symbolic_link(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "sessions")
    store.directory.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    lock = store.directory / ".lock"
    lock.symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        store.lock()  # no lock through a link: never a file created where it points
    assert not victim.exists()
    with pytest.raises(OSError, match="symbolic link"):
        store.attempt_lock()
    lock.unlink()
    url = "http://127.0.0.1:8000"
    victim.write_text("precious")
    victim.chmod(0o600)
    store.path(url).symlink_to(victim)
    with pytest.raises(aiosdk.ConfigurationError, match="symbolic link"):
        store.load(url)
    token = TokenCredential(aiosdk.Secret("aio_" + "t" * 20))
    store.save(url, token)  # replaces the link; what it pointed to is left alone
    assert victim.read_text() == "precious"
    assert not store.path(url).is_symlink()
    assert _mode(store.path(url)) == 0o600
    assert store.load(url) == token


def test_a_stored_login_that_others_may_read_is_refused(
    sync_client: aiosdk.Client, config_dir: Path
) -> None:
    username, password = f"p-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    sync_client.admin.create_user(username, password=password)
    url = sync_client.url
    with aiosdk.Client(url) as c:
        c.login(username=username, password=password, remember=True)
    [path] = _logins(config_dir)

    def refused(says: str) -> None:
        later = aiosdk.Client(url)
        try:
            with pytest.raises(aiosdk.ConfigurationError, match=says):
                later.user_profile()
        finally:
            later.close()

    path.chmod(0o644)
    refused(r"readable or writable by others \(mode 0644")
    path.chmod(0o640)
    refused("readable or writable by others")
    path.chmod(0o600)
    if os.geteuid() == 0:  # (only root can give a file away)
        os.chown(path, 65534, -1)
        refused("belongs to another user")
        os.chown(path, 0, -1)
    elsewhere = config_dir / "elsewhere.json"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    refused("symbolic link")
    path.unlink()
    elsewhere.rename(path)
    with aiosdk.Client(url) as later:  # owner-only again: used
        assert later.user_profile().username == username
    # A lock file that is a symbolic link: the login is not remembered (and nothing is created
    # where the link points).
    lock = config_dir / "sessions" / ".lock"
    lock.unlink()
    victim = config_dir / "victim"
    lock.symlink_to(victim)
    with aiosdk.Client(url) as c, pytest.raises(aiosdk.ConfigurationError, match="remembered"):
        c.login(username=username, password=password, remember=True)
    assert not victim.exists()


async def test_the_store_changes_the_mode_of_no_directory_it_did_not_make(
    client: aiosdk.AsyncClient,
    user: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"  # AIOSDK_CONFIG_DIR=$HOME
    await anyio.Path(home).mkdir()
    await anyio.Path(home).chmod(0o755)
    monkeypatch.setenv("AIOSDK_CONFIG_DIR", str(home))
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=user[0], password=user[1], remember=True)
        await c.save_profile("mine")
    assert await anyio.to_thread.run_sync(_mode, home) == 0o755
    assert await anyio.to_thread.run_sync(_mode, home / "sessions") == 0o700  # ours: private
    assert await anyio.to_thread.run_sync(_mode, home / "profiles.toml") == 0o600


def _hold(path: Path) -> int:
    """Hold ``path``'s lock as another process would (a file description of its own)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


async def _held_elsewhere(config_dir: Path) -> int:
    return await anyio.to_thread.run_sync(_hold, config_dir / "sessions" / ".lock")


async def _let_go(fd: int) -> None:
    await anyio.to_thread.run_sync(os.close, fd)


async def test_a_renewal_never_goes_ahead_without_the_stores_lock(
    client: aiosdk.AsyncClient,
    user: tuple[str, str],
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(credentials, "_LOCK_TIMEOUT", 0.5)
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=user[0], password=user[1], remember=True)
        before = _session(c)
        held = await _held_elsewhere(config_dir)
        try:
            with pytest.raises(aiosdk.TimeoutError, match=r"lock.*held by another process") as info:
                await c.refresh()
            assert not info.value.request_sent  # (nothing was sent)
            assert _session(c) == before
            stored = await anyio.to_thread.run_sync(_stored, config_dir)
            assert stored["credential"]["refresh_token"] == before.refresh_token.reveal()  # type: ignore[index]
        finally:
            await _let_go(held)
        await c.refresh()  # the lock is free: renewed
        assert _session(c).refresh_token != before.refresh_token
        assert (await c.user_profile()).username == user[0]


async def test_a_call_waits_for_the_stores_lock_no_longer_than_its_deadline(
    client: aiosdk.AsyncClient, user: tuple[str, str], config_dir: Path
) -> None:
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=user[0], password=user[1], remember=True)
        before = _session(c)
        c._ctx.transport.auth.refresh_at = time.time() - 1  # due: the next call renews first
        held = await _held_elsewhere(config_dir)
        try:
            started = time.monotonic()
            # The token still works: the call goes on with it, within its deadline.
            assert (await c.with_options(deadline=1.5).user_profile()).username == user[0]
            assert time.monotonic() - started < 1.5
            assert _session(c) == before  # not renewed without the lock
        finally:
            await _let_go(held)


async def test_a_renewal_waiting_for_the_lock_takes_what_its_holder_renewed(
    client: aiosdk.AsyncClient,
    user: tuple[str, str],
    config_dir: Path,
    server: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(credentials, "_LOCK_TIMEOUT", 5.0)
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=user[0], password=user[1], remember=True)
        before = _session(c)
        renewed: list[SessionCredential] = []

        async def another_process_renews() -> None:
            await anyio.sleep(0.3)
            url = f"{server.http_url}/api/v1/auth/refresh"  # type: ignore[attr-defined]
            async with httpx.AsyncClient() as raw:
                answer = await raw.post(url, json={"refresh_token": before.refresh_token.reveal()})
            renewed.append(SessionCredential.from_answer(answer.json()))
            store = CredentialStore(config_dir / "sessions")
            await anyio.to_thread.run_sync(store.save, c.url, renewed[0])

        held = await _held_elsewhere(config_dir)
        try:
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(another_process_renews)
                await c.refresh()  # waits for the lock; finds the holder's renewal meanwhile
            assert time.monotonic() - started < 2  # without waiting for the lock to be free
            assert _session(c) == renewed[0]  # its tokens: none spent twice
        finally:
            await _let_go(held)
        assert (await c.user_profile()).username == user[0]
        await c.refresh()
        assert (await c.user_profile()).username == user[0]  # the session lives


async def test_a_renewal_cancelled_while_it_waits_for_the_lock_is_taken_over_by_its_waiters(
    client: aiosdk.AsyncClient, user: tuple[str, str], config_dir: Path
) -> None:
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=user[0], password=user[1], remember=True)
        before = _session(c)
        auth = c._ctx.transport.auth
        renewed: list[bool] = []
        held = await _held_elsewhere(config_dir)
        try:
            async with anyio.create_task_group() as tg:
                first = anyio.CancelScope()

                async def cancelled() -> None:
                    with first:
                        await c.refresh()

                async def waiting() -> None:
                    await c.refresh()
                    renewed.append(True)

                tg.start_soon(cancelled)
                with anyio.fail_after(5):
                    while auth._flight is None:  # noqa: ASYNC110 - the first waits for the lock
                        await anyio.sleep(0.01)
                tg.start_soon(waiting)  # ... and this one for the first's renewal
                await anyio.sleep(0.2)
                first.cancel()  # nothing was sent: the waiting call renews it itself
                await anyio.sleep(0.2)
                await _let_go(held)
                held = -1
        finally:
            if held >= 0:
                await _let_go(held)
        assert renewed == [True]
        assert first.cancelled_caught
        assert _session(c).refresh_token != before.refresh_token
        stored = await anyio.to_thread.run_sync(_stored, config_dir)
        assert stored["credential"]["refresh_token"] == _session(c).refresh_token.reveal()  # type: ignore[index]
        assert (await c.user_profile()).username == user[0]


@pytest.fixture
def proxy(server: object) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the server's HTTP."""
    from urllib.parse import urlsplit

    from faults.proxy import TcpProxy  # (tests/faults: the fault-injection helpers)

    address = urlsplit(server.http_url)  # type: ignore[attr-defined]
    assert address.hostname is not None
    assert address.port is not None
    relay = TcpProxy(address.hostname, address.port).start()
    yield relay
    relay.stop()


async def test_a_remembered_session_whose_renewal_answer_was_lost_is_forgotten(
    client: aiosdk.AsyncClient,
    user: tuple[str, str],
    config_dir: Path,
    proxy: TcpProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with aiosdk.AsyncClient(proxy.url) as c:
        await c.login(username=user[0], password=user[1], remember=True)
        access = _session(c).access_token.reveal()
        c._ctx.transport.auth.refresh_at = time.time() - 1  # due: the next call renews first
        proxy.drop_response_to("/api/v1/auth/refresh")  # renewed; the answer is lost
        assert (await c.user_profile()).username == user[0]  # its access token still works
        assert proxy.dropped == 1
        assert "was lost" in caplog.text
        # Forgotten: no process sends its (perhaps spent) refresh token again.
        assert await anyio.to_thread.run_sync(_logins, config_dir) == []
        with pytest.raises(aiosdk.InvalidTokenError, match="log in again"):
            await c.refresh()
        assert (await c.user_profile()).username == user[0]  # until the access token expires
    # Nothing sent the spent refresh token again: the server never took the session for a
    # stolen one (which would have revoked its access token).
    async with aiosdk.AsyncClient(client.url, token=access) as holder:
        assert (await holder.user_profile()).username == user[0]


# -- profiles --------------------------------------------------------------------------------


def test_save_profile_writes_an_owner_only_file_that_from_profile_reads(
    config_dir: Path, server: object, sync_client: aiosdk.Client
) -> None:
    url = server.http_url  # type: ignore[attr-defined]
    token = sync_client.tokens.create("profile").secret
    path = aiosdk.save_profile("lab", url=f"{url}/api/v1/", token=token, retry_mode="forceful")
    aiosdk.save_profile('odd "name"\n', url="http://127.0.0.1:1")
    assert path == config_dir / "profiles.toml"
    assert _mode(path) == 0o600
    assert _mode(config_dir) == 0o700
    with aiosdk.Client.from_profile("lab") as c:
        assert c.options.retry.mode is aiosdk.RetryMode.FORCEFUL
        assert c.url == url
        assert c.server_info().principal == "admin"
    with aiosdk.Client.from_profile('odd "name"\n') as odd:
        assert odd.url == "http://127.0.0.1:1"
    aiosdk.save_profile("lab", url=url)  # replaced: no token now
    with aiosdk.Client.from_profile("lab") as c:
        assert c.server_info().principal == "~anonymous"
        with pytest.raises(aiosdk.AuthenticationError):
            c.tokens.get("any")
    with pytest.raises(aiosdk.ConfigurationError):
        aiosdk.save_profile("bad", url="ftp://nowhere")
    with pytest.raises(aiosdk.ConfigurationError, match="control character"):
        aiosdk.save_profile("bad", url=url, token="aio_x\n")


async def test_a_client_saves_its_profile_without_its_session(
    client: aiosdk.AsyncClient, user: tuple[str, str], config_dir: Path
) -> None:
    async with aiosdk.AsyncClient(client.url, retry_mode="disabled") as c:
        await c.login(username=user[0], password=user[1], remember=True)
        await c.save_profile("mine")
    text = await anyio.Path(config_dir / "profiles.toml").read_text()
    assert "token" not in text
    assert 'retry_mode = "disabled"' in text
    # (from_profile reads profiles.toml as it is constructed: outside the event loop)
    again = await anyio.to_thread.run_sync(aiosdk.AsyncClient.from_profile, "mine")
    async with again:  # + the remembered session
        assert (await again.user_profile()).username == user[0]
    await client.save_profile("admin")  # an API token is saved with its profile
    admin = await anyio.to_thread.run_sync(aiosdk.AsyncClient.from_profile, "admin")
    async with admin:
        assert (await admin.user_profile()).is_admin
