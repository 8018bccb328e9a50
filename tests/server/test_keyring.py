"""The server keyring: signing, rotation, its files and where a server finds it."""

from __future__ import annotations

import json
import os
import stat
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

from aiosdk.server import Server, ServerConfig
from aiosdk.server.keyring import (
    KEYRING_ENV,
    KEYRING_FILE,
    Key,
    Keyring,
    KeyringError,
    create_keyring_file,
    load_keyring_file,
    load_or_create_keyring_file,
    resolve_keyring,
    rotate_keyring_file,
)

pytestmark = pytest.mark.anyio


# The keyring itself: pure logic.


def test_a_signature_verifies_for_its_purpose_and_data_only() -> None:
    keyring = Keyring.generate()
    signature = keyring.sign("session", b"alice")
    assert signature.startswith(keyring.current.key_id + ".")
    assert keyring.verify("session", b"alice", signature)
    assert not keyring.verify("session", b"alicf", signature)
    assert not keyring.verify("channel", b"alice", signature)  # purposes never mix
    assert not Keyring.generate().verify("session", b"alice", signature)  # another keyring's
    key_id, _, mac = signature.partition(".")
    tampered = f"{key_id}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    bad_signatures = ("", "nodot", f"{key_id}.", f"{key_id}.!!!", f"unknown.{mac}", tampered)
    for bad in (*bad_signatures, f"é{key_id[1:]}.{mac}", f"{key_id}.{mac}é", "\ud800.x"):
        assert not keyring.verify("session", b"alice", bad)


def test_rotation_keeps_old_signatures_valid_until_the_old_key_retires() -> None:
    keyring = Keyring.generate()
    old = keyring.current
    before = keyring.sign("par", b"url")
    new = keyring.rotate(retire_after=3600)
    assert keyring.current == new != old
    assert keyring.sign("par", b"url").startswith(new.key_id + ".")  # the new key signs
    assert keyring.verify("par", b"url", before)  # the old one still verifies
    assert keyring.derive("par") == [new.derive("par"), old.derive("par")]  # current first
    retired = keyring.keys[1]
    assert retired.key_id == old.key_id
    assert retired.retires_at is not None

    # Once retired, the old key verifies nothing and derives nothing; a rotation drops it.
    later = retired.retires_at + timedelta(seconds=1)
    assert [key.key_id for key in keyring.valid_keys(later)] == [new.key_id]
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    expired = Keyring([new, Key(old.key_id, old.secret, old.created_at, retires_at=past)])
    assert not expired.verify("par", b"url", before)
    assert expired.derive("par") == [new.derive("par")]
    expired.rotate()
    assert old.key_id not in {key.key_id for key in expired.keys}
    assert old.key_id not in expired.to_json()


def test_derive_separates_purposes_and_keys() -> None:
    keyring = Keyring.generate()
    (idempotency,) = keyring.derive("idempotency")
    (session,) = keyring.derive("session")
    assert idempotency != session
    assert len(idempotency) == 32
    assert Keyring.generate().derive("idempotency") != [idempotency]
    with pytest.raises(ValueError, match="empty"):
        keyring.derive("")


def test_secrets_never_show_in_reprs() -> None:
    keyring = Keyring.generate()
    keyring.rotate()
    shown = repr(keyring) + repr(keyring.keys) + repr(keyring.current) + str(keyring.keys)
    for key in keyring.keys:
        assert key.secret.hex() not in shown
        assert repr(key.secret) not in shown
    assert keyring.current.key_id in repr(keyring)


def test_json_round_trip_and_malformed_keyrings() -> None:
    keyring = Keyring.generate()
    keyring.rotate()
    again = Keyring.from_json(keyring.to_json())
    assert [(k.key_id, k.secret, k.retires_at) for k in again.keys] == [
        (k.key_id, k.secret, k.retires_at) for k in keyring.keys
    ]
    secret = json.loads(keyring.to_json())["keys"][0]["secret"]
    for text, message in [
        ("{", "not valid JSON"),
        ("[]", "not a version 1"),
        ('{"version": 1, "keys": []}', "no keys"),
        ('{"version": 1, "keys": [{"id": "a"}]}', "malformed"),
        (
            json.dumps(
                {
                    "version": 1,
                    "keys": [
                        {"id": "a", "secret": secret, "created_at": "2026-01-01T00:00:00+00:00"},
                        {"id": "b", "secret": secret, "created_at": "2026-01-02T00:00:00+00:00"},
                    ],
                }
            ),
            "one current key",
        ),
    ]:
        with pytest.raises(KeyringError, match=message) as raised:
            Keyring.from_json(text, source="$TEST")
        assert "$TEST" in str(raised.value)
        assert secret not in str(raised.value)


def test_a_keyring_needs_its_current_key_first() -> None:
    with pytest.raises(KeyringError):
        Keyring([])
    with pytest.raises(KeyringError):
        Keyring([Key.generate(), Key.generate()])  # two current keys


# Files.


