"""The accounts API of the client: login, users, organizations, the admin calls, typed errors,
async and blocking, against the real server."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

import aiosdk
from aiosdk.accounts.users import OrganizationMembership

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing a test remembers reaches the real user config directory."""
    path = tmp_path / "config"
    monkeypatch.setenv("AIOSDK_CONFIG_DIR", str(path))
    monkeypatch.delenv("AIOSDK_TOKEN", raising=False)
    return path


def _name(hint: str) -> str:
    return f"{hint}-{secrets.token_hex(4)}"


async def _user(admin: aiosdk.AsyncClient, hint: str = "u", **fields: str) -> tuple[str, str]:
    username, password = _name(hint), secrets.token_urlsafe(12)
    await admin.admin.create_user(username, password=password, **fields)
    return username, password


@pytest.fixture
async def logged_in(client: aiosdk.AsyncClient) -> AsyncIterator[tuple[aiosdk.AsyncClient, str]]:
    username, password = await _user(client)
    async with aiosdk.AsyncClient(client.url) as user:
        await user.login(username=username, password=password)
        yield user, username


# -- the example, as written ---------------------------------------------------------


async def test_what_a_user_can_do_runs_as_written() -> None:
    pw, pw2 = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    async with aiosdk.embedded() as admin:  # the admin token
        await admin.admin.create_user("alice", password=pw, email="alice@example.org")
        await admin.admin.create_user("bob", password=pw2)
        await admin.admin.create_organization("lab", owner="alice")
        await admin.admin.add_member("lab", "bob", role="member")
        alice = aiosdk.AsyncClient(admin.url)
        await alice.login(username="alice", password=pw)  # a session: access + refresh token
        me = await alice.user_profile()  # me.username == "alice"
        await alice.default_user()
        await alice.default_charged_namespace(required_action="write")
        [o.name for o in await alice.organizations()]
        await alice.organization("lab")
        t = await alice.tokens.create("ci", expires_in=3600, scope="read")  # an API token
        await alice.logout()  # the session is revoked at once

        # What the lines above gave:
        assert me.username == "alice"
        assert me.email == "alice@example.org"
        assert [(m.name, m.role) for m in me.organizations] == [("lab", "owner")]
        assert t.scope == "read"
        assert t.owner == "alice"
        with pytest.raises(aiosdk.AuthenticationError):
            await alice.user_profile()
        async with aiosdk.AsyncClient(admin.url) as bob:
            await bob.login(username="bob", password=pw2)
            assert await bob.default_charged_namespace(required_action="write") == "lab"
            assert await bob.default_charged_namespace(required_action="admin") == "bob"
            lab = await bob.organization("lab")
            assert [(m.username, m.role) for m in lab.members] == [
                ("alice", "owner"),
                ("bob", "member"),
            ]
        async with aiosdk.AsyncClient(admin.url, token=t.secret.reveal()) as ci:
            assert (await ci.user_profile()).username == "alice"
            with pytest.raises(aiosdk.PermissionDeniedError):
                await ci.tokens.create("wider")  # a read-only token mints read-only ones only
        await alice.aclose()


def test_what_a_user_can_do_runs_as_written_blocking() -> None:
    pw, pw2 = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    with aiosdk.Client.embedded() as admin:  # the admin token
        admin.admin.create_user("alice", password=pw, email="alice@example.org")
        admin.admin.create_user("bob", password=pw2)
        admin.admin.create_organization("lab", owner="alice")
        admin.admin.add_member("lab", "bob", role="member")
        alice = aiosdk.Client(admin.url)
        alice.login(username="alice", password=pw)  # a session: access + refresh token
        me = alice.user_profile()  # me.username == "alice"
        alice.default_user()
        alice.default_charged_namespace(required_action="write")
        [o.name for o in alice.organizations()]
        alice.organization("lab")
        t = alice.tokens.create("ci", expires_in=3600, scope="read")  # an API token
        alice.logout()  # the session is revoked at once

        assert me.username == "alice"
        assert alice.find_organization_or_user_for_default_charges(me, "write") == "lab"
        assert t.scope == "read"
        assert [u.username for u in admin.admin.users()] == ["alice", "bob"]
        assert isinstance(admin.admin, aiosdk.Admin)
        with pytest.raises(aiosdk.AuthenticationError):
            alice.user_profile()
        alice.close()


