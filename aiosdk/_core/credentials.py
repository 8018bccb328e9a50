"""What a client authenticates with, and where a remembered login is kept.

Three kinds of credentials, each a frozen value whose secrets are :class:`Secret`\\ s:

- :class:`TokenCredential`: an API token (or the admin token), sent as a bearer token;
- :class:`BasicCredential`: a username and password sent with every request (a ``no_session``
  login), as HTTP Basic credentials, on gRPC too;
- :class:`SessionCredential`: a login session, a short-lived access token sent as a bearer
  token and the rotating refresh token that renews it (:mod:`aiosdk._core.auth` does).

``login(..., remember=True)`` keeps the credentials in a :class:`CredentialStore`: one JSON file
per server in ``sessions/`` under the user config directory (``AIOSDK_CONFIG_DIR`` overrides
it), the directory owner-only (0700) and every file owner-only (0600), written atomically (a
temporary file renamed over the old one), so that a reader never sees half a file. A password
is never written. :func:`write_private` is the one way files with secrets are written, profiles
included. Everything here blocks (file I/O): async code calls it in a worker thread.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ProtocolError
from .secrets import Secret

__all__ = [
    "BasicCredential",
    "Credential",
    "CredentialStore",
    "SessionCredential",
    "TokenCredential",
    "write_private",
]

log = logging.getLogger("aiosdk")

# A session is renewed this long before its access token expires (at most a tenth of its
# lifetime, for short-lived tokens), so that calls rarely meet an expired token.
REFRESH_AHEAD = 30.0
_STORE_VERSION = 1
_LOCK_TIMEOUT = 10.0


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

    The parent directory is made owner-only (0700) if it is ours to make; the text goes to a
    temporary file in it (created 0600), flushed to disk, then renamed over ``path``: a
    concurrent reader sees the old file or the new one, never a part, and the secret never
    sits in a file others may read, not even for a moment.
    """
    directory = path.parent
    private_directory(directory)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if sys.platform != "win32":
            os.chmod(temporary, 0o600)  # mkstemp's mode already; kept explicit
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def private_directory(directory: Path) -> None:
    """Make ``directory`` (and its parents) if missing; make it owner-only (0700).

    Only ``directory`` itself is made private: its parents (``~/.config``, say) are not ours.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if sys.platform != "win32" and directory.stat().st_mode & 0o077:
        os.chmod(directory, 0o700)


class CredentialStore:
    """Remembered logins, one file per server URL, in ``directory`` (blocking: use a thread).

    The default directory is ``sessions/`` in the user config directory (``AIOSDK_CONFIG_DIR``
    overrides the latter). :meth:`locked` serializes the processes that renew one remembered
    session, so that two of them never both spend its refresh token (the server would take the
    second use for a stolen token and end the session).
    """

    def __init__(self, directory: Path | None = None) -> None:
        private = [directory] if directory is not None else []
        if directory is None:
            from .config import config_dir

            root = config_dir()
            directory = root / "sessions"
            private = [root, directory]
        self.directory = directory
        self._private = private  # made owner-only (0700) before a file goes in

    def _prepare(self) -> None:
        for path in self._private:
            private_directory(path)

    def __repr__(self) -> str:
        return f"<CredentialStore {str(self.directory)!r}>"

    def path(self, url: str) -> Path:
        """The file that holds ``url``'s login: a readable name (the file records the URL)."""
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", url.replace("://", "-", 1)).strip("_")
        return self.directory / f"{name or 'server'}.json"

    def load(self, url: str) -> TokenCredential | SessionCredential | None:
        """The remembered login of ``url``, if there is a usable one."""
        path = self.path(url)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
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

    def lock(self) -> StoreLock:
        """Take the store's lock (between processes too); :meth:`StoreLock.release` frees it.

        Blocks up to a few seconds, then goes on without the lock: call it in a worker thread.
        Where ``fcntl`` is missing (Windows), or the directory cannot be written, there is no
        lock (what needs the directory then fails on its own, and says why).
        """
        try:
            self._prepare()
        except OSError as exc:
            log.warning("the credential store %s is not usable: %s", self.directory, exc)
        return StoreLock(self.directory)


class StoreLock:
    """An exclusive ``flock`` on the store's lock file, held until :meth:`release`.

    It may be released from another thread than the one that took it (a lock belongs to the
    open file, not to a thread), so async code takes it in one worker thread and frees it later.
    """

    def __init__(self, directory: Path) -> None:
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        try:
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("the credential store's lock is held elsewhere; going on")
                    break
                time.sleep(0.02)
        self._fd = fd

    def release(self) -> None:
        """Free the lock (closing the file frees it); does nothing the second time."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
