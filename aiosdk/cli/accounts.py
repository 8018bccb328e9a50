"""``aiosdk login``, ``aiosdk logout`` and ``aiosdk whoami``: the remembered login of a server.

``login`` keeps the login where ``login(..., remember=True)`` does (one owner-only file per
server in the user config directory), so every ``aiosdk.AsyncClient(url)`` or
``aiosdk.Client(url)`` without a token uses it afterwards. The password (or an API token) is
prompted for, never echoed, never taken as an argument, so it stays out of shell history and
process listings.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from typing import TYPE_CHECKING

from ._common import fail

if TYPE_CHECKING:
    import aiosdk

    from ._common import Subparsers

__all__ = ["register"]


def register(commands: Subparsers) -> None:
    """Add ``login``, ``logout`` and ``whoami`` to ``commands``."""
    login = commands.add_parser(
        "login",
        help="log in to a server and remember the login for it",
        description="Log in and remember the session for URL (owner-only, in the user config"
        " directory; $AIOSDK_CONFIG_DIR overrides it): clients of URL made without a token use"
        " it. The password, or the API token with --token, is prompted for and never echoed.",
    )
    _url_argument(login)
    who = login.add_mutually_exclusive_group()
    who.add_argument("-u", "--username", help="the user (prompted for if not given)")
    who.add_argument(
        "--token",
        action="store_true",
        help="log in with an API token (prompted for) instead of a username and password",
    )
    login.add_argument(
        "--no-session",
        action="store_true",
        help="with --token: remember the API token itself rather than a session opened with it",
    )
    login.set_defaults(run=_login)
    logout = commands.add_parser(
        "logout",
        help="end the remembered session of a server and forget it",
        description="End the session remembered for URL (its tokens stop working at once) and"
        " remove it from the user config directory.",
    )
    _url_argument(logout)
    logout.set_defaults(run=_logout)
    whoami = commands.add_parser(
        "whoami",
        help="show who a client of a server is logged in as",
        description="Show the user (and organizations) a client of URL authenticates as: the"
        " remembered login, or $AIOSDK_TOKEN.",
    )
    _url_argument(whoami)
    whoami.set_defaults(run=_whoami)


def _url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        nargs="?",
        default=None,
        help="the server, e.g. http://127.0.0.1:8000 (default: $AIOSDK_URL)",
    )


def _server_url(command: str, given: str | None) -> str | int:
    """The normalized URL, or the exit status after saying what is wrong."""
    from .._core.config import normalized_url
    from .._core.errors import ConfigurationError

    url = given or os.environ.get("AIOSDK_URL")
    if not url:
        return fail(command, "no server URL: give one, or set AIOSDK_URL")
    try:
        return normalized_url(url)
    except ConfigurationError as exc:
        return fail(command, exc)


def _login(args: argparse.Namespace) -> int:
    url = _server_url("login", args.url)
    if isinstance(url, int):
        return url
    if args.no_session and not args.token:
        return fail("login", "--no-session goes with --token: a password is never remembered")
    try:
        if args.token:
            token, username, password = getpass.getpass("API token: "), None, None
            if not token:
                return fail("login", "no token given")
        else:
            username = args.username or input("Username: ").strip()
            if not username:
                return fail("login", "no username given")
            token, password = None, getpass.getpass(f"Password for {username}: ")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return fail("login", "cancelled", 1)
    return asyncio.run(_log_in(url, token, username, password, args.no_session))


async def _log_in(
    url: str, token: str | None, username: str | None, password: str | None, no_session: bool
) -> int:
    import aiosdk

    try:
        async with aiosdk.AsyncClient(url) as client:
            await client.login(
                token=token,
                username=username,
                password=password,
                no_session=no_session,
                remember=True,
            )
            user = await client.default_user()
    except aiosdk.RateLimitError as exc:
        wait = f"; retry in {exc.retry_after:.0f} s" if exc.retry_after is not None else ""
        return fail("login", f"too many failed logins{wait}", 1)
    except aiosdk.AuthenticationError as exc:
        return fail("login", exc.message, 1)
    except aiosdk.AiosdkError as exc:
        return fail("login", exc, 1)
    print(f"Logged in to {url} as {user.username}; remembered for clients of {url}.")
    return 0


def _logout(args: argparse.Namespace) -> int:
    url = _server_url("logout", args.url)
    if isinstance(url, int):
        return url
    return asyncio.run(_log_out(url))


async def _log_out(url: str) -> int:
    import aiosdk

    from ..accounts.session import logout_remembered

    try:
        found = await logout_remembered(url)
    except aiosdk.AiosdkError as exc:
        return fail("logout", f"the login is forgotten, but the server may not know: {exc}", 1)
    print(f"Logged out of {url}." if found else f"Not logged in to {url}: nothing to do.")
    return 0


def _whoami(args: argparse.Namespace) -> int:
    url = _server_url("whoami", args.url)
    if isinstance(url, int):
        return url
    return asyncio.run(_who(url))


async def _who(url: str) -> int:
    import aiosdk

    try:
        async with aiosdk.AsyncClient(url) as client:
            user = await client.user_profile()
    except aiosdk.AuthenticationError:
        return fail("whoami", f"not logged in to {url}: run `aiosdk login {url}`", 1)
    except aiosdk.AiosdkError as exc:
        return fail("whoami", exc, 1)
    details = ", ".join(f"{key} {value}" for key, value in _details(user))
    print(user.username + (f" ({details})" if details else ""))
    for membership in user.organizations:
        print(f"  {membership.name}: {membership.role}")
    return 0


def _details(user: aiosdk.User) -> list[tuple[str, str]]:
    found = [("email", user.email), ("display name", user.display_name)]
    out = [(key, value) for key, value in found if value]
    if user.is_admin:
        out.append(("role", "server admin"))
    return out