# -- profile, organizations, default namespaces ----------------------------------------------


async def test_the_profile_lists_memberships_by_name_with_their_actions(
    client: aiosdk.AsyncClient,
) -> None:
    username, password = await _user(client, email="u@example.org", display_name="U. Ser")
    owner, _ = await _user(client)
    orgs = {role: _name(f"z-{role}".replace("_", "-")) for role in ("read_only", "member")}
    orgs["admin"] = _name("a-admin")
    for role, org in orgs.items():
        await client.admin.create_organization(org, owner=owner)
        member = await client.admin.add_member(org, username, role=role)  # type: ignore[arg-type]
        assert (member.username, member.role) == (username, role)
    async with aiosdk.AsyncClient(client.url) as user:
        await user.login(username=username, password=password)
        me = await user.user_profile()
        assert (me.username, me.email, me.display_name) == (username, "u@example.org", "U. Ser")
        assert not me.is_admin
        assert not me.disabled
        assert me.created_at is not None
        assert [m.name for m in me.organizations] == sorted(orgs.values())
        actions = {m.role: m.allowed_actions for m in me.organizations}
        assert actions == {
            "admin": ("read", "write", "admin"),
            "member": ("read", "write"),
            "read_only": ("read",),
        }
        assert await user.default_charged_namespace() == orgs["admin"]  # first by name
        assert await user.default_charged_namespace(required_action="read") == orgs["admin"]
        listed = await user.organizations()
        assert sorted(o.name for o in listed) == sorted(orgs.values())
        lab = await user.organization(orgs["member"])
        assert lab.role == "member"
        assert lab.allowed_actions == ("read", "write")
        assert [(m.username, m.role) for m in lab.members] == sorted(
            [(owner, "owner"), (username, "member")]
        )
        with pytest.raises(aiosdk.NotFoundError):
            await user.organization(_name("not-mine"))


async def test_default_namespaces_follow_the_seed() -> None:
    def org(name: str, *actions: str) -> OrganizationMembership:
        return OrganizationMembership(name, None, "member", actions)

    user = aiosdk.User(
        id="1",
        username="ann",
        email=None,
        display_name=None,
        created_at=None,
        organizations=(org("zoo", "read", "write"), org("abc", "read")),
    )
    async with aiosdk.AsyncClient("http://127.0.0.1:1") as offline:  # pure: nothing is sent
        find = offline.find_organization_or_user_for_default_charges
        assert await find(user) == "abc"
        assert await find(user, "read") == "abc"
        assert await find(user, "write") == "zoo"
        assert await find(user, "admin") == "ann"
        assert await find(aiosdk.User("2", "solo", None, None, None)) == "solo"
        with pytest.raises(ValueError, match="required_action"):
            await find(user, "delete")  # type: ignore[arg-type]


async def test_default_user_is_fetched_once_per_login(
    logged_in: tuple[aiosdk.AsyncClient, str], client: aiosdk.AsyncClient
) -> None:
    user, username = logged_in
    first = await user.default_user()
    assert first is await user.default_user()  # no second request
    assert first.username == username
    assert (await client.default_user()).is_admin  # the admin token's profile
    assert (await client.default_user()).username == "admin"
    other, password = await _user(client)
    await user.login(username=other, password=password)
    assert (await user.default_user()).username == other


# -- the admin calls -------------------------------------------------------------------------


