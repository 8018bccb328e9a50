"""Where a client's settings come from: arguments, a named profile, the environment.

Environment: ``AIOSDK_URL``, ``AIOSDK_TOKEN``, ``AIOSDK_PROFILE``. Profiles live in
``profiles.toml`` in the user config directory (``AIOSDK_CONFIG_DIR`` overrides it)::

    [profiles.local]
    url = "http://127.0.0.1:8000"
    token = "aio_..."
    retry_mode = "forceful"
"""

from __future__ import annotations

import datetime
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import platformdirs

from .errors import ConfigurationError
from .retry import RetryMode
from .secrets import Secret

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "API_PREFIX",
    "Settings",
    "config_dir",
    "load_profile",
    "normalized_url",
    "resolve_settings",
    "save_profile",
]

API_PREFIX = "/api/v1"
"""Where the HTTP API lives under the server URL."""


@dataclass(frozen=True)
class Settings:
    """The resolved connection settings of one client."""

    url: str
    token: Secret | None
    retry_mode: RetryMode


def config_dir() -> Path:
    """The directory that holds ``profiles.toml``."""
    override = os.environ.get("AIOSDK_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir("aiosdk"))


def load_profile(name: str) -> Mapping[str, Any]:
    """The settings of profile ``name``; a clear :class:`ConfigurationError` when it is missing."""
    path = config_dir() / "profiles.toml"
    try:
        with path.open("rb") as f:
            profiles = tomllib.load(f).get("profiles", {})
    except FileNotFoundError:
        raise ConfigurationError(
            f"no profiles file at {path}; cannot load profile {name!r}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigurationError(f"no profile {name!r} in {path} (profiles: {known})")
    profile = profiles[name]
    unknown = set(profile) - {"url", "token", "retry_mode"}
    if unknown:
        raise ConfigurationError(f"profile {name!r} has unknown keys: {', '.join(sorted(unknown))}")
    return dict(profile)


_PROFILE_KEYS = ("url", "token", "retry_mode")
_PROFILES_LOCK = ".profiles.lock"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_HEADER = "# aiosdk profiles: AsyncClient.from_profile(name); written by aiosdk.save_profile"


def save_profile(
    name: str,
    *,
    url: str,
    token: str | Secret | None = None,
    retry_mode: RetryMode | str | None = None,
) -> Path:
    """Save (or replace) the profile ``name`` in ``profiles.toml``; returns the file's path.

    The profile's ``url``, ``token`` and ``retry_mode`` are replaced (one not given is
    removed). Everything else in the file is kept as it was: the other profiles, keys of any
    profile that aiosdk does not know (this one's included), other tables. Comments are not:
    the file is read with :mod:`tomllib`, which drops them, and written anew (aiosdk carries no
    TOML writer that keeps them), so keep notes elsewhere. The new text is checked to read back
    as exactly what was meant before it replaces the file.

    The file is written atomically and owner-only (0600; a missing config directory is made
    0700), as every file aiosdk writes a token to, under a lock between processes
    (``.profiles.lock`` beside it), so that two saves at once never lose either profile. A lock
    held elsewhere for ten seconds is a :class:`ConfigurationError`. Blocks (file I/O): from
    async code, use :meth:`aiosdk.AsyncClient.save_profile`.
    """
    from .credentials import LockTimeout, lock_file, private_directory, write_private

    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"a profile needs a name, not {name!r}")
    entry: dict[str, Any] = {"url": normalized_url(url)}
    if token is not None:
        entry["token"] = _token(token.reveal() if isinstance(token, Secret) else token).reveal()
    if retry_mode is not None:
        entry["retry_mode"] = RetryMode.coerce(retry_mode).value
    directory = config_dir()
    path = directory / "profiles.toml"
    try:
        private_directory(directory)
        lock = lock_file(directory / _PROFILES_LOCK)
    except LockTimeout as exc:
        raise ConfigurationError(
            f"{path} is being changed by another process ({exc}): not saving profile {name!r}"
            " without its lock; try again"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot lock {path} to save profile {name!r}: {exc}") from exc
    try:
        document = _read_document(path)
        profiles = document.setdefault("profiles", {})
        if not isinstance(profiles, dict):
            raise ConfigurationError(
                f"{path}: 'profiles' is not a table, so the file is left alone"
            )
        old = profiles.get(name)
        if isinstance(old, dict):  # what aiosdk does not know of this profile, kept
            entry.update((key, value) for key, value in old.items() if key not in _PROFILE_KEYS)
        profiles[name] = entry
        text = _toml_document(document)
        if _comparable(tomllib.loads(text)) != _comparable(document):  # pragma: no cover
            raise ConfigurationError(
                f"{path} holds values aiosdk cannot write back faithfully: it is left alone"
            )
        write_private(path, text)
    finally:
        lock.release()
    return path


def _read_document(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            document: dict[str, Any] = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML, so it is left alone: {exc}") from None
    return document


def _toml_document(document: Mapping[str, Any]) -> str:
    """``document`` (what :mod:`tomllib` reads) as TOML text: tables as ``[a.b]`` sections,
    arrays of tables as ``[[a]]``, anything else inline."""
    lines = [_HEADER]
    _toml_table(lines, (), document)
    return "\n".join(lines) + "\n"


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    inline = [
        (key, value)
        for key, value in table.items()
        if not isinstance(value, dict) and not _is_table_array(value)
    ]
    nested = len(inline) < len(table)
    if path and (inline or not nested):  # (a table of tables only is made by its children)
        lines += ["", f"[{_toml_path(path)}]"]
    lines += [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in inline]
    for key, value in table.items():
        if isinstance(value, dict):
            _toml_table(lines, (*path, key), value)
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{_toml_path((*path, key))}]]"]
                _toml_array_item(lines, (*path, key), item)


def _toml_array_item(lines: list[str], path: tuple[str, ...], item: Mapping[str, Any]) -> None:
    # The [[path]] header is written: its keys, then its tables ([path.key] names the last item).
    for key, value in item.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in item.items():
        if isinstance(value, dict) or _is_table_array(value):
            _toml_table(lines, path, {key: value})


def _toml_path(path: tuple[str, ...]) -> str:
    return ".".join(_toml_key(part) for part in path)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime.date | datetime.time):  # (datetime is a date)
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + pairs + "}" if pairs else "{}"
    raise ConfigurationError(f"cannot write {type(value).__name__} values to TOML")


