"""The accounts API fuzzed from its published OpenAPI document by schemathesis, as a user with a
session access token and as the admin, and its text fields by hypothesis with what schemathesis
never sends (lone surrogates: its strings are always encodable as UTF-8).

schemathesis runs as a subprocess, bounded and seeded, over the accounts routes only, with every
phase (coverage, fuzzing, stateful with the links it infers): no 5xx, every status declared,
every body as declared. Meanwhile the server (in this process) must log no unhandled error.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aiosdk.server import ServerConfig, ServerThread
from aiosdk.server.config import AccountSettings

PASSWORD = "correct horse battery staple"
ACCOUNT_ROUTES = r"^/api/v1/(auth|user|organizations|admin|tokens)"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"


class Unhandled(logging.Handler):
    """Every error the server logs (an unhandled exception is logged before its 500)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """Failed logins lock accounts as usual, but not the fuzzer's one address."""
    config = ServerConfig(accounts=AccountSettings(login_failures_per_address=1_000_000))
    with ServerThread(config) as thread:
        yield thread


@pytest.fixture
def unhandled() -> Iterator[Unhandled]:
    logger = logging.getLogger("aiosdk.server")
    handler = Unhandled()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def admin(server: ServerThread) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=f"{server.http_url}/api/v1", headers=headers, timeout=30) as http:
        yield http


def new_user(admin: httpx.Client, prefix: str = "fz") -> str:
    username = f"{prefix}-{secrets.token_hex(5)}"
    response = admin.post("/admin/users", json={"username": username, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return username


def schemathesis(
    server: ServerThread,
    workdir: Path,
    *arguments: str,
    config: str | None = None,
) -> str:
    """Run schemathesis on the live document; its output, after checking it passed."""
    command = [sys.executable, "-m", "schemathesis.cli"]
    if config is not None:
        (workdir / "schemathesis.toml").write_text(config)
        command += ["--config-file", str(workdir / "schemathesis.toml")]
    command += [
        "run",
        f"{server.http_url}/api/v1/openapi.json",
        f"--checks={CHECKS}",
        f"--include-path-regex={ACCOUNT_ROUTES}",
        "--max-examples=6",
        "--seed=8",
        "--generation-database=none",
        "--request-timeout=10",
        "--workers=1",
        "--no-color",
        *arguments,
    ]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=150)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_a_user_with_a_session_token_meets_no_5xx_and_only_what_is_declared(
    server: ServerThread, admin: httpx.Client, tmp_path: Path, unhandled: Unhandled
) -> None:
    """As a user (no admin): the admin routes must answer a declared 403, the organization
    routes work on a real organization of theirs (its name and a member's are fixed), the
    session's own routes with its real token. Logging out is left out: it would end the
    session the run uses (the admin run covers it)."""
    owner, member = new_user(admin), new_user(admin)
    organization = f"fz-org-{secrets.token_hex(4)}"
    response = admin.post("/admin/organizations", json={"name": organization, "owner": owner})
    assert response.status_code == 201, response.text
    response = admin.post(
        f"/organizations/{organization}/members", json={"username": member, "role": "member"}
    )
    assert response.status_code == 201, response.text
    grant = httpx.post(
        f"{server.http_url}/api/v1/auth/login", json={"username": owner, "password": PASSWORD}
    ).json()
    token = grant["access_token"]
    output = schemathesis(
        server,
        tmp_path,
        f"--header=Authorization: Bearer {token}",
        "--exclude-path=/api/v1/auth/logout",
        config=f'[parameters]\nname = "{organization}"\nusername = "{member}"\n',
    )
    assert token not in output  # schemathesis masks it
    assert not unhandled.records, unhandled.records[:5]
    # The session the fuzzer used is still the user's.
    me = httpx.get(f"{server.http_url}/api/v1/user", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["username"] == owner


def test_the_admin_meets_no_5xx_and_only_what_is_declared(
    server: ServerThread, tmp_path: Path, unhandled: Unhandled
) -> None:
    output = schemathesis(server, tmp_path, f"--header=Authorization: Bearer {server.admin_token}")
    assert server.admin_token not in output
    assert not unhandled.records, unhandled.records[:5]


# -- text schemathesis cannot send -------------------------------------------------------------

# Lone surrogates are valid in JSON text (as escapes) and reach the routes as Python strings
# that no UTF-8 encoder takes; weighted up, with controls, among all other characters.
ANY_TEXT = st.text(
    st.one_of(
        st.characters(categories=["Cs"]),
        st.characters(categories=["Cc"]),
        st.characters(),
    ),
    min_size=1,
    max_size=24,
)
_names = itertools.count()


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{secrets.token_hex(3)}"


Body = Callable[[str], tuple[str, str, dict[str, object], bool]]
"""text -> (method, path, JSON body, as the admin?)"""

FIELDS: dict[str, Body] = {
    # A name that could be a user's: the password goes all the way to Argon2.
    "login-password": lambda t: (
        "POST",
        "/auth/login",
        {"username": _name("nobody"), "password": t},
        False,
    ),
    "login-username": lambda t: ("POST", "/auth/login", {"username": t, "password": "x"}, False),
    "login-token": lambda t: ("POST", "/auth/login", {"token": t}, False),
    "refresh-token": lambda t: ("POST", "/auth/refresh", {"refresh_token": t}, False),
    "new-user-password": lambda t: (
        "POST",
        "/admin/users",
        {"username": _name("hu"), "password": t + "-long-enough"},
        True,
    ),
    "new-user-display-name": lambda t: (
        "POST",
        "/admin/users",
        {"username": _name("hu"), "password": PASSWORD, "display_name": t},
        True,
    ),
    "new-user-email": lambda t: (
        "POST",
        "/admin/users",
        {"username": _name("hu"), "password": PASSWORD, "email": t},
        True,
    ),
    "user-display-name": lambda t: ("PATCH", "/admin/users/{user}", {"display_name": t}, True),
    "new-organization-display-name": lambda t: (
        "POST",
        "/admin/organizations",
        {"name": _name("ho"), "owner": "{user}", "display_name": t},
        True,
    ),
    "token-label": lambda t: ("POST", "/tokens", {"label": t}, True),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_any_text_in_any_account_field_is_never_a_5xx(
    server: ServerThread, admin: httpx.Client, field: str
) -> None:
    """Found: a lone surrogate was a 500 in a login's password (Argon2 encodes it as UTF-8), a
    token login's token and a refresh token (hashed as UTF-8), and a user's or an
    organization's display name (the database driver encodes it)."""
    user = new_user(admin, "hx")
    anonymous = httpx.Client(base_url=f"{server.http_url}/api/v1", timeout=30)

    @settings(
        max_examples=15,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(text=ANY_TEXT)
    @example(text="\ud800")
    @example(text="\udc80\udcff")
    @example(text="x\udfff\ud800y")
    @example(text="\x00")
    def check(text: str) -> None:
        method, path, body, as_admin = FIELDS[field](text)
        path = path.format(user=user)
        body = {k: v.format(user=user) if v == "{user}" else v for k, v in body.items()}
        http = admin if as_admin else anonymous
        response = http.request(
            method,
            path,
            content=json.dumps(body).encode(),  # ASCII: a surrogate goes as its \u escape
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code < 500, (response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"type", "message", "request_id"}

    with anonymous:
        check()