async def test_admin_manages_users(client: aiosdk.AsyncClient) -> None:
    username = _name("managed")
    made = await client.admin.create_user(username, password=aiosdk.Secret("s3cret-pass"))
    assert (made.username, made.disabled, made.email) == (username, False, None)
    assert await client.admin.get_user(username) == made
    assert username in [u.username async for u in client.admin.users(page_size=2)]
    changed = await client.admin.update_user(username, email="m@example.org", display_name="M")
    assert (changed.email, changed.display_name) == ("m@example.org", "M")
    cleared = await client.admin.update_user(username, email=None)
    assert (cleared.email, cleared.display_name) == (None, "M")  # only what is given changes
    async with aiosdk.AsyncClient(client.url) as user:
        await user.login(username=username, password="s3cret-pass")
        assert (await user.user_profile()).username == username
        assert (await client.admin.disable_user(username)).disabled
        with pytest.raises(aiosdk.InvalidTokenError):
            await user.user_profile()  # its session stopped at once
        with pytest.raises(aiosdk.AuthenticationError, match="Invalid credentials"):
            await user.login(username=username, password="s3cret-pass")
        assert not (await client.admin.enable_user(username)).disabled
        await user.login(username=username, password="s3cret-pass")
        assert (await user.user_profile()).username == username
    with pytest.raises(aiosdk.ConflictError):
        await client.admin.create_user(username)
    with pytest.raises(aiosdk.NotFoundError):
        await client.admin.get_user(_name("nobody"))
    with pytest.raises(aiosdk.UnprocessableEntityError):
        await client.admin.create_user(_name("short"), password="short")


async def test_admin_and_owners_manage_members(client: aiosdk.AsyncClient) -> None:
    owner, owner_pw = await _user(client, "owner")
    member, member_pw = await _user(client, "member")
    org = _name("org")
    made = await client.admin.create_organization(org, owner=owner, display_name="The Org")
    assert (made.name, made.display_name, made.role) == (org, "The Org", None)
    assert [(m.username, m.role) for m in made.members] == [(owner, "owner")]
    async with aiosdk.AsyncClient(client.url) as as_owner:
        await as_owner.login(username=owner, password=owner_pw)
        await as_owner.admin.add_member(org, member, role="read_only")  # an owner may
        with pytest.raises(aiosdk.ConflictError):
            await as_owner.admin.add_member(org, member)
        assert (await as_owner.admin.set_role(org, member, "admin")).role == "admin"
        with pytest.raises(aiosdk.ConflictError):
            await as_owner.admin.set_role(org, owner, "member")  # the last owner stays
        with pytest.raises(aiosdk.PermissionDeniedError):
            await as_owner.admin.create_user(_name("nope"))  # the admin calls are the admin's
        async with aiosdk.AsyncClient(client.url) as as_member:
            await as_member.login(username=member, password=member_pw)
            assert (await as_member.organization(org)).role == "admin"
            await as_owner.admin.remove_member(org, member)
            with pytest.raises(aiosdk.NotFoundError):
                await as_member.organization(org)
    with pytest.raises(aiosdk.NotFoundError):
        await client.admin.add_member(_name("no-org"), member)
    with pytest.raises(aiosdk.ConflictError):
        await client.admin.create_organization(owner, owner=owner)  # names are one namespace


async def test_read_scoped_tokens_read_but_do_not_change(
    logged_in: tuple[aiosdk.AsyncClient, str],
) -> None:
    user, username = logged_in
    made = await user.tokens.create("reader", scope="read")
    assert made.scope == "read"
    assert (await user.tokens.get(made.id)).scope == "read"
    assert (await user.tokens.create("full")).scope is None
    async with aiosdk.AsyncClient(user.url, token=made.secret.reveal()) as reader:
        assert (await reader.user_profile()).username == username
        with pytest.raises(aiosdk.PermissionDeniedError):
            await reader.tokens.create("wider")
        await reader.login(token=made.secret.reveal())  # a session inherits the scope
        with pytest.raises(aiosdk.PermissionDeniedError):
            await reader.tokens.create("wider")