def _comparable(value: object) -> object:
    """``value`` with NaNs made equal to each other (for the read-back check)."""
    if isinstance(value, float) and math.isnan(value):
        return ("nan", math.copysign(1.0, value))
    if isinstance(value, dict):
        return {key: _comparable(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _toml_string(value: str) -> str:
    """``value`` as a TOML basic string (quotes, backslashes and control characters escaped)."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def resolve_settings(
    *,
    url: str | None,
    token: str | Secret | None,
    retry_mode: RetryMode | str | None,
    profile: str | None = None,
) -> Settings:
    """Resolve the settings from layers: arguments, a profile asked for by name, the environment,
    then a profile named by ``AIOSDK_PROFILE``.

    The URL comes from the first layer that has one, and the token from the arguments or from
    that same layer, so a profile's token is never sent to a URL that came from somewhere else.
    (A URL passed as an argument may use the token from the environment.)
    """
    environment = {"url": os.environ.get("AIOSDK_URL"), "token": os.environ.get("AIOSDK_TOKEN")}
    layers: list[Mapping[str, Any]] = [{"url": url, "token": token, "retry_mode": retry_mode}]
    if profile:
        layers += [load_profile(profile), environment]
    else:
        layers.append(environment)
        if env_profile := os.environ.get("AIOSDK_PROFILE"):
            layers.append(load_profile(env_profile))
    source = next((i for i, layer in enumerate(layers) if layer.get("url")), None)
    if source is None:
        raise ConfigurationError(
            "no server URL: pass url=, set AIOSDK_URL, use a profile, "
            "or start one with aiosdk.embedded()"
        )
    url = normalized_url(str(layers[source]["url"]))
    # A token from the arguments, else from the URL's own layer; a URL given as an argument
    # may also take the environment's token.
    candidates = [layers[0], layers[source]] + ([environment] if source == 0 else [])
    raw_token = next((layer["token"] for layer in candidates if layer.get("token")), None)
    if isinstance(raw_token, Secret):
        raw_token = raw_token.reveal()
    secret = None if raw_token is None else _token(raw_token)
    mode = next((layer["retry_mode"] for layer in layers if layer.get("retry_mode")), None)
    return Settings(url=url, token=secret, retry_mode=RetryMode.coerce(mode or RetryMode.DEFAULT))


def _token(value: object) -> Secret:
    if not isinstance(value, str):
        raise ConfigurationError(f"the token must be a string, not {type(value).__name__}")
    if not value.isprintable() or value != value.strip():
        # Typically the newline at the end of a token read from a file; never sendable.
        raise ConfigurationError(
            "the token holds whitespace at an end or a control character (a newline from a"
            " file?): strip it"
        )
    return Secret(value)


def normalized_url(url: str) -> str:
    """The server URL checked and in canonical form: lowercase scheme and host, no slash, and
    without the API prefix (``http://host:8000/api/v1/``, as ``aiosdk serve`` prints it, is
    ``http://host:8000``)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"invalid server URL {url!r}: {exc}") from None
    if parsed.userinfo:
        raise ConfigurationError("the server URL carries credentials: pass token= instead")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(f"the server URL must be http(s)://host[:port], not {url!r}")
    if parsed.query or parsed.fragment:
        raise ConfigurationError(f"the server URL takes no query or fragment: {url!r}")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ConfigurationError(f"the server URL's port is out of range (1-65535): {url!r}")
    path = parsed.path.rstrip("/")
    path = path.removesuffix(API_PREFIX)
    return str(parsed.copy_with(path=path or "/")).rstrip("/")