def test_files_are_owner_only_and_written_whole(tmp_path: Path) -> None:
    path = tmp_path / KEYRING_FILE
    made = load_or_create_keyring_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_or_create_keyring_file(path)  # not replaced
    assert loaded.current.secret == made.current.secret
    assert [p.name for p in tmp_path.iterdir()] == [KEYRING_FILE]  # no temporary left over
    with pytest.raises(KeyringError, match="exists already"):
        create_keyring_file(path)

    rotated = rotate_keyring_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reread = load_keyring_file(path)
    assert [k.key_id for k in reread.keys] == [k.key_id for k in rotated.keys]
    assert reread.keys[1].key_id == made.current.key_id


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_keyring_others_can_open_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / KEYRING_FILE
    create_keyring_file(path)
    path.chmod(mode)
    with pytest.raises(KeyringError, match=r"chmod 600") as raised:
        load_keyring_file(path)
    assert f"{mode:04o}" in str(raised.value)


def test_where_a_server_finds_its_keyring(tmp_path: Path) -> None:
    given = tmp_path / "given.json"
    from_file = create_keyring_file(given)
    from_env = Keyring.generate()
    env = {KEYRING_ENV: from_env.to_json()}
    data = tmp_path / "data"
    data.mkdir()

    def resolve(keyring_file: Path | None, environ: dict[str, str]) -> Keyring:
        return resolve_keyring(keyring_file, data, environ)

    chosen = resolve(given, env)  # the file first
    assert chosen.current.secret == from_file.current.secret
    chosen = resolve(None, env)  # then the environment
    assert chosen.current.secret == from_env.current.secret
    assert not (data / KEYRING_FILE).exists()
    chosen = resolve(None, {})  # else the data directory's
    assert (data / KEYRING_FILE).exists()
    with pytest.raises(KeyringError, match="no keyring at"):
        resolve(tmp_path / "missing.json", {})


# The running server.


async def test_a_server_keeps_its_keyring_in_its_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with Server(ServerConfig(data_dir=data)) as server:
        first = server.keyring
        signature = first.sign("test", b"x")
    assert stat.S_IMODE((data / KEYRING_FILE).stat().st_mode) == 0o600
    async with Server(ServerConfig(data_dir=data)) as server:  # the same keys after a restart
        assert server.keyring.verify("test", b"x", signature)

    (data / KEYRING_FILE).chmod(0o644)
    with pytest.raises(KeyringError, match="open to group or others"):
        async with Server(ServerConfig(data_dir=data)):
            pass


async def test_an_embedded_server_keeps_its_keyring_in_its_temporary_directory() -> None:
    async with Server(ServerConfig()) as server:
        path = server.data_dir / KEYRING_FILE
        assert await anyio.Path(path).exists()
    assert not await anyio.Path(path).exists()


async def test_servers_given_one_keyring_trust_each_other(tmp_path: Path) -> None:
    shared = tmp_path / "keyring.json"
    await anyio.to_thread.run_sync(create_keyring_file, shared)
    one = ServerConfig(data_dir=tmp_path / "one", keyring_file=shared)
    two = ServerConfig(data_dir=tmp_path / "two", keyring_file=shared)
    async with Server(one) as first, Server(two) as second:
        assert second.keyring.verify("channel", b"c", first.keyring.sign("channel", b"c"))
    assert not (tmp_path / "one" / KEYRING_FILE).exists()  # nothing generated beside


# The command line.


async def test_keyring_rotate_and_generate_on_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with Server(ServerConfig(data_dir=data)) as server:
        old = server.keyring.current.key_id
        signature = server.keyring.sign("test", b"x")

    async def aiosdk(*argv: str, check: bool = True) -> tuple[int, str]:
        process = await anyio.run_process([sys.executable, "-m", "aiosdk.cli", *argv], check=False)
        if check:
            assert process.returncode == 0, process.stderr.decode()
        return process.returncode or 0, (process.stdout + process.stderr).decode()

    _, output = await aiosdk("keyring", "rotate", "--data", str(data))
    assert "1 older key(s)" in output
    async with Server(ServerConfig(data_dir=data)) as server:
        assert server.keyring.current.key_id != old
        assert server.keyring.keys[1].key_id == old
        assert server.keyring.verify("test", b"x", signature)

    generated = tmp_path / "generated.json"
    _, output = await aiosdk("keyring", "generate", str(generated))
    assert stat.S_IMODE(generated.stat().st_mode) == 0o600
    keyring = await anyio.to_thread.run_sync(load_keyring_file, generated)
    assert keyring.current.key_id in output
    assert keyring.current.secret.hex() not in output
    code, output = await aiosdk("keyring", "generate", str(generated), check=False)
    assert code == 1
    assert "exists already" in output
    code, output = await aiosdk("keyring", "rotate", "--keyring", str(tmp_path / "x"), check=False)
    assert code == 1
    assert "no keyring at" in output

    (data / KEYRING_FILE).chmod(0o644)  # the server refuses to start, and says why
    code, output = await aiosdk("serve", "--data", str(data), "--http-port", "0", check=False)
    assert code == 1
    assert f"chmod 600 {data / KEYRING_FILE}" in output