# -- login -----------------------------------------------------------------------------------


async def test_a_client_without_credentials_says_how_to_log_in(server: object) -> None:
    async with aiosdk.AsyncClient(server.http_url) as anonymous:  # type: ignore[attr-defined]
        with pytest.raises(aiosdk.AuthenticationError) as info:
            await anonymous.user_profile()
        assert not isinstance(info.value, aiosdk.InvalidTokenError)
        assert "client.login(" in str(info.value)
        with pytest.raises(aiosdk.AuthenticationError, match="login"):
            await anonymous.get_status()  # gRPC (its discovery) says the same


async def test_login_with_an_api_token_opens_a_session(
    logged_in: tuple[aiosdk.AsyncClient, str], client: aiosdk.AsyncClient
) -> None:
    user, username = logged_in
    api_token = await user.tokens.create("for login")
    async with aiosdk.AsyncClient(user.url) as other:
        await other.login(api_token.secret)  # positional, a Secret, as the seed's login(token)
        session = other._ctx.transport.auth.session
        assert session is not None
        assert session.username == username
        assert (await other.user_profile()).username == username
        assert (await other.get_status()).version
    with pytest.raises(aiosdk.BadRequestError, match="no_session=True"):
        await user.login(token=client._ctx.transport.auth.credential.token)  # type: ignore[union-attr]
    assert (await user.user_profile()).username == username  # a failed login changes nothing


