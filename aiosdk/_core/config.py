"""Where a client's settings come from: arguments, a named profile, the environment.

Environment: ``AIOSDK_URL``, ``AIOSDK_TOKEN``, ``AIOSDK_PROFILE``. Profiles live in
``profiles.toml`` in the user config directory (``AIOSDK_CONFIG_DIR`` overrides it)::

    [profiles.local]
    url = "http://127.0.0.1:8000"
    token = "aio_..."
    retry_mode = "forceful"
"""

from __future__ import annotations

import os
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


def save_profile(
    name: str,
    *,
    url: str,
    token: str | Secret | None = None,
    retry_mode: RetryMode | str | None = None,
) -> Path:
    """Save (or replace) the profile ``name`` in ``profiles.toml``; returns the file's path.

    The file is rewritten whole, other profiles kept (comments are not), atomically and
    owner-only (0600, in a 0700 directory), as every file aiosdk writes a token to. Blocks
    (file I/O): from async code, use :meth:`aiosdk.AsyncClient.save_profile`.
    """
    from .credentials import write_private

    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"a profile needs a name, not {name!r}")
    entry: dict[str, str] = {"url": normalized_url(url)}
    if token is not None:
        entry["token"] = _token(token.reveal() if isinstance(token, Secret) else token).reveal()
    if retry_mode is not None:
        entry["retry_mode"] = RetryMode.coerce(retry_mode).value
    path = config_dir() / "profiles.toml"
    try:
        with path.open("rb") as f:
            profiles = dict(tomllib.load(f).get("profiles", {}))
    except FileNotFoundError:
        profiles = {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML, so it is left alone: {exc}") from None
    profiles[name] = entry
    lines = [
        "# aiosdk profiles: AsyncClient.from_profile(name); written by aiosdk.save_profile",
    ]
    for profile, values in profiles.items():
        lines.append("")
        lines.append(f"[profiles.{_toml_string(str(profile))}]")
        for key in _PROFILE_KEYS:
            value = values.get(key) if isinstance(values, Mapping) else None
            if value is not None:
                lines.append(f"{key} = {_toml_string(str(value))}")
    write_private(path, "\n".join(lines) + "\n")
    return path


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
