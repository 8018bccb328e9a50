"""``aiosdk login`` / ``logout`` / ``whoami``, run as a user runs them: on a terminal (a pty),
typing the password at the prompt, against the session's server."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import aiosdk

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")

# Runs the command on a pseudo-terminal of its own (its controlling terminal, as a shell's),
# types $TYPED once a prompt for a secret shows, and prints all the terminal showed.
ON_A_TERMINAL = r"""
import os, pty, select, sys, time
typed = os.environ.pop("TYPED", "")
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "aiosdk.cli", *sys.argv[1:]])
shown, sent, deadline = b"", False, time.monotonic() + 60
while time.monotonic() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.1)
    if ready:
        try:
            data = os.read(fd, 4096)
        except OSError:  # the command ended: the terminal hung up
            break
        if not data:
            break
        shown += data
    if not sent and (b"Password for" in shown or b"API token:" in shown):
        os.write(fd, typed.encode() + b"\n")
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    config = tmp_path / "config"
    monkeypatch.setenv("AIOSDK_CONFIG_DIR", str(config))  # for this process's clients too
    monkeypatch.delenv("AIOSDK_TOKEN", raising=False)
    return {
        **{k: v for k, v in os.environ.items() if k not in ("AIOSDK_TOKEN", "AIOSDK_URL")},
        "AIOSDK_CONFIG_DIR": str(config),
    }


def _run(env: dict[str, str], *args: str, typed: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ON_A_TERMINAL, *args],
        env={**env, "TYPED": typed},
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.fixture
def user(sync_client: aiosdk.Client) -> tuple[str, str]:
    username, password = f"cli-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    sync_client.admin.create_user(username, password=password, email=f"{username}@example.org")
    return username, password


def test_login_whoami_logout_on_a_terminal(
    env: dict[str, str], user: tuple[str, str], sync_client: aiosdk.Client
) -> None:
    url, (username, password) = str(sync_client.url), user
    org = f"cli-org-{secrets.token_hex(4)}"
    sync_client.admin.create_organization(org, owner=username)

    login = _run(env, "login", url, "--username", username, typed=password)
    assert login.returncode == 0, login.stdout + login.stderr
    assert f"Password for {username}:" in login.stdout
    assert password not in login.stdout + login.stderr  # typed, never echoed
    assert f"Logged in to {url} as {username}" in login.stdout
    store = Path(env["AIOSDK_CONFIG_DIR"]) / "sessions"
    [kept] = list(store.glob("*.json"))
    assert password not in kept.read_text()
    assert oct(kept.stat().st_mode & 0o777) == oct(0o600)

    with aiosdk.Client(url) as c:  # the same store as remember=True
        assert c.user_profile().username == username

    whoami = _run(env, "whoami", url)
    assert whoami.returncode == 0, whoami.stdout
    assert f"{username} (email {username}@example.org)" in whoami.stdout
    assert f"{org}: owner" in whoami.stdout

    logout = _run(env, "logout", url)
    assert logout.returncode == 0
    assert f"Logged out of {url}." in logout.stdout
    assert not list(store.glob("*.json"))
    again = _run(env, "logout", url)
    assert again.returncode == 0
    assert "Not logged in" in again.stdout
    nobody = _run(env, "whoami", url)
    assert nobody.returncode == 1
    assert "not logged in" in nobody.stdout


def test_login_with_a_token_read_from_the_terminal(
    env: dict[str, str], user: tuple[str, str], sync_client: aiosdk.Client
) -> None:
    url, (username, password) = str(sync_client.url), user
    with aiosdk.Client(url) as c:
        c.login(username=username, password=password)
        token = c.tokens.create("cli").secret.reveal()
    for extra in ([], ["--no-session"]):
        login = _run(env, "login", url, "--token", *extra, typed=token)
        assert login.returncode == 0, login.stdout
        assert token not in login.stdout
        whoami = _run(env, "whoami", url)
        assert whoami.returncode == 0, whoami.stdout
        assert whoami.stdout.startswith(username), whoami.stdout
    assert _run(env, "logout", url).returncode == 0


def test_a_wrong_password_says_so_and_remembers_nothing(
    env: dict[str, str], user: tuple[str, str], sync_client: aiosdk.Client
) -> None:
    url = str(sync_client.url)
    login = _run(env, "login", url, "-u", user[0], typed="not the password")
    assert login.returncode == 1
    assert "Invalid credentials" in login.stdout
    assert not list((Path(env["AIOSDK_CONFIG_DIR"]) / "sessions").glob("*.json"))


def test_secrets_are_never_arguments(env: dict[str, str], sync_client: aiosdk.Client) -> None:
    url = str(sync_client.url)
    cli = [sys.executable, "-m", "aiosdk.cli"]
    for args in (["-u", "someone", "--password", "hunter2"], ["--token", "aio_secret"]):
        refused = subprocess.run(
            [*cli, "login", url, *args], env=env, capture_output=True, text=True
        )
        assert refused.returncode == 2, refused.stderr
    no_session = subprocess.run(
        [*cli, "login", url, "-u", "someone", "--no-session"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert no_session.returncode == 2
    assert "a password is never remembered" in no_session.stderr
    no_url = subprocess.run([*cli, "whoami"], env=env, capture_output=True, text=True)
    assert no_url.returncode == 2
    assert "AIOSDK_URL" in no_url.stderr