async def test_no_session_logins_send_the_credentials_themselves(
    client: aiosdk.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    username, password = await _user(client)
    async with aiosdk.AsyncClient(client.url) as basic:
        await basic.login(username=username, password=password, no_session=True)
        assert basic._ctx.transport.auth.session is None
        assert (await basic.user_profile()).username == username  # HTTP, Basic
        assert (await basic.get_status()).version  # gRPC metadata, Basic
        made = await basic.tokens.create("by password")
        assert made.owner == username
        with pytest.raises(aiosdk.ConfigurationError, match="no_session"):
            await basic.refresh()
        await basic.logout()  # nothing to revoke: forgets them
        with pytest.raises(aiosdk.AuthenticationError):
            await basic.user_profile()
        with pytest.raises(aiosdk.AuthenticationError) as info:
            await basic.login(username=username, password="wrong password", no_session=True)
        assert not isinstance(info.value, aiosdk.InvalidTokenError)
        assert basic._ctx.transport.auth.credential is None  # still logged out
        await basic.login(token=made.secret.reveal(), no_session=True)
        assert basic._ctx.transport.auth.session is None
        assert (await basic.user_profile()).username == username
        assert (await basic.get_status()).version
    for text in (caplog.text, repr(basic), repr(basic._ctx.transport.auth)):
        assert password not in text
        assert made.secret.reveal() not in text


@pytest.fixture
def strict_server() -> Iterator[object]:
    """A server of its own that locks an account out after 3 failed logins (failed logins count
    per client address too, and the session's server has only loopback clients)."""
    from aiosdk.server import ServerConfig, ServerThread
    from aiosdk.server.config import AccountSettings

    config = ServerConfig(accounts=AccountSettings(login_failures_per_account=3))
    with ServerThread(config) as thread:
        yield thread


def _answers(caplog: pytest.LogCaptureFixture, request: str, status: int) -> int:
    """How many times the server's access log shows ``request`` answered with ``status``."""
    line = f"{request} -> {status} in "
    return sum(1 for r in caplog.records if r.name == "aiosdk.server" and line in r.getMessage())


async def test_a_no_session_login_is_checked_before_the_pool_sends_it(
    strict_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiosdk.server")
    url, admin_token = strict_server.http_url, strict_server.admin_token  # type: ignore[attr-defined]
    async with aiosdk.AsyncClient(url, token=admin_token) as admin:
        username, password = await _user(admin)
    async with aiosdk.AsyncClient(url) as c:
        await c.login(username=username, password=password)  # a session, in the shared pool
        twin = c.with_options(retry_mode="disabled")
        seen: list[object] = []

        async def call() -> None:
            try:
                seen.append((await twin.user_profile()).username)
            except aiosdk.AiosdkError as exc:
                seen.append(exc)

        async def wrong_login() -> None:
            with pytest.raises(aiosdk.AuthenticationError):
                await c.login(username=username, password="wrong password", no_session=True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wrong_login)  # first: it is being checked while the calls go out
            for _ in range(10):
                tg.start_soon(call)
        assert seen == [username] * 10  # all of them with the session, never the guess
        assert c._ctx.transport.auth.session is not None  # still the session
        with anyio.fail_after(5):  # (the server logs a request after answering it)
            while (  # noqa: ASYNC110
                _answers(caplog, "GET /api/v1/user", 200) < 10
                or _answers(caplog, "GET /api/v1/user", 401) < 1
            ):
                await anyio.sleep(0.02)
        await anyio.sleep(0.1)  # (any more would be logged by now)
        # The guess went out once, with the check: none of the calls carried it.
        assert _answers(caplog, "GET /api/v1/user", 401) == 1
        assert _answers(caplog, "GET /api/v1/user", 200) == 10
        # One failed login counted, not eleven: the account is not locked out.
        await c.login(username=username, password=password, no_session=True)
        assert c._ctx.transport.auth.session is None
        assert (await twin.user_profile()).username == username


async def test_wrong_credentials_get_one_message(client: aiosdk.AsyncClient) -> None:
    username, password = await _user(client)
    messages = set()
    for who, secret in [(username, "not the password"), (_name("nobody"), password)]:
        async with aiosdk.AsyncClient(client.url) as c:
            with pytest.raises(aiosdk.AuthenticationError) as info:
                await c.login(username=who, password=secret)
            messages.add(info.value.message)
            assert secret not in str(info.value)
            assert secret not in repr(info.value)
    assert len(messages) == 1


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({}, "neither"),
        ({"token": "aio_x", "username": "u", "password": "p"}, "both"),
        ({"username": "u"}, "password= is missing"),
        ({"token": "aio_x", "password": "p"}, "takes no password"),
        ({"username": "u", "password": "p", "no_session": True, "remember": True}, "never a"),
        ({"token": ""}, "empty"),
    ],
)
async def test_login_mistakes_are_configuration_errors(
    kwargs: dict[str, object], says: str, server: object, config_dir: Path
) -> None:
    async with aiosdk.AsyncClient(server.http_url) as c:  # type: ignore[attr-defined]
        with pytest.raises(aiosdk.ConfigurationError, match=says):
            await c.login(**kwargs)  # type: ignore[arg-type]
    assert not await anyio.Path(config_dir).exists()  # nothing was written


async def test_host_retargets_only_a_client_that_has_not_connected(
    client: aiosdk.AsyncClient,
) -> None:
    username, password = await _user(client)
    assert client.url is not None
    async with aiosdk.AsyncClient("http://127.0.0.1:1") as c:  # nothing listens there
        await c.login(username=username, password=password, host=f"{client.url}/api/v1/")
        assert c.url == client.url
        assert (await c.user_profile()).username == username
        with pytest.raises(aiosdk.ConfigurationError, match="make a new client"):
            await c.login(username=username, password=password, host="http://127.0.0.1:2")
        await c.login(username=username, password=password, host=client.url)  # the same: fine
    async with aiosdk.embedded() as embedded:
        with pytest.raises(aiosdk.ConfigurationError, match="embedded"):
            await embedded.login(token="aio_x", host=client.url)


