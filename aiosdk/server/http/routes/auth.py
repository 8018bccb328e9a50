"""``/api/v1/auth``: Login sessions: log in, refresh, log out.

``/auth/login`` and ``/auth/refresh`` are public (the credentials are in the body); logging out
needs the session's access token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from ...accounts import sessions
from ...accounts.passwords import MAX_PASSWORD_LENGTH
from ...accounts.ratelimit import client_address
from ...accounts.sessions import SessionTokens
from ...state import ServerState
from ...unit_of_work import UnitOfWork
from ...validation import Text
from ..dependencies import Current
from ..idempotency import unit_of_work
from ..openapi import RETRY_AFTER, WWW_AUTHENTICATE, documented_error

__all__ = [
    "LOGIN_PATH",
    "PUBLIC_PATHS",
    "REFRESH_PATH",
    "PasswordLogin",
    "RefreshRequest",
    "SessionGrant",
    "TokenLogin",
    "router",
]

router = APIRouter(prefix="/auth", tags=["auth"])

LOGIN_PATH = "/auth/login"
REFRESH_PATH = "/auth/refresh"
PUBLIC_PATHS = (LOGIN_PATH, REFRESH_PATH)
"""The paths (under ``/api/v1``) that take no credentials in the Authorization header."""

_MAX_TOKEN_LENGTH = 512
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1


def _unicode(value: SecretStr) -> SecretStr:
    # JSON may escape lone surrogates ("\ud800"), which no UTF-8 text holds: as the admin API's
    # password field (a 422), not an error deeper down (the value is never in the message).
    try:
        value.get_secret_value().encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Secret = Annotated[SecretStr, AfterValidator(_unicode)]
"""A secret request field: valid Unicode text, never shown in a repr, a log line or an error."""


class PasswordLogin(BaseModel):
    """A login with a username and password."""

    model_config = ConfigDict(extra="forbid")

    username: Text = Field(min_length=1, max_length=64)
    password: Secret = Field(max_length=MAX_PASSWORD_LENGTH)


class TokenLogin(BaseModel):
    """A login with an API token of a user (not the admin token, nor a session's own token)."""

    model_config = ConfigDict(extra="forbid")

    token: Secret = Field(min_length=1, max_length=_MAX_TOKEN_LENGTH)


class RefreshRequest(BaseModel):
    """The session's current refresh token (each one works once)."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: Secret = Field(min_length=1, max_length=_MAX_TOKEN_LENGTH)


class SessionGrant(BaseModel):
    """A session's new access token and refresh token (shown once: the server keeps hashes).

    The access token authenticates as the user until ``expires_at``; the refresh token gets the
    next pair from ``/auth/refresh``, once.
    """

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(ge=0, description="Seconds until the access token expires.")
    expires_at: datetime
    session_id: str
    username: str

    @classmethod
    def of(cls, issued: SessionTokens) -> SessionGrant:
        """The answer for the tokens a login or refresh issued."""
        return cls(
            access_token=issued.access_token,
            refresh_token=issued.refresh_token,
            token_type="bearer",
            expires_in=issued.expires_in(),
            expires_at=issued.expires_at,
            session_id=issued.session_id,
            username=issued.username,
        )


@dataclass(frozen=True)
class _PublicCall:
    state: ServerState
    work: UnitOfWork
    address: str | None


async def _public_call(request: Request) -> _PublicCall:
    client = request.client
    return _PublicCall(
        request.app.state.server,
        unit_of_work(request.scope),
        client_address(client.host if client else None),
    )


Public = Annotated[_PublicCall, Depends(_public_call)]

_UNAUTHENTICATED = {"WWW-Authenticate": WWW_AUTHENTICATE}
_LOGIN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: documented_error(
        "The admin token, or a session's access token, cannot open a session (or another"
        " invalid request)"
    ),
    401: documented_error(
        "Invalid credentials: whichever part is wrong (unknown user, wrong password, disabled"
        " user, unknown, expired or revoked token), the answer is the same",
        _UNAUTHENTICATED,
    ),
    429: documented_error(
        "Too many failed logins for this account or from this address; retry after"
        " Retry-After seconds",
        {"Retry-After": RETRY_AFTER},
    ),
}
_REFRESH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: documented_error(
        "Unknown, expired or revoked refresh token, or one already used (which revokes its"
        " session and every access token of it)",
        _UNAUTHENTICATED,
    ),
}


@router.post("/login", summary="Log in", responses=_LOGIN_ERRORS)
async def login(body: PasswordLogin | TokenLogin, call: Public, response: Response) -> SessionGrant:
    """Open a session with a username and password, or with an API token: a short-lived access
    token and a refresh token. A session opened with an API token has that token's scope and
    ends no later than it.

    Failed logins are limited per account and per client address (429 with Retry-After).
    """
    limiter = call.state.authenticator.login_limiter
    settings = call.state.accounts
    if isinstance(body, PasswordLogin):
        issued = await sessions.log_in_with_password(
            call.work,
            limiter,
            settings,
            body.username,
            body.password.get_secret_value(),
            call.address,
        )
    else:
        issued = await sessions.log_in_with_token(
            call.work, limiter, settings, body.token.get_secret_value(), call.address
        )
    response.headers.update(_NO_STORE)
    return SessionGrant.of(issued)


@router.post("/refresh", summary="Refresh a session", responses=_REFRESH_ERRORS)
async def refresh(body: RefreshRequest, call: Public, response: Response) -> SessionGrant:
    """Use the session's refresh token up for a new access token and refresh token.

    Each refresh token works once: presenting one already used revokes the session.
    """
    state = call.state
    issued = await sessions.refresh_session(
        call.work,
        state.sessions,
        state.authenticator,
        state.accounts,
        body.refresh_token.get_secret_value(),
    )
    response.headers.update(_NO_STORE)
    return SessionGrant.of(issued)


@router.post("/logout", status_code=204, summary="Log out")
async def logout(call: Current) -> Response:
    """End the caller's session: its access tokens and refresh token stop working at once.

    With an API token (or Basic credentials) there is no session: nothing changes.
    """
    session_id = call.principal.session_id
    if session_id is not None:
        await sessions.end_session(call.work, call.state.authenticator, session_id, "logout")
    return Response(status_code=204)
