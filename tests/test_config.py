"""Settings: arguments, then environment, then profiles; clear errors when something is missing."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

import aiosdk
from aiosdk._core import credentials
from aiosdk._core.credentials import TokenCredential

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def sent_token(client: aiosdk.AsyncClient) -> aiosdk.Secret | None:
    """The API token ``client`` sends, if its credentials are one."""
    credential = client._ctx.transport.auth.credential
    return credential.token if isinstance(credential, TokenCredential) else None


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("AIOSDK_URL", "AIOSDK_TOKEN", "AIOSDK_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIOSDK_CONFIG_DIR", str(tmp_path))
    return tmp_path


def write_profiles(directory: Path, text: str) -> None:
    (directory / "profiles.toml").write_text(text)


def test_no_url_anywhere_is_a_configuration_error() -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="AIOSDK_URL"):
        aiosdk.AsyncClient()


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://host", "http://", "http://[::1"])
def test_a_malformed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="URL"):
        aiosdk.AsyncClient(url)


def test_environment_fills_in_what_arguments_leave_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOSDK_URL", "http://env.example:1/")
    monkeypatch.setenv("AIOSDK_TOKEN", "env-token")
    client = aiosdk.AsyncClient()
    assert client.url == "http://env.example:1"
    assert aiosdk.AsyncClient("http://arg.example:2").url == "http://arg.example:2"
    assert "env-token" not in repr(client)


def test_profiles_fill_in_after_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profiles(
        clean_env,
        '[profiles.lab]\nurl = "http://lab.example:8000"\ntoken = "t"\nretry_mode = "forceful"\n',
    )
    client = aiosdk.AsyncClient.from_profile("lab")
    assert client.url == "http://lab.example:8000"
    assert client.options.retry.mode is aiosdk.RetryMode.FORCEFUL
    assert (
        aiosdk.AsyncClient.from_profile("lab", retry_mode="disabled").options.retry.max_retries == 0
    )
    monkeypatch.setenv("AIOSDK_URL", "http://env.example:1")
    assert aiosdk.AsyncClient.from_profile("lab").url == "http://lab.example:8000"  # asked for
    monkeypatch.setenv("AIOSDK_PROFILE", "lab")
    assert aiosdk.AsyncClient().url == "http://env.example:1"  # AIOSDK_PROFILE ranks last
    assert aiosdk.Client().options.retry.mode is aiosdk.RetryMode.FORCEFUL


def test_a_profile_token_never_goes_to_a_url_from_elsewhere(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profiles(clean_env, '[profiles.prod]\nurl = "http://prod.example"\ntoken = "PROD"\n')
    monkeypatch.setenv("AIOSDK_PROFILE", "prod")
    monkeypatch.setenv("AIOSDK_URL", "http://staging.example")
    staging = aiosdk.AsyncClient()
    assert staging.url == "http://staging.example"
    assert sent_token(staging) is None  # not prod's token
    argument = aiosdk.AsyncClient.from_profile("prod", url="http://other.example")
    assert sent_token(argument) is None
    monkeypatch.setenv("AIOSDK_TOKEN", "ENV")
    paired = aiosdk.AsyncClient("http://arg.example")  # an argument URL may use the env token
    assert sent_token(paired) == aiosdk.Secret("ENV")
    assert sent_token(aiosdk.AsyncClient.from_profile("prod")) == aiosdk.Secret("PROD")


def test_a_profile_without_a_url_lends_no_token_to_the_environment_url(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_profiles(clean_env, '[profiles.prod]\ntoken = "PROD"\n')
    monkeypatch.setenv("AIOSDK_URL", "http://elsewhere.example")
    client = aiosdk.AsyncClient.from_profile("prod")
    assert client.url == "http://elsewhere.example"
    assert sent_token(client) is None


@pytest.mark.parametrize("url", ["http://h/?a=b", "http://h/#f"])
def test_a_url_with_a_query_is_refused(url: str) -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="no query"):
        aiosdk.AsyncClient(url)


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="credentials") as caught:
        aiosdk.AsyncClient("http://user:hunter2@example.com")
    assert "hunter2" not in str(caught.value)


def test_profile_errors_are_clear(clean_env: Path) -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="no profiles file"):
        aiosdk.AsyncClient.from_profile("lab")
    write_profiles(clean_env, '[profiles.lab]\nurl = "http://x"\n')
    with pytest.raises(aiosdk.ConfigurationError, match=r"no profile 'prod'.*profiles: lab"):
        aiosdk.AsyncClient.from_profile("prod")
    write_profiles(clean_env, '[profiles.lab]\nurl = "http://x"\npasword = "typo"\n')
    with pytest.raises(aiosdk.ConfigurationError, match="unknown keys: pasword"):
        aiosdk.AsyncClient.from_profile("lab")
    write_profiles(clean_env, "[profiles.lab\n")
    with pytest.raises(aiosdk.ConfigurationError, match="not valid TOML"):
        aiosdk.AsyncClient.from_profile("lab")


def test_pool_size_is_validated() -> None:
    with pytest.raises(ValueError, match="pool_threads"):
        aiosdk.AsyncClient("http://x", pool_threads=0)
    client = aiosdk.AsyncClient("http://x", pool_threads=4)
    assert client._ctx.transport.limits.max_connections == 4
    client.set_threads(8)
    assert client._ctx.transport.limits.max_connections == 8


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("http://127.0.0.1:8000/api/v1/", "http://127.0.0.1:8000"),  # as `aiosdk serve` prints it
        ("http://127.0.0.1:8000/api/v1", "http://127.0.0.1:8000"),
        ("HTTP://Example.org/lab/api/v1/", "http://example.org/lab"),  # behind a path prefix
        ("http://example.org/lab/", "http://example.org/lab"),
        ("http://example.org/api/v10", "http://example.org/api/v10"),  # not the prefix
    ],
)
def test_the_url_may_carry_the_api_prefix(given: str, normalized: str) -> None:
    assert aiosdk.AsyncClient(given).url == normalized


@pytest.mark.parametrize("url", ["http://127.0.0.1:65536", "http://127.0.0.1:99999"])
def test_a_port_out_of_range_is_a_configuration_error(url: str) -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="port"):
        aiosdk.AsyncClient(url)


@pytest.mark.parametrize("token", ["aio_abc\n", " aio_abc", "aio\x00abc", "aio\tabc"])
def test_a_token_with_control_characters_is_refused_at_once(
    token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(aiosdk.ConfigurationError, match="token") as info:
        aiosdk.AsyncClient("http://127.0.0.1:1", token=token)
    assert token.strip() not in str(info.value)  # the token itself is never shown
    if "\x00" not in token:  # (the environment cannot hold NUL)
        monkeypatch.setenv("AIOSDK_TOKEN", token)  # a token read from a file into the environment
        with pytest.raises(aiosdk.ConfigurationError, match="token"):
            aiosdk.AsyncClient("http://127.0.0.1:1")


def test_configuration_mistakes_are_one_class() -> None:
    url = "http://127.0.0.1:1"
    for mistake in (
        lambda: aiosdk.AsyncClient(url, retry_mode="sometimes"),
        lambda: aiosdk.AsyncClient(url, timeout=-1),
        lambda: aiosdk.AsyncClient(url, pool_threads=0),
        lambda: aiosdk.AsyncClient(url).retry_mode("sometimes"),
        lambda: aiosdk.AsyncClient(url).with_options(deadline=0),
        lambda: aiosdk.AsyncClient("not a url"),
    ):
        with pytest.raises(aiosdk.ConfigurationError) as info:
            mistake()
        assert isinstance(info.value, ValueError)  # a ValueError too, as before


# -- saving profiles -------------------------------------------------------------------------


def _read_profiles(directory: Path) -> dict[str, object]:
    with (directory / "profiles.toml").open("rb") as f:
        data: dict[str, object] = tomllib.load(f)
    return data


def test_save_profile_keeps_what_it_does_not_know(clean_env: Path) -> None:
    write_profiles(
        clean_env,
        """# notes
