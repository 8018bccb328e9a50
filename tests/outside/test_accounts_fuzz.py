"""The accounts API fuzzed from its published OpenAPI document by schemathesis, as a user with a
session access token and as the admin, and its text fields by hypothesis with what schemathesis
never sends (lone surrogates: its strings are always encodable as UTF-8).

schemathesis runs as a subprocess, bounded and seeded, over the accounts routes only, with every
phase (coverage, fuzzing, stateful with the links it infers): no 5xx, every status declared,
every body as declared. Meanwhile the server (in this process) must log no unhandled error.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from aiosdk.server import ServerThread
from outside._tools import PASSWORD, Schemathesis, Unhandled, fresh_name, new_user, on_any_text

ACCOUNT_ROUTES = r"^/api/v1/(auth|user|organizations|admin|tokens)"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"
SCHEMATHESIS = Schemathesis(ACCOUNT_ROUTES, CHECKS, max_examples=6, seed=8)


def test_a_user_with_a_session_token_meets_no_5xx_and_only_what_is_declared(
    server: ServerThread, admin: httpx.Client, tmp_path: Path, unhandled: Unhandled
) -> None:
    """As a user (no admin): the admin routes must answer a declared 403, the organization
    routes work on a real organization of theirs (its name and a member's are fixed), the
    session's own routes with its real token. Logging out is left out: it would end the
    session the run uses (the admin run covers it)."""
    owner, member = new_user(admin, "fz"), new_user(admin, "fz")
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
    output = SCHEMATHESIS.run(
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
    output = SCHEMATHESIS.run(
        server, tmp_path, f"--header=Authorization: Bearer {server.admin_token}"
    )
    assert server.admin_token not in output
    assert not unhandled.records, unhandled.records[:5]


# -- text schemathesis cannot send -------------------------------------------------------------


Body = Callable[[str], tuple[str, str, dict[str, object], bool]]
"""text -> (method, path, JSON body, as the admin?)"""

FIELDS: dict[str, Body] = {
    # A name that could be a user's: the password goes all the way to Argon2.
    "login-password": lambda t: (
        "POST",
        "/auth/login",
        {"username": fresh_name("nobody"), "password": t},
        False,
    ),
    "login-username": lambda t: ("POST", "/auth/login", {"username": t, "password": "x"}, False),
    "login-token": lambda t: ("POST", "/auth/login", {"token": t}, False),
    "refresh-token": lambda t: ("POST", "/auth/refresh", {"refresh_token": t}, False),
    "new-user-password": lambda t: (
        "POST",
        "/admin/users",
        {"username": fresh_name("hu"), "password": t + "-long-enough"},
        True,
    ),
    "new-user-display-name": lambda t: (
        "POST",
        "/admin/users",
        {"username": fresh_name("hu"), "password": PASSWORD, "display_name": t},
        True,
    ),
    "new-user-email": lambda t: (
        "POST",
        "/admin/users",
        {"username": fresh_name("hu"), "password": PASSWORD, "email": t},
        True,
    ),
    "user-display-name": lambda t: ("PATCH", "/admin/users/{user}", {"display_name": t}, True),
    "new-organization-display-name": lambda t: (
        "POST",
        "/admin/organizations",
        {"name": fresh_name("ho"), "owner": "{user}", "display_name": t},
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

    @on_any_text(15)
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
