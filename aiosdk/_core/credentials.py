"""What a client authenticates with, and where a remembered login is kept.

Three kinds of credentials, each a frozen value whose secrets are :class:`Secret`\\ s:

- :class:`TokenCredential`: an API token (or the admin token), sent as a bearer token;
- :class:`BasicCredential`: a username and password sent with every request (a ``no_session``
  login), as HTTP Basic credentials, on gRPC too;
- :class:`SessionCredential`: a login session, a short-lived access token sent as a bearer
  token and the rotating refresh token that renews it (:mod:`aiosdk._core.auth` does).

``login(..., remember=True)`` keeps the credentials in a :class:`CredentialStore`: one JSON file
per server in ``sessions/`` under the user config directory (``AIOSDK_CONFIG_DIR`` overrides
it), every file owner-only (0600), written atomically (a temporary file renamed over the old
one), so that a reader never sees half a file. A directory the store makes is made owner-only
(0700); one that exists already is left as it is (``AIOSDK_CONFIG_DIR=$HOME`` must not change
the home directory's mode). A stored login that another user owns, that the group or others may
read, or that is a symbolic link is refused, never used. A password is never written.
:func:`write_private` is the one way files with secrets are written, profiles included, and
:func:`lock_file` the one lock between processes. Everything here blocks (file I/O): async code
calls it in a worker thread.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, ProtocolError
from .secrets import Secret

__all__ = [
    "BasicCredential",
    "Credential",
    "CredentialStore",
    "FileLock",
    "LockTimeout",
    "SessionCredential",
    "TokenCredential",
    "lock_file",
    "private_directory",
    "write_private",
]

log = logging.getLogger("aiosdk")

# A session is renewed this long before its access token expires (at most a tenth of its
# lifetime, for short-lived tokens), so that calls rarely meet an expired token.
REFRESH_AHEAD = 30.0
_STORE_VERSION = 1
_LOCK_TIMEOUT = 10.0
"""Seconds to wait for a lock held elsewhere (longer than a renewal's round trip), at most:
then the wait fails with an error, and what needed the lock is not done without it."""
LOCK_POLL = 0.05
"""Seconds between two tries of a lock held elsewhere."""
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_POSIX = sys.platform != "win32"


@dataclass(frozen=True)
class TokenCredential:
    """An API token (or the admin token), sent as ``Authorization: Bearer <token>``."""

    token: Secret

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value (a secret: never log it)."""
        return f"Bearer {self.token.reveal()}"

    def _to_store(self) -> dict[str, Any]:
        return {"kind": "token", "token": self.token.reveal()}


@dataclass(frozen=True)
class BasicCredential:
    """A username and password sent with every request (``no_session`` logins)."""

    username: str
    password: Secret

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value (a secret: never log it)."""
        pair = f"{self.username}:{self.password.reveal()}".encode()
        return f"Basic {base64.b64encode(pair).decode('ascii')}"


@dataclass(frozen=True)
class SessionCredential:
    """A login session: the access token in use, the refresh token that renews it, and when.

    ``expires_at`` and ``refresh_at`` are wall-clock times (``time.time()``), computed from the
    lifetime the server gave (``expires_in``) when the tokens arrived, so that a skewed server
    clock does not matter, and a machine that slept past them (which a monotonic clock would
    not notice) refreshes.
    """

    access_token: Secret
    refresh_token: Secret
    expires_at: float
    refresh_at: float
    session_id: str
    username: str
    scope: str | None = field(default=None)

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value (a secret: never log it)."""
        return f"Bearer {self.access_token.reveal()}"

    @classmethod
    def from_answer(cls, answer: Any, *, now: float | None = None) -> SessionCredential:
        """The session of a ``POST /auth/login`` or ``/auth/refresh`` answer."""
        try:
            lifetime = _lifetime(answer["expires_in"])
            received = time.time() if now is None else now
            scope = answer.get("scope")
            return cls(
                access_token=Secret(str(answer["access_token"])),
                refresh_token=Secret(str(answer["refresh_token"])),
                expires_at=received + lifetime,
                refresh_at=received + lifetime - min(REFRESH_AHEAD, lifetime / 10),
                session_id=str(answer["session_id"]),
                username=str(answer["username"]),
                scope=str(scope) if scope is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # The message names what is wrong, never a value (the answer holds secrets).
            raise ProtocolError(
                f"the server's login answer is not usable ({type(exc).__name__} on"
                f" {exc.args[0] if isinstance(exc, KeyError) else 'a field'})"
            ) from None

    def _to_store(self) -> dict[str, Any]:
        return {
            "kind": "session",
            "access_token": self.access_token.reveal(),
            "refresh_token": self.refresh_token.reveal(),
            "expires_at": self.expires_at,
            "refresh_at": self.refresh_at,
            "session_id": self.session_id,
            "username": self.username,
            "scope": self.scope,
        }


def _lifetime(value: object) -> float:
    lifetime = float(value)  # type: ignore[arg-type]  # (a TypeError is an unusable answer)
    if not lifetime >= 0:  # (0: it expires within the second)
        raise ValueError("expires_in is negative")
    return lifetime


Credential = TokenCredential | BasicCredential | SessionCredential
"""Whatever a client authenticates with."""


def _from_store(data: Mapping[str, Any]) -> TokenCredential | SessionCredential:
    kind = data.get("kind")
    if kind == "token":
        return TokenCredential(Secret(str(data["token"])))
    if kind == "session":
        scope = data.get("scope")
        return SessionCredential(
            access_token=Secret(str(data["access_token"])),
            refresh_token=Secret(str(data["refresh_token"])),
            expires_at=float(data["expires_at"]),
            refresh_at=float(data["refresh_at"]),
            session_id=str(data["session_id"]),
            username=str(data["username"]),
            scope=str(scope) if scope is not None else None,
        )
    raise ValueError(f"unknown kind of credentials {kind!r}")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable and writable by its owner only.

    Missing directories are made owner-only (0700); existing ones are left alone. The text
    goes to a new temporary file beside ``path`` (created 0600, exclusively and without
    following a symbolic link), flushed to disk, then renamed over ``path``: a concurrent
    reader sees the old file or the new one, never a part, the secret never sits in a file
    others may read, not even for a moment, and a symbolic link at ``path`` is replaced, never
    followed (what it points to is not touched).
    """
    directory = path.parent
    private_directory(directory)
    temporary = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if _POSIX:
            os.chmod(temporary, 0o600)  # the mode asked for already (a umask only removes bits)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def private_directory(directory: Path) -> None:
    """Make ``directory``, and its missing parents, owner-only (0700), as the XDG base
    directory specification asks; a directory that exists already is left as it is (its mode
    is its owner's choice: ``AIOSDK_CONFIG_DIR`` may name the home directory)."""
    missing: list[Path] = []
    current = directory
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    for made in reversed(missing):
        try:
            os.mkdir(made, 0o700)
        except FileExistsError:  # made meanwhile by someone else: theirs
            continue
        if _POSIX:
            os.chmod(made, 0o700)  # ours: exactly 0700, whatever the umask took away


def read_private(path: Path) -> str:
    """The text of ``path``, a file with secrets: refused (a :class:`ConfigurationError`) if it
    is a symbolic link, another user's file, or one the group or others may read or write.

    Raises ``FileNotFoundError`` if there is no such file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError as exc:
        if _NOFOLLOW and exc.errno == errno.ELOOP:
            raise ConfigurationError(
                f"{path} is a symbolic link: refusing to read secrets through it; remove it and"
                " log in again"
            ) from None
        raise
    with os.fdopen(fd, "r", encoding="utf-8") as f:
        if _POSIX:
            info = os.fstat(f.fileno())
            if info.st_uid != os.geteuid():
                raise ConfigurationError(
                    f"{path} belongs to another user (uid {info.st_uid}): refusing to use the"
                    " login in it; remove it and log in again"
                )
            if info.st_mode & 0o077:
                raise ConfigurationError(
                    f"{path} is readable or writable by others (mode"
                    f" {stat.S_IMODE(info.st_mode):04o}, not 0600): refusing to use the login in"
                    " it, which others may have read; remove it (aiosdk logout) and log in"
                    " again"
                )
        return f.read()


class LockTimeout(TimeoutError):
    """A lock was held elsewhere for longer than the caller would wait."""


class FileLock:
    """An exclusive ``flock`` on a lock file, held until :meth:`release`.

    It may be released from another thread than the one that took it (a lock belongs to the
    open file, not to a thread), so async code takes it in one worker thread and frees it later.
    """

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    def __repr__(self) -> str:
        return f"<FileLock {str(self.path)!r} {'held' if self._fd is not None else 'free'}>"

    @classmethod
    def attempt(cls, path: Path) -> FileLock | None:
        """Take the lock if it is free now (never waits); ``None`` if it is held elsewhere.

        Raises ``OSError`` if the lock file cannot be opened (an unwritable directory, a
        symbolic link in its place): whoever needs the lock must then do without what it
        guards, never go on unlocked. Where ``fcntl`` is missing (Windows) there is no lock
        between processes: the lock is granted at once.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return cls(path, None)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        """Free the lock (closing the file frees it); does nothing the second time."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def lock_file(path: Path, timeout: float | None = None) -> FileLock:
    """Take the lock of ``path`` (a lock file), waiting up to ``timeout`` seconds (the default:
    ten) while it is held elsewhere; then :class:`LockTimeout`. Blocks: call it in a thread."""
    wait = _LOCK_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + wait
    while True:
        lock = FileLock.attempt(path)
        if lock is not None:
            return lock
        if time.monotonic() + LOCK_POLL > deadline:
            raise LockTimeout(f"the lock {path} has been held elsewhere for {wait:g} s")
        time.sleep(LOCK_POLL)


class CredentialStore:
    """Remembered logins, one file per server URL, in ``directory`` (blocking: use a thread).

    The default directory is ``sessions/`` in the user config directory (``AIOSDK_CONFIG_DIR``
    overrides the latter). Its lock (:meth:`lock`, or :meth:`attempt_lock` once) serializes the
    processes that renew one remembered session, so that two of them never both spend its
    refresh token (the server would take the second use for a stolen token and end the
    session): what cannot have the lock waits, and never renews without it.
    """

    def __init__(self, directory: Path | None = None) -> None:
        if directory is None:
            from .config import config_dir

            directory = config_dir() / "sessions"
        self.directory = directory

    def _prepare(self) -> None:
        private_directory(self.directory)  # made 0700 if missing; left alone if not

    def __repr__(self) -> str:
        return f"<CredentialStore {str(self.directory)!r}>"

    @property
    def lock_path(self) -> Path:
        """The store's lock file."""
        return self.directory / ".lock"

    def path(self, url: str) -> Path:
        """The file that holds ``url``'s login: a readable name (the file records the URL)."""
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", url.replace("://", "-", 1)).strip("_")
        return self.directory / f"{name or 'server'}.json"

    def load(self, url: str) -> TokenCredential | SessionCredential | None:
        """The remembered login of ``url``, if there is a usable one.

        A file that is not one aiosdk wrote is ignored (with a warning). One that others may
        read, another user's, or a symbolic link is refused: a :class:`ConfigurationError`
        that says so, since its tokens may be known to others.
        """
        path = self.path(url)
        try:
            data = json.loads(read_private(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            log.warning("ignoring the remembered login in %s: %s", path, type(exc).__name__)
            return None
        try:
            if data.get("version") != _STORE_VERSION or data.get("url") != url:
                return None
            return _from_store(data["credential"])
        except (KeyError, TypeError, ValueError, AttributeError):
            log.warning("ignoring the remembered login in %s: it is not one aiosdk wrote", path)
            return None

    def save(self, url: str, credential: TokenCredential | SessionCredential) -> None:
        """Remember ``credential`` for ``url`` (replacing what was remembered)."""
        data = {"version": _STORE_VERSION, "url": url, "credential": credential._to_store()}
        self._prepare()
        write_private(self.path(url), json.dumps(data, indent=2) + "\n")

    def remove(self, url: str) -> bool:
        """Forget ``url``'s login; whether there was one."""
        try:
            self.path(url).unlink()
        except FileNotFoundError:
            return False
        return True

    def attempt_lock(self) -> FileLock | None:
        """Take the store's lock if it is free now; ``None`` if another process holds it.

        Raises ``OSError`` if the store cannot be locked at all (its directory cannot be made
        or written, its lock file is a symbolic link): see :meth:`FileLock.attempt`.
        """
        self._prepare()
        return FileLock.attempt(self.lock_path)

    def lock(self, timeout: float | None = None) -> FileLock:
        """Take the store's lock (between processes too); :meth:`FileLock.release` frees it.

        Waits up to ``timeout`` seconds (ten by default) while another process holds it, then
        raises :class:`LockTimeout`; never goes on without it. Blocks: call it in a thread.
        """
        self._prepare()
        return lock_file(self.lock_path, timeout)