default = "lab"
[profiles.lab]
url = "http://lab.example:8000"
token = "LAB"
ca_bundle = "/etc/lab-ca.pem"  # a key of a newer aiosdk
weights = [1, 2.5, -inf]
when = 1979-05-27T07:32:00-08:00
[profiles.lab.headers]
x-team = "ml"
[[profiles.lab.mirrors]]
url = "http://mirror-1"
[[profiles.lab.mirrors]]
url = "http://mirror-2"
[profiles.prod]
url = "http://prod.example"
token = "PROD"
retry_mode = "forceful"
[tool.other]
setting = { nested = true }
""",
    )
    before = _read_profiles(clean_env)
    aiosdk.save_profile("new", url="http://new.example:1", retry_mode="disabled")
    aiosdk.save_profile("lab", url="http://lab.example:9000")  # replaced: url, token, retry_mode
    after = _read_profiles(clean_env)
    lab_before = dict(before["profiles"]["lab"])  # type: ignore[index]
    del lab_before["token"]
    lab_before["url"] = "http://lab.example:9000"
    assert after["profiles"] == {  # type: ignore[comparison-overlap]
        "lab": lab_before,  # its unknown keys kept, its token gone (not given)
        "prod": before["profiles"]["prod"],  # type: ignore[index]
        "new": {"url": "http://new.example:1", "retry_mode": "disabled"},
    }
    assert after["default"] == "lab"
    assert after["tool"] == before["tool"]
    assert aiosdk.AsyncClient.from_profile("prod").options.retry.mode is aiosdk.RetryMode.FORCEFUL
    assert aiosdk.AsyncClient.from_profile("new").url == "http://new.example:1"


def _hold(path: Path) -> int:
    """Hold ``path``'s lock as another process would (a file description of its own)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_save_profile_waits_for_the_lock_of_another_process(clean_env: Path) -> None:
    held = _hold(clean_env / ".profiles.lock")
    saving = threading.Thread(target=aiosdk.save_profile, args=("lab",), kwargs={"url": "http://x"})
    try:
        saving.start()
        time.sleep(0.4)
        assert saving.is_alive()  # waiting for the lock ...
        assert not (clean_env / "profiles.toml").exists()  # ... before reading or writing
    finally:
        os.close(held)
    saving.join(5)
    assert not saving.is_alive()
    assert _read_profiles(clean_env) == {"profiles": {"lab": {"url": "http://x"}}}


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_save_profile_gives_up_on_a_lock_held_too_long_with_a_clear_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credentials, "_LOCK_TIMEOUT", 0.3)
    write_profiles(clean_env, '[profiles.old]\nurl = "http://old"\n')
    held = _hold(clean_env / ".profiles.lock")
    try:
        with pytest.raises(aiosdk.ConfigurationError, match=r"another process.*try again"):
            aiosdk.save_profile("lab", url="http://x")
    finally:
        os.close(held)
    assert _read_profiles(clean_env) == {"profiles": {"old": {"url": "http://old"}}}


def test_concurrent_saves_lose_no_profile(clean_env: Path) -> None:
    names = [f"p{i}" for i in range(12)]
    threads = [
        threading.Thread(target=aiosdk.save_profile, args=(name,), kwargs={"url": "http://x"})
        for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(_read_profiles(clean_env)["profiles"]) == sorted(names)  # type: ignore[call-overload]
