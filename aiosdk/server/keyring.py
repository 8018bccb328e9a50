"""The server keyring: the secret keys the server signs and seals with.

Whatever the server hands out and must later trust (session ids, channel tokens, PAR URLs) is
signed with :meth:`Keyring.sign` and checked with :meth:`Keyring.verify`; state it keeps for a
client (idempotency records) is keyed with :meth:`Keyring.derive`, so that a copy of the database
alone can neither read nor forge it.

One key is current: it signs. :meth:`Keyring.rotate` makes a new current key and keeps the older
ones for verification until they retire (seven days later by default), then drops them, so that
what was signed before a rotation keeps verifying for a while, and not forever. Every use is
separated by a *purpose* string: a signature made for one purpose never verifies for another.

Where the keys come from (see :func:`resolve_keyring`): a file given to the server
(``aiosdk serve --keyring FILE``), the environment (``$AIOSDK_KEYRING`` holding the file's JSON),
both for several server processes that must trust each other; or else ``keyring.json`` in the
data directory, generated on the first start. Files must be owner-only (mode ``0600``): the
server refuses to start on a keyring others can read. Keys never appear in reprs, logs or
exceptions.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_RETIRE_AFTER",
    "KEYRING_ENV",
    "KEYRING_FILE",
    "Key",
    "Keyring",
    "KeyringError",
    "create_keyring_file",
    "load_keyring_file",
    "load_or_create_keyring_file",
    "resolve_keyring",
    "rotate_keyring_file",
]

KEYRING_ENV = "AIOSDK_KEYRING"
"""The environment variable that may hold a keyring's JSON (what a keyring file holds)."""

KEYRING_FILE = "keyring.json"
"""The keyring's file name in a data directory."""

DEFAULT_RETIRE_AFTER = 7 * 24 * 3600.0
"""Seconds a replaced key keeps verifying after a rotation."""

_FORMAT_VERSION = 1
_SECRET_BYTES = 32
_KEY_ID_BYTES = 8
_DERIVE_PREFIX = b"aiosdk keyring v1\0"


class KeyringError(Exception):
    """A keyring that cannot be used: missing, malformed, or readable by others."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Key:
    """One secret key of a keyring (its secret never shows in a repr)."""

    key_id: str
    """A public, random identifier: signatures name the key that made them."""
    secret: bytes = field(repr=False)
    created_at: datetime
    retires_at: datetime | None = None
    """When the key stops verifying; ``None`` for the current key."""

    @classmethod
    def generate(cls, now: datetime | None = None) -> Key:
        """A new random key."""
        return cls(
            key_id=secrets.token_hex(_KEY_ID_BYTES),
            secret=secrets.token_bytes(_SECRET_BYTES),
            created_at=now or _now(),
        )

    def valid_at(self, now: datetime) -> bool:
        """Whether the key still verifies at ``now``."""
        return self.retires_at is None or now < self.retires_at

    def derive(self, purpose: str) -> bytes:
        """This key's sub-key for ``purpose`` (HMAC-SHA256 of the purpose under the secret)."""
        if not purpose:
            raise ValueError("a keyring purpose must not be empty")
        return hmac.new(self.secret, _DERIVE_PREFIX + purpose.encode(), hashlib.sha256).digest()