async def test_verify_ssl_false_applies_before_connecting_only(
    client: aiosdk.AsyncClient,
) -> None:
    username, password = await _user(client)
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=username, password=password, verify_ssl=False)
        assert c._ctx.transport.verify is False
    async with aiosdk.AsyncClient(client.url, verify="/no/such/ca.pem") as c:
        await c.login(username=username, password=password, verify_ssl=False)  # plain HTTP
        await c.login(username=username, password=password)  # True keeps the client's own
        assert c._ctx.transport.verify is False
    async with aiosdk.AsyncClient(client.url) as c:
        await c.login(username=username, password=password)
        with pytest.raises(aiosdk.ConfigurationError, match="verify"):
            await c.login(username=username, password=password, verify_ssl=False)


async def test_clients_made_by_with_options_share_the_login(
    logged_in: tuple[aiosdk.AsyncClient, str],
) -> None:
    user, username = logged_in
    twin = user.with_options(retry_mode="forceful")
    assert (await twin.user_profile()).username == username
    await twin.logout()
    with pytest.raises(aiosdk.AuthenticationError):
        await user.user_profile()


async def test_nothing_shows_a_secret(
    client: aiosdk.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    username, password = await _user(client)
    async with aiosdk.AsyncClient(client.url) as user:
        await user.login(username=username, password=password)
        session = user._ctx.transport.auth.session
        assert session is not None
        await user.refresh()
        renewed = user._ctx.transport.auth.session
        assert renewed is not None
        shown = [repr(user), repr(user._ctx.transport), repr(user._ctx.transport.auth)]
        shown += [repr(session), str(session), repr(await user.user_profile())]
        await user.logout()
        with pytest.raises(aiosdk.AuthenticationError) as info:
            await user.user_profile()
        shown += [str(info.value), repr(info.value)]
    secrets_ = [password]
    for s in (session, renewed):
        secrets_ += [s.access_token.reveal(), s.refresh_token.reveal()]
    for text in [*shown, caplog.text]:
        for secret in secrets_:
            assert secret not in text


async def test_login_is_rate_limited_with_retry_after() -> None:
    from aiosdk.server import ServerConfig, ServerThread
    from aiosdk.server.config import AccountSettings

    config = ServerConfig(accounts=AccountSettings(login_failures_per_account=2))
    thread = ServerThread(config)
    await anyio.to_thread.run_sync(thread.start)
    try:
        async with aiosdk.AsyncClient(thread.http_url, token=thread.admin_token) as admin:
            username, password = await _user(admin)
            async with aiosdk.AsyncClient(thread.http_url) as c:
                for _ in range(2):
                    with pytest.raises(aiosdk.AuthenticationError):
                        await c.login(username=username, password="wrong password")
                with pytest.raises(aiosdk.RateLimitError) as info:
                    await c.login(username=username, password=password)
        assert info.value.status_code == 429
        assert info.value.retry_after is not None
        assert info.value.retry_after > 0
    finally:
        await anyio.to_thread.run_sync(thread.stop)


# -- the blocking facade ---------------------------------------------------------------------


@pytest.fixture
def blocking_user(sync_client: aiosdk.Client) -> Iterator[tuple[aiosdk.Client, str, str]]:
    username, password = _name("sync"), secrets.token_urlsafe(12)
    sync_client.admin.create_user(username, password=password)
    with aiosdk.Client(sync_client.url) as user:
        yield user, username, password


def test_the_blocking_client_has_the_accounts_api(
    sync_client: aiosdk.Client, blocking_user: tuple[aiosdk.Client, str, str]
) -> None:
    user, username, password = blocking_user
    user.login(username=username, password=password)
    assert user.user_profile().username == username
    assert user.default_charged_namespace() == username
    org = _name("sync-org")
    made = sync_client.admin.create_organization(org, owner=username)
    assert isinstance(made, aiosdk.Organization)
    assert [o.name for o in user.organizations()] == [org]
    assert user.organization(org).role == "owner"
    user.admin.add_member(org, sync_client.admin.create_user(_name("sync-m")).username)
    user.refresh()
    assert user.get_status().version
    assert sync_client.admin.disable_user(username).disabled
    with pytest.raises(aiosdk.InvalidTokenError):  # the same classes as the async API
        user.user_profile()
    user.logout()
