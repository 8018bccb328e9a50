"""Logging in and out: what :meth:`~aiosdk.AsyncClient.login` and ``logout`` do.

A login replaces the credentials of the client's pool (shared with its
:meth:`~aiosdk.AsyncClient.with_options` twins): a session (a short-lived access token renewed
by a refresh token, see :mod:`aiosdk._core.auth`), or, with ``no_session=True``, the API token
or the username and password themselves, sent with every request. Either way the new
credentials replace the old ones only once the server took them.
"""

from __future__ import annotations

from .._core import auth
from .._core.config import normalized_url
from .._core.context import ClientContext
from .._core.credentials import BasicCredential, Credential, TokenCredential
from .._core.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ProtocolError,
)
from .._core.secrets import Secret
from .users import User

__all__ = ["login", "logout", "logout_remembered", "refresh"]


def _secret(value: str | Secret | None, what: str) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise ConfigurationError(f"{what} is empty")
    return Secret(value)


async def login(
    ctx: ClientContext,
    *,
    token: str | Secret | None,
    username: str | None,
    password: str | Secret | None,
    host: str | None,
    verify_ssl: bool,
    no_session: bool,
    remember: bool,
) -> None:
    """See :meth:`aiosdk.AsyncClient.login`."""
    secret_token = _secret(token, "token")
    secret_password = _secret(password, "password")
    if (secret_token is None) == (username is None):
        raise ConfigurationError(
            "log in with either token=... or username=... and password=..., not "
            + ("both" if secret_token is not None else "neither")
        )
    if username is not None and secret_password is None:
        raise ConfigurationError(f"password= is missing to log in as {username!r}")
    if secret_token is not None and secret_password is not None:
        raise ConfigurationError("a token login takes no password")
    if remember and no_session and username is not None:
        raise ConfigurationError(
            "remember=True keeps session tokens or API tokens, never a password: log in"
            " without no_session=True, or with a token"
        )
    transport = ctx.transport
    transport.retarget(
        normalized_url(host) if host is not None else None,
        verify=None if verify_ssl else False,
    )
    transport.skip_remembered()
    await transport.start()
    credential: Credential
    if no_session:
        if secret_token is not None:
            credential = TokenCredential(secret_token)
        else:
            assert username is not None
            assert secret_password is not None
            credential = BasicCredential(username, secret_password)
        await _check(ctx, credential)
    else:
        flow = (
            auth.token_login(secret_token)
            if secret_token is not None
            else auth.password_login(str(username), secret_password)  # type: ignore[arg-type]
        )
        try:
            credential = await auth.run(flow, transport.auth_sender())
        except BadRequestError as exc:
            if secret_token is None:
                raise
            raise BadRequestError(
                f"{exc.message}: to call with this token itself, use login(token=...,"
                " no_session=True) or AsyncClient(url, token=...)",
                status_code=exc.status_code,
                request_id=exc.request_id,
                body=exc.body,
            ) from exc
        transport.auth.use(credential)
    if remember:
        assert transport.url is not None
        await transport.auth.remember(transport.url)


async def _check(ctx: ClientContext, credential: Credential) -> None:
    """Use ``credential`` if the server takes it (``GET /user``, sent with ``credential``
    itself); else keep what was used.

    The pool's credentials change only once the server took the new ones: the calls that its
    :meth:`~aiosdk.AsyncClient.with_options` twins make meanwhile go out with the old ones, and
    never with a password not checked yet (each refusal of which the server would count as a
    failed login of that account).
    """
    response = await ctx.transport.request(
        "GET",
        "/user",
        options=ctx.options,
        headers={"Authorization": credential.authorization},
        authenticate=False,
    )
    try:
        user = User._from_json(response.json())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"GET /user: unexpected response: {type(exc).__name__}") from exc
    state = ctx.transport.auth
    state.use(credential)
    state.cache["user"] = user


async def logout(ctx: ClientContext) -> None:
    """See :meth:`aiosdk.AsyncClient.logout`."""
    state = ctx.transport.auth
    try:
        if state.session is not None:
            # Logging out twice is logging out once: any retry mode may retry it.
            await ctx.request("POST", "/auth/logout", idempotent=True)
    except AuthenticationError:
        pass  # the session had ended already (expired, revoked, logged out elsewhere)
    finally:
        await state.forget()


async def refresh(ctx: ClientContext) -> None:
    """See :meth:`aiosdk.AsyncClient.refresh`."""
    transport = ctx.transport
    await transport.start()
    await transport.auth.refresh(transport.auth_sender())


async def logout_remembered(url: str) -> bool:
    """Log out of the login remembered for ``url`` (``aiosdk logout``), whatever the
    environment says (``AIOSDK_TOKEN``); whether there was one."""
    import anyio
    import httpx

    from .._core.credentials import CredentialStore
    from .._core.options import RequestOptions
    from .._core.transport import Transport

    store = CredentialStore()
    stored = await anyio.to_thread.run_sync(store.load, url)
    if stored is None:
        return False
    transport = Transport(url=url, token=None, limits=httpx.Limits(), store=store)
    try:
        transport.auth.use(stored, remembered_at=url)
        await logout(ClientContext(transport, RequestOptions()))
    finally:
        await transport.aclose()
    return True
