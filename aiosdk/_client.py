"""The client: the entry point that owns the pool and hands out service objects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import httpx

from ._core.cache import Cache
from ._core.config import resolve_settings, save_profile
from ._core.context import ClientContext
from ._core.credentials import CredentialStore, TokenCredential
from ._core.errors import ConfigurationError
from ._core.options import NOT_GIVEN, NotGiven, RequestOptions, TimeoutArg
from ._core.paging import AsyncPager
from ._core.retry import RetryMode, RetryPolicy
from ._core.secrets import Secret
from ._core.transport import Bootstrap, Transport, auth_timeout_for
from ._embedded import EmbeddedServer
from .accounts import organizations as _organizations
from .accounts import session as _session
from .accounts import users as _users
from .accounts.admin import AsyncAdmin
from .accounts.organizations import Organization
from .accounts.tokens import AsyncTokens
from .accounts.users import Action, User
from .catalog import listings as _listings
from .catalog.containers import AsyncContainer
from .catalog.listings import Permission, Strings
from .catalog.nodes import AsyncNode
from .channels import AsyncChannels
from .objects import AsyncObjects
from .proto import GetStatusRequest, ServerStatus, StatusServiceStub, WatchStatusRequest
from .tickets.session import AsyncSession

__all__ = ["AsyncClient", "ServerInfo"]

# Idle connections expire before common servers' 5 s keep-alive timeout closes them under us.
DEFAULT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=4.0
)


@dataclass(frozen=True)
class ServerInfo:
    """What ``GET /api/v1/`` says about the server."""

    name: str
    version: str
    api_version: str
    grpc_host: str
    grpc_port: int
    principal: str
    limits: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> ServerInfo:
        return cls(
            name=data["name"],
            version=data["version"],
            api_version=data["api_version"],
            grpc_host=data["grpc"]["host"],
            grpc_port=int(data["grpc"]["port"]),
            principal=data["principal"],
            limits=dict(data.get("limits", {})),
        )


class AsyncClient:
    """An async connection to an aiosdk server.

    One ``AsyncClient`` owns one connection pool (HTTP and, opened on first use, gRPC) that every
    service object hanging off it shares. Use it as ``async with AsyncClient(url, token=...)`` or
    call :meth:`aclose` when done.

    Without a token from anywhere, the client uses the login remembered for its URL
    (``login(..., remember=True)``, or ``aiosdk login``), if there is one; else it sends no
    credentials, and calls fail with :class:`~aiosdk.AuthenticationError` until
    :meth:`login`.

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8000"``; else ``AIOSDK_URL``, else the profile.
        token: the API token; else ``AIOSDK_TOKEN``, else the profile, else a remembered login.
        retry_mode: ``"default"``, ``"forceful"`` or ``"disabled"`` (see :class:`RetryMode`).
        timeout: seconds each attempt may wait to connect, read, write or get a pooled connection.
            Logins and session renewals always use this one (at least 10 s; 30 s for ``None``),
            never a shorter one of :meth:`with_options`: a renewal cut short may end the session.
        deadline: seconds the whole call may take, every retry and backoff included.
        pool_threads: the most connections open at once (the pool's concurrency).
        verify: TLS verification: ``True``, ``False`` or a CA bundle path.
        http2: speak HTTP/2 where the server offers it (through httpx's own transport).
        proxy: an HTTP proxy URL (through httpx's own transport); ``HTTP(S)_PROXY`` also work.
        http_transport: an ``httpx.AsyncBaseTransport`` to use instead of the automatic choice,
            which is aiosdk's fast HTTP/1.1 transport on asyncio and httpx's own otherwise.
        profile: a named profile from ``profiles.toml`` to fill in what is not given.
        cache: a :class:`~aiosdk.Cache` that ``GET`` answers are revalidated through (ETag,
            ``If-None-Match``, 304), kept per identity; it may be shared by several clients, and
            is not closed with the client.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        retry_mode: RetryMode | str | None = None,
        timeout: float | None = 30.0,
        deadline: float | None = None,
        pool_threads: int | None = None,
        verify: bool | str = True,
        http2: bool = False,
        proxy: str | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        profile: str | None = None,
        cache: Cache | None = None,
    ) -> None:
        settings = resolve_settings(url=url, token=token, retry_mode=retry_mode, profile=profile)
        self._init(
            Transport(
                url=settings.url,
                token=settings.token,
                limits=_limits(pool_threads),
                verify=verify,
                http2=http2,
                proxy=proxy,
                http_transport=http_transport,
                store=CredentialStore(),
                remembered=True,
                auth_timeout=auth_timeout_for(timeout),
                cache=cache,
            ),
            RequestOptions(RetryPolicy(settings.retry_mode)).merged(
                timeout=timeout, deadline=deadline
            ),
        )

    def _init(self, transport: Transport, options: RequestOptions) -> None:
        self._ctx = ClientContext(transport, options)
        self._tokens = AsyncTokens(self._ctx)
        self._admin = AsyncAdmin(self._ctx)
        self._catalog = AsyncContainer._root(self._ctx)
        self._channels = AsyncChannels(self._ctx)
        self._objects = AsyncObjects(self._ctx)

    @classmethod
    def _with_bootstrap(
        cls, bootstrap: Bootstrap, retry_mode: RetryMode | str, pool_threads: int | None
    ) -> AsyncClient:
        client = cls.__new__(cls)
        client._init(
            Transport(
                url=None,
                token=None,
                limits=_limits(pool_threads),
                bootstrap=bootstrap,
                store=CredentialStore(),
            ),
            RequestOptions(RetryPolicy(RetryMode.coerce(retry_mode))),
        )
        return client

    @classmethod
    def from_profile(cls, name: str, **kwargs: Any) -> AsyncClient:
        """A client configured from the profile ``name``; keyword arguments override it.

        Profiles are saved with :func:`aiosdk.save_profile` or :meth:`save_profile`; a profile
        without a token uses the login remembered for its URL.
        """
        return cls(profile=name, **kwargs)

    async def save_profile(self, name: str) -> None:
        """Save this client's URL and retry mode as the profile ``name`` (see
        :func:`aiosdk.save_profile`), with its API token if it uses one.

        A login session is never put in a profile (its tokens change as they are renewed):
        ``login(..., remember=True)`` keeps it for the URL, where :meth:`from_profile` finds it.
        A ``no_session`` password is never saved anywhere.
        """
        transport = self._ctx.transport
        await transport.start()
        if transport.url is None:
            raise ConfigurationError("this client has no URL to save yet")
        credential = transport.auth.credential
        token = credential.token if isinstance(credential, TokenCredential) else None
        mode = self._ctx.options.retry.mode
        await anyio.to_thread.run_sync(
            lambda: save_profile(name, url=str(transport.url), token=token, retry_mode=mode)
        )

    @classmethod
    def embedded(
        cls,
        *,
        data_dir: str | Path | None = None,
        database_url: str | None = None,
        retry_mode: RetryMode | str = RetryMode.DEFAULT,
        pool_threads: int | None = None,
    ) -> AsyncClient:
        """A client of a reference server started in this process, in its own thread.

        The server starts on free loopback ports on first use (or on ``async with``), with an admin
        token, and stops when the client closes. Its data directory is temporary unless
        ``data_dir`` is given. Needs the ``server`` extra.
        """
        server = EmbeddedServer(data_dir=data_dir, database_url=database_url)
        return cls._with_bootstrap(server, retry_mode, pool_threads)

    def __repr__(self) -> str:
        transport = self._ctx.transport
        return (
            f"<AsyncClient url={transport.url!r} retry_mode={self._ctx.options.retry.mode.value!r}"
            f" http={transport.http_transport_name}>"
        )

    async def __aenter__(self) -> AsyncClient:
        await self._ctx.transport.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool (HTTP and gRPC), and stop the embedded server if this client has one.

        Clients made by :meth:`with_options` share the pool: closing any of them closes it.
        """
        await self._ctx.transport.aclose()

    @property
    def url(self) -> str | None:
        """The server's URL (``None`` for an embedded client not started yet)."""
        return self._ctx.transport.url

    @property
    def options(self) -> RequestOptions:
        """The retry policy, timeout and deadline every call of this client uses."""
        return self._ctx.options

    def retry_mode(self, mode: RetryMode | str = RetryMode.DEFAULT) -> None:
        """Set the retry mode of this client and of every service object it handed out."""
        self._ctx.options = self._ctx.options.merged(retry_mode=mode)

    def set_threads(self, threads: int | None = None) -> None:
        """Set how many connections the pool opens at once (``None``: the default, 100)."""
        self._ctx.transport.set_limits(_limits(threads))

    def with_options(
        self,
        *,
        retry: RetryPolicy | NotGiven = NOT_GIVEN,
        retry_mode: RetryMode | str | NotGiven = NOT_GIVEN,
        timeout: TimeoutArg = NOT_GIVEN,
        deadline: TimeoutArg = NOT_GIVEN,
    ) -> AsyncClient:
        """A client that shares this one's pool but calls with other options.

        ``client.with_options(retry_mode="disabled").server_info()`` makes one attempt;
        ``retry=RetryPolicy(...)`` also sets the backoff and ``Retry-After`` bounds.
        """
        clone = type(self).__new__(type(self))
        clone._init(
            self._ctx.transport,
            self._ctx.options.merged(
                retry=retry, retry_mode=retry_mode, timeout=timeout, deadline=deadline
            ),
        )
        return clone

    @property
    def tokens(self) -> AsyncTokens:
        """API tokens: create, list, get, revoke."""
        return self._tokens

    @property
    def admin(self) -> AsyncAdmin:
        """Administration: users and organizations (the admin token), organization members
        (also an organization's owners and admins)."""
        return self._admin

    @property
    def channels(self) -> AsyncChannels:
        """Channels (gRPC): the user's channels (create a token, send, presence), and the
        token holder's calls, which need no login (``connect(token)``...)."""
        return self._channels

    @property
    def objects(self) -> AsyncObjects:
        """The object store: buckets in namespaces and objects by key
        (``client.objects.put("alice/uploads", "report.pdf", data)``)."""
        return self._objects

    @property
    def catalog(self) -> AsyncContainer:
        """The catalog's root container: its children are the namespaces the caller may read
        (``await client.catalog.get("alice/experiments")``)."""
        return self._catalog

    # -- login -------------------------------------------------------------------------------

    async def login(
        self,
        token: str | Secret | None = None,
        username: str | None = None,
        password: str | Secret | None = None,
        host: str | None = None,
        verify_ssl: bool = True,
        no_session: bool = False,
        remember: bool = False,
    ) -> None:
        """Log in with an API token, or with a username and password.

        By default this opens a login session: a short-lived access token, renewed by a
        rotating refresh token shortly before it expires, and whenever a call meets an expired
        one (once, however many calls meet it at once), for HTTP and gRPC alike. With
        ``no_session=True`` the credentials themselves go with every request instead (the
        password as HTTP Basic credentials, checked here once).

        Args:
            token: an API token (a session opened with it has its scope and ends no later).
            username: the user, with ``password``.
            password: the user's password (never logged, never shown).
            host: the server URL to log in to; a client may change its server only before it
                has connected (else :class:`~aiosdk.ConfigurationError`: make a new client).
            verify_ssl: ``False`` turns off TLS certificate checks, before the client has
                connected; ``True`` keeps the client's own ``verify=`` (on, or a CA bundle).
            no_session: send the token, or the username and password, with every request.
            remember: keep the login for this URL in the user config directory, owner-only,
                where ``AsyncClient(url)`` without a token finds it (as ``aiosdk login`` does).
                Never a password: ``no_session=True`` with a password cannot be remembered.

        Raises :class:`~aiosdk.AuthenticationError` for wrong credentials (one message whatever
        was wrong) and :class:`~aiosdk.RateLimitError` (with ``retry_after``) after too many.
        The client's pool, and every client made by :meth:`with_options`, use the login.
        """
        await _session.login(
            self._ctx,
            token=token,
            username=username,
            password=password,
            host=host,
            verify_ssl=verify_ssl,
            no_session=no_session,
            remember=remember,
        )

    async def logout(self) -> None:
        """End the login session (its tokens stop working at once, everywhere), forget the
        credentials, and remove the login from the store if it was remembered.

        Calls fail with :class:`~aiosdk.AuthenticationError` afterwards, until the next
        :meth:`login`. With an API token or a ``no_session`` login, nothing is revoked: the
        client only forgets the credentials.
        """
        await _session.logout(self._ctx)

    async def refresh(self) -> None:
        """Renew the login session now: a new access token and refresh token.

        Not needed in general (calls renew it when due); :class:`~aiosdk.InvalidTokenError` if
        the session has ended, :class:`~aiosdk.ConfigurationError` without a session.
        """
        await _session.refresh(self._ctx)

    # -- accounts ----------------------------------------------------------------------------

    async def user_profile(self) -> User:
        """Who the client is: the user's profile and organizations (``GET /user``)."""
        return await _users.user_profile(self._ctx)

    async def default_user(self) -> User:
        """The user the client acts as: :meth:`user_profile`, fetched once per login."""
        return await _users.default_user(self._ctx)

    async def default_charged_namespace(self, required_action: Action | None = None) -> str:
        """The namespace :meth:`default_user` charges by default: see
        :meth:`find_organization_or_user_for_default_charges`."""
        user = await self.default_user()
        return _users.find_organization_or_user_for_default_charges(user, required_action)

    async def find_organization_or_user_for_default_charges(
        self, user: User, required_action: Action | None = None
    ) -> str:
        """The first of ``user``'s organizations, by name, whose allowed actions include
        ``required_action`` (any organization if ``None``), else the user's own namespace."""
        return _users.find_organization_or_user_for_default_charges(user, required_action)

    async def organization(self, name: str) -> Organization:
        """One organization the caller belongs to (any, for the admin token);
        :class:`~aiosdk.NotFoundError` otherwise."""
        return await _organizations.organization(self._ctx, name)

    async def organizations(self) -> list[Organization]:
        """The organizations the caller belongs to (every one, for the admin token)."""
        return await _organizations.organizations(self._ctx)

    # -- catalog listings --------------------------------------------------------------------

    def list_arrays(
        self,
        namespace: str | None = None,
        permissions: Permission | None = None,
        tag: Strings = None,
        exclude_tag: Strings = None,
        search: str | None = None,
        file_type: Strings = None,
        exclude_file_type: Strings = None,
        page: int | None = None,
        per_page: int | None = None,
        with_metadata: bool | None = None,
        structure_family: str | None = None,
    ) -> AsyncPager[AsyncNode]:
        """The assets (every node that is not a container) in the caller's namespaces.

        Args:
            namespace: only those of this namespace.
            permissions: only those on which the caller has ``"read"``, ``"write"`` or
                ``"admin"``.
            tag: only those with every one of these tags.
            exclude_tag: only those with none of these tags.
            search: only those whose key contains this (case-insensitive).
            file_type: only those of one of these file types.
            exclude_file_type: only those of none of these file types.
            page: start at this page (from 1).
            per_page: entries per page (1 to 1000; default 100).
            with_metadata: include each node's metadata (default: without).
            structure_family: only those of this family (``"array"``, ``"table"``...).

        Ordered by path; ``await pager`` is the first page, ``async for node in pager`` every
        node from there on.
        """
        return _listings.listing(self._ctx, "arrays", "owned", _listing_args(locals()))

    def list_public_arrays(
        self,
        namespace: str | None = None,
        permissions: Permission | None = None,
        tag: Strings = None,
        exclude_tag: Strings = None,
        search: str | None = None,
        file_type: Strings = None,
        exclude_file_type: Strings = None,
        page: int | None = None,
        per_page: int | None = None,
        with_metadata: bool | None = None,
        structure_family: str | None = None,
    ) -> AsyncPager[AsyncNode]:
        """The public assets (of any namespace); the filters are :meth:`list_arrays`'."""
        return _listings.listing(self._ctx, "arrays", "public", _listing_args(locals()))

    def list_shared_arrays(
        self,
        namespace: str | None = None,
        permissions: Permission | None = None,
        tag: Strings = None,
        exclude_tag: Strings = None,
        search: str | None = None,
        file_type: Strings = None,
        exclude_file_type: Strings = None,
        page: int | None = None,
        per_page: int | None = None,
        with_metadata: bool | None = None,
        structure_family: str | None = None,
    ) -> AsyncPager[AsyncNode]:
        """The assets shared with one of the caller's namespaces and not owned by them; the
        filters are :meth:`list_arrays`' (``namespace``: the owner's)."""
        return _listings.listing(self._ctx, "arrays", "shared", _listing_args(locals()))

    def list_groups(
        self,
        namespace: str | None = None,
        permissions: Permission | None = None,
        group_type: str | None = None,
        tag: Strings = None,
        exclude_tag: Strings = None,
        search: str | None = None,
        flat: bool = False,
        parent: str | None = None,
        page: int | None = None,
        per_page: int | None = None,
        with_metadata: bool | None = None,
        file_type: Strings = None,
        exclude_file_type: Strings = None,
    ) -> AsyncPager[AsyncNode]:
        """The groups (containers below the namespaces' root nodes) in the caller's
        namespaces.

        Args:
            group_type: only groups with this spec.
            flat: every group at any depth; by default (``False``) only the top-level ones,
                directly in a namespace.
            parent: only the groups directly in the group at this path.

        The other filters are :meth:`list_arrays`'.
        """
        return _listings.listing(self._ctx, "groups", "owned", _listing_args(locals()))

    def list_public_groups(
        self,
        namespace: str | None = None,
        permissions: Permission | None = None,
        group_type: str | None = None,
        tag: Strings = None,
        exclude_tag: Strings = None,
        search: str | None = None,
        flat: bool = False,
        parent: str | None = None,
        page: int | None = None,
        per_page: int | None = None,
        with_metadata: bool | None = None,
        file_type: Strings = None,
        exclude_file_type: Strings = None,
    ) -> AsyncPager[AsyncNode]:
        """The public groups (of any namespace); the filters are :meth:`list_groups`'."""
        return _listings.listing(self._ctx, "groups", "public", _listing_args(locals()))

    def list_shared_groups(
        self,
        namespace: str | None = None,
        permissions: Permission | None = None,
        group_type: str | None = None,
        tag: Strings = None,
        exclude_tag: Strings = None,
        search: str | None = None,
        flat: bool = False,
        parent: str | None = None,
        page: int | None = None,
        per_page: int | None = None,
        with_metadata: bool | None = None,
        file_type: Strings = None,
        exclude_file_type: Strings = None,
    ) -> AsyncPager[AsyncNode]:
        """The groups shared with one of the caller's namespaces and not owned by them; the
        filters are :meth:`list_groups`'."""
        return _listings.listing(self._ctx, "groups", "shared", _listing_args(locals()))

    def session(self, ttl: float | None = None) -> AsyncSession:
        """A session of tickets on the server (gRPC), opened by ``async with``:
        ``async with client.session() as s: t = await s.export("alice/x/events")``.

        It lives ``ttl`` seconds without a refresh (``None``: the server's default, 300 s; at
        most its maximum), and refreshes itself in the background until it is closed, which
        leaving the block does: the server then releases everything it exported. See
        :class:`~aiosdk.AsyncSession`.
        """
        return AsyncSession(self._ctx, ttl)

    async def server_info(self) -> ServerInfo:
        """The server's name, version, gRPC endpoint and limits (``GET /api/v1/``)."""
        return await self._ctx.fetch("GET", "/", ServerInfo._from_json)

    async def get_status(self) -> ServerStatus:
        """A snapshot of the server's uptime, load and requests served (unary gRPC)."""
        return await self._ctx.grpc_unary(
            StatusServiceStub,
            lambda stub: stub.get_status(GetStatusRequest()),
            idempotent=True,
            what="GetStatus",
        )

    async def watch_status(
        self, *, interval: float = 1.0, max_updates: int | None = None
    ) -> AsyncIterator[ServerStatus]:
        """Status updates pushed every ``interval`` seconds (server-streaming gRPC).

        Ends after ``max_updates`` updates, or runs until the caller stops iterating. In
        ``"forceful"`` mode an interrupted stream resumes where it stopped.
        """
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        if max_updates is not None and max_updates < 1:
            raise ValueError(f"max_updates must be at least 1, not {max_updates!r}")

        received = 0

        def open_stream(
            stub: StatusServiceStub, last: ServerStatus | None
        ) -> AsyncIterator[ServerStatus]:
            # Resuming asks only for the updates still owed; snapshots have no other position.
            remaining = 0 if max_updates is None else max_updates - received
            request = WatchStatusRequest(interval_seconds=interval, max_updates=remaining)
            return stub.watch_status(request)

        async for status in self._ctx.grpc_stream(
            StatusServiceStub, open_stream, idempotent=True, what="WatchStatus"
        ):
            received += 1
            yield status


def _listing_args(arguments: dict[str, Any]) -> dict[str, Any]:
    """A listing method's own arguments (its ``locals()``), without ``self``."""
    return {name: value for name, value in arguments.items() if name != "self"}


def _limits(pool_threads: int | None) -> httpx.Limits:
    if pool_threads is None:
        return DEFAULT_LIMITS
    if pool_threads < 1:
        raise ConfigurationError(f"pool_threads must be at least 1, not {pool_threads!r}")
    return httpx.Limits(
        max_connections=pool_threads,
        max_keepalive_connections=pool_threads,
        keepalive_expiry=DEFAULT_LIMITS.keepalive_expiry,
    )