class Keyring:
    """The server's secret keys: one current key that signs, older ones that still verify.

    Thread-safe: :meth:`rotate` swaps the keys at once, readers see the old set or the new one.
    """

    def __init__(self, keys: list[Key] | tuple[Key, ...]) -> None:
        """A keyring of ``keys``, the current one (``retires_at`` of ``None``) first."""
        keys = tuple(keys)
        if not keys or keys[0].retires_at is not None:
            raise KeyringError("a keyring needs a current key first (one that does not retire)")
        if any(key.retires_at is None for key in keys[1:]):
            raise KeyringError("a keyring has one current key; the others must retire")
        if len({key.key_id for key in keys}) != len(keys):
            raise KeyringError("the keys of a keyring need distinct ids")
        self._keys = keys
        self._lock = threading.Lock()

    @classmethod
    def generate(cls) -> Keyring:
        """A new keyring of one fresh key (for a server without a data directory, or tests)."""
        return cls([Key.generate()])

    def __repr__(self) -> str:
        keys = self._keys
        return f"<Keyring current={keys[0].key_id!r}, {len(keys)} key(s)>"

    @property
    def current(self) -> Key:
        """The key that signs."""
        return self._keys[0]

    @property
    def keys(self) -> tuple[Key, ...]:
        """Every key, the current one first, older ones (even retired) after it, newest first."""
        return self._keys

    def valid_keys(self, now: datetime | None = None) -> list[Key]:
        """The keys that still verify, the current one first."""
        moment = now or _now()
        return [key for key in self._keys if key.valid_at(moment)]

    def sign(self, purpose: str, data: bytes) -> str:
        """A signature of ``data`` for ``purpose`` by the current key: ``<key id>.<base64url
        HMAC-SHA256>``. It verifies only for the same purpose and data."""
        key = self._keys[0]
        mac = hmac.new(key.derive(purpose), data, hashlib.sha256).digest()
        return f"{key.key_id}.{_b64encode(mac)}"

    def verify(self, purpose: str, data: bytes, signature: str) -> bool:
        """Whether ``signature`` is one of :meth:`sign` for ``purpose`` and ``data`` by a key that
        has not retired (compared in constant time)."""
        key_id, dot, encoded = signature.partition(".")
        if not dot or not signature.isascii():
            return False
        try:
            given = _b64decode(encoded)
        except (binascii.Error, ValueError):
            return False
        for key in self.valid_keys():
            if hmac.compare_digest(key.key_id, key_id):
                expected = hmac.new(key.derive(purpose), data, hashlib.sha256).digest()
                return hmac.compare_digest(expected, given)
        return False

    def derive(self, purpose: str) -> list[bytes]:
        """A sub-key for ``purpose`` from each key that still verifies, the current key's first:
        for a value stored under a key, a lookup tries each in turn."""
        return [key.derive(purpose) for key in self.valid_keys()]

    def rotate(self, retire_after: float = DEFAULT_RETIRE_AFTER) -> Key:
        """Make a new current key (returned); the old current key retires ``retire_after``
        seconds from now, and keys already retired are dropped. In memory: see
        :func:`rotate_keyring_file` for a keyring file."""
        if not retire_after >= 0:
            raise ValueError(f"retire_after must be a number of seconds >= 0, not {retire_after!r}")
        now = _now()
        with self._lock:
            new = Key.generate(now)
            while any(key.key_id == new.key_id for key in self._keys):  # pragma: no cover
                new = Key.generate(now)
            old, *older = self._keys
            retired = Key(old.key_id, old.secret, old.created_at, now + _seconds(retire_after))
            self._keys = (new, *(key for key in (retired, *older) if key.valid_at(now)))
        return new

    def to_json(self) -> str:
        """The keyring as a keyring file holds it (secrets included: keep it owner-only)."""
        now = _now()
        return json.dumps(
            {
                "version": _FORMAT_VERSION,
                "keys": [_key_document(key) for key in self._keys if key.valid_at(now)],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "the keyring") -> Keyring:
        """The keyring a keyring file's JSON describes; raises :class:`KeyringError` naming
        ``source`` (never the content) when it is not one."""
        try:
            document = json.loads(text)
        except ValueError:
            raise KeyringError(f"{source} is not valid JSON") from None
        if not isinstance(document, dict) or document.get("version") != _FORMAT_VERSION:
            raise KeyringError(f"{source} is not a version {_FORMAT_VERSION} aiosdk keyring")
        entries = document.get("keys")
        if not isinstance(entries, list) or not entries:
            raise KeyringError(f"{source} has no keys")
        try:
            keys = [_key_from_document(entry) for entry in entries]
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise KeyringError(f"{source} has a malformed key") from None
        if any(len(key.secret) < 16 for key in keys):
            raise KeyringError(f"{source} has a key shorter than 16 bytes")
        now = _now()
        keys = [key for key in keys if key.valid_at(now)]
        keys.sort(key=lambda key: (key.retires_at is not None, -key.created_at.timestamp()))
        try:
            return cls(keys)
        except KeyringError as exc:
            raise KeyringError(f"{source}: {exc}") from None


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _key_document(key: Key) -> dict[str, Any]:
    return {
        "id": key.key_id,
        "secret": _b64encode(key.secret),
        "created_at": key.created_at.isoformat(),
        "retires_at": None if key.retires_at is None else key.retires_at.isoformat(),
    }


def _key_from_document(entry: Mapping[str, Any]) -> Key:
    key_id, secret = entry["id"], entry["secret"]
    if not isinstance(key_id, str) or not key_id or "." in key_id or not isinstance(secret, str):
        raise ValueError("bad key")
    retires_at = entry.get("retires_at")
    return Key(
        key_id=key_id,
        secret=_b64decode(secret),
        created_at=_aware(datetime.fromisoformat(entry["created_at"])),
        retires_at=None if retires_at is None else _aware(datetime.fromisoformat(retires_at)),
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


# Files. Blocking: call them in a worker thread from async code.


def load_keyring_file(path: Path) -> Keyring:
    """The keyring in ``path``; raises :class:`KeyringError` if it is missing, malformed, or
    open to anyone but its owner."""
    try:
        with open(path, encoding="utf-8") as file:
            _check_owner_only(path, os.fstat(file.fileno()))
            text = file.read()
    except FileNotFoundError:
        raise KeyringError(f"no keyring at {path}") from None
    except OSError as exc:
        raise KeyringError(f"cannot read the keyring at {path}: {exc.strerror}") from None
    return Keyring.from_json(text, source=f"the keyring at {path}")


def _check_owner_only(path: Path, status: os.stat_result) -> None:
    if os.name == "posix" and status.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(status.st_mode)
        raise KeyringError(
            f"the keyring at {path} is open to group or others (mode {mode:04o}); it holds the"
            f" server's secret keys: make it owner-only with `chmod 600 {path}`"
        )


def create_keyring_file(path: Path) -> Keyring:
    """Write a new keyring to ``path`` (mode ``0600``); raises :class:`KeyringError` if the
    file exists."""
    keyring = Keyring.generate()
    try:
        _write_new(path, keyring.to_json())
    except FileExistsError:
        raise KeyringError(f"{path} exists already; not overwritten") from None
    except OSError as exc:
        raise KeyringError(f"cannot write the keyring at {path}: {exc.strerror}") from None
    return keyring


def load_or_create_keyring_file(path: Path) -> Keyring:
    """The keyring in ``path``, generated there first if there is none. Two processes starting
    at once end up with the same keyring: the file appears at once, whole, or not at all."""
    try:
        return create_keyring_file(path)
    except KeyringError:
        if not path.exists():
            raise
    return load_keyring_file(path)


def rotate_keyring_file(path: Path, retire_after: float = DEFAULT_RETIRE_AFTER) -> Keyring:
    """Rotate the keyring in ``path`` (see :meth:`Keyring.rotate`) and write it back
    atomically; the rotated keyring."""
    with _locked(path):
        keyring = load_keyring_file(path)
        keyring.rotate(retire_after)
        try:
            _replace(path, keyring.to_json())
        except OSError as exc:
            raise KeyringError(f"cannot write the keyring at {path}: {exc.strerror}") from None
    return keyring


def resolve_keyring(
    keyring_file: Path | None, data_dir: Path, environ: Mapping[str, str] | None = None
) -> Keyring:
    """The server's keyring: from ``keyring_file`` if given, else from ``$AIOSDK_KEYRING`` if
    set, else ``keyring.json`` in ``data_dir`` (generated on the first start)."""
    if keyring_file is not None:
        return load_keyring_file(keyring_file)
    text = (os.environ if environ is None else environ).get(KEYRING_ENV)
    if text:
        return Keyring.from_json(text, source=f"${KEYRING_ENV}")
    return load_or_create_keyring_file(data_dir / KEYRING_FILE)


def _temporary(path: Path, text: str) -> Path:
    """A new owner-only file beside ``path`` holding ``text``, on disk."""
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _write_new(path: Path, text: str) -> None:
    """Write ``path`` whole, atomically, failing with :class:`FileExistsError` if it exists."""
    temporary = _temporary(path, text)
    try:
        os.link(temporary, path)  # unlike a rename, never replaces a file there
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: exclusive creation, then the content
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    finally:
        os.unlink(temporary)
    _sync_directory(path.parent)


def _replace(path: Path, text: str) -> None:
    """Replace ``path`` whole, atomically."""
    temporary = _temporary(path, text)
    try:
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path``: rotations one at a time."""
    if os.name != "posix":
        yield
        return
    import fcntl

    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
