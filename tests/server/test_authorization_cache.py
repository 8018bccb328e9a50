"""Callers are cached, and changes stay immediate: over loopback against real servers, a role
change, a removal, a disabled user take effect on the next request, on the server that made the
change and on a second server of the same PostgreSQL database; a warmed caller costs no query;
nothing is cached while notifications may be missed. Then the cache itself (``Callers``) on the
real database: a change that rolls back leaves nothing behind, and changes made by a server
reach a cache in another process.

Statements are counted with a ``before_cursor_execute`` listener on the engine in question.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from aiosdk.server import Server, ServerConfig, notify
from aiosdk.server.accounts import organizations
from aiosdk.server.accounts.organizations import MemberCreate
from aiosdk.server.auth import Principal
from aiosdk.server.authorization import ADMIN, READ, WRITE, Caller, Callers
from aiosdk.server.notify import Notifier
from aiosdk.server.unit_of_work import UnitOfWork

from ._observed import (
    Observed,
    Statements,
    observed,
    observed_server,
    second_server,
    server,
    terminate_listeners,
    until,
)
from .conftest import POSTGRES_URL_ENV, fresh_postgres_database, make_client, unique
from .test_sessions import PASSWORD, login, new_user

pytestmark = pytest.mark.anyio

__all__ = ["observed", "second_server", "server"]  # the fixtures, for pytest

R, RW, RWA = ["read"], ["read", "write"], ["read", "write", "admin"]
ALL = frozenset({READ, WRITE, ADMIN})
MEMBER = frozenset({READ, WRITE})


@dataclass(frozen=True)
class Team:
    """An organization, its owner, and a member logged in (a session's access token)."""

    org: str
    owner: str
    member: str
    token: str


async def new_team(admin: httpx.AsyncClient, anonymous: httpx.AsyncClient) -> Team:
    owner, member, org = await new_user(admin), await new_user(admin), unique("lab")
    created = await admin.post("/admin/organizations", json={"name": org, "owner": owner})
    assert created.status_code == 201, created.text
    added = await admin.post(f"/organizations/{org}/members", json={"username": member})
    assert added.status_code == 201, added.text
    grant = await login(anonymous, username=member, password=PASSWORD)
    return Team(org, owner, member, grant["access_token"])


async def seen(server: Server, token: str, org: str) -> tuple[int, list[str] | None]:
    """``GET /organizations/{org}`` with ``token``: the status, and the allowed actions."""
    async with make_client(server, token) as http:
        response = await http.get(f"/organizations/{org}")
    if response.status_code != 200:
        return response.status_code, None
    actions: list[str] = response.json()["allowed_actions"]
    return 200, actions


async def warm(servers: list[Server], team: Team, expected: tuple[int, list[str] | None]) -> None:
    """Two requests on each server: the caller is cached there now."""
    for each in servers:
        for _ in range(2):
            assert await seen(each, team.token, team.org) == expected


async def eventually(server: Server, team: Team, expected: tuple[int, list[str] | None]) -> None:
    """PostgreSQL delivers a notification on commit: soon, not at once, on another server."""
    await until(lambda: seen(server, team.token, team.org), expected)


async def set_role(admin: httpx.AsyncClient, team: Team, role: str) -> None:
    response = await admin.patch(
        f"/organizations/{team.org}/members/{team.member}", json={"role": role}
    )
    assert response.status_code == 200, response.text


async def set_disabled(admin: httpx.AsyncClient, username: str, disabled: bool) -> None:
    response = await admin.patch(f"/admin/users/{username}", json={"disabled": disabled})
    assert response.status_code == 200, response.text


# --- On the server that made the change: the very next request. -----------------------------


async def test_a_role_change_takes_effect_on_the_next_request(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    team = await new_team(client, anonymous)
    await warm([server], team, (200, RW))
    for role, actions in (("admin", RWA), ("read_only", R), ("member", RW)):
        await set_role(client, team, role)
        assert await seen(server, team.token, team.org) == (200, actions), role
        await warm([server], team, (200, actions))


async def test_a_removal_and_an_addition_take_effect_on_the_next_request(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    team = await new_team(client, anonymous)
    await warm([server], team, (200, RW))
    removed = await client.delete(f"/organizations/{team.org}/members/{team.member}")
    assert removed.status_code == 204, removed.text
    await warm([server], team, (404, None))  # cached now: a member of nothing
    added = await client.post(
        f"/organizations/{team.org}/members", json={"username": team.member, "role": "read_only"}
    )
    assert added.status_code == 201, added.text
    assert await seen(server, team.token, team.org) == (200, R)


async def test_leaving_takes_effect_on_the_next_request(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    team = await new_team(client, anonymous)
    await warm([server], team, (200, RW))
    async with make_client(server, team.token) as member:
        left = await member.delete(f"/organizations/{team.org}/members/{team.member}")
    assert left.status_code == 204, left.text
    assert await seen(server, team.token, team.org) == (404, None)


async def test_disabling_takes_effect_on_the_next_request(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    team = await new_team(client, anonymous)
    await warm([server], team, (200, RW))
    await set_disabled(client, team.member, True)
    assert await seen(server, team.token, team.org) == (401, None)
    await set_disabled(client, team.member, False)
    again = await login(anonymous, username=team.member, password=PASSWORD)
    assert await seen(server, again["access_token"], team.org) == (200, RW)


async def test_a_membership_change_is_checked_on_the_database_while_the_row_is_locked(
    server: Server, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    """Managing members is decided on what the database says once the organization is locked:
    a member just made an admin manages at once, one just demoted no longer does."""
    team = await new_team(client, anonymous)
    outsider = await new_user(client)
    async with make_client(server, team.token) as member:
        for _ in range(2):
            refused = await member.post(
                f"/organizations/{team.org}/members", json={"username": outsider}
            )
            assert refused.status_code == 403, refused.text
        await set_role(client, team, "admin")
        added = await member.post(f"/organizations/{team.org}/members", json={"username": outsider})
        assert added.status_code == 201, added.text
        await set_role(client, team, "member")
        removed = await member.delete(f"/organizations/{team.org}/members/{outsider}")
        assert removed.status_code == 403, removed.text


# --- On another server of the same PostgreSQL database. ---------------------------------------


async def test_changes_reach_every_server_on_the_database(
    server: Server,
    second_server: Server,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
) -> None:
    team = await new_team(client, anonymous)
    both = [server, second_server]
    await warm(both, team, (200, RW))
    await set_role(client, team, "admin")
    assert await seen(server, team.token, team.org) == (200, RWA)
    await eventually(second_server, team, (200, RWA))

    await warm(both, team, (200, RWA))
    await set_role(client, team, "read_only")
    await eventually(second_server, team, (200, R))

    await warm(both, team, (200, R))
    removed = await client.delete(f"/organizations/{team.org}/members/{team.member}")
    assert removed.status_code == 204, removed.text
    await eventually(second_server, team, (404, None))

    await warm(both, team, (404, None))
    added = await client.post(f"/organizations/{team.org}/members", json={"username": team.member})
    assert added.status_code == 201, added.text
    await eventually(second_server, team, (200, RW))

    await warm(both, team, (200, RW))
    await set_disabled(client, team.member, True)
    await eventually(second_server, team, (401, None))


# --- What a request costs. --------------------------------------------------------------------


async def statements_of(observed: Observed, token: str, org: str) -> int:
    """How many statements ``GET /organizations/{org}`` with ``token`` sends (the fewest of
    three calls: a background write now and then is not the request's)."""
    counts = []
    for _ in range(3):
        before = observed.statements.count
        assert (await seen(observed.server, token, org))[0] == 200
        counts.append(observed.statements.count - before)
    return min(counts)


async def test_a_cached_caller_costs_no_query(
    observed: Observed, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    server = observed.server
    team = await new_team(client, anonymous)
    await warm([server], team, (200, RW))
    as_admin = await statements_of(observed, server.admin_token, team.org)
    assert as_admin >= 1  # the organization and its members: the counting works
    assert await statements_of(observed, team.token, team.org) <= as_admin
    # Dropped by a change: the next request looks the caller up again (and only that one).
    await set_role(client, team, "admin")
    before = observed.statements.count
    assert await seen(server, team.token, team.org) == (200, RWA)
    assert observed.statements.count - before >= as_admin + 1
    assert await statements_of(observed, team.token, team.org) <= as_admin


async def test_nothing_is_cached_while_the_server_is_not_listening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its listening connection killed (and no reconnection for a minute), a server may miss
    notifications: every request looks its caller up, and answers from what it finds."""
    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        pytest.skip("SQLite notifications stay in the process: they are never missed")
    monkeypatch.setattr(notify, "_RECONNECT_DELAYS", (60.0,))
    async with fresh_postgres_database(base_url) as url:
        config = ServerConfig(data_dir=tmp_path, database_url=url)
        async with (
            observed_server(config) as observed,
            make_client(observed.server, observed.server.admin_token) as admin,
            make_client(observed.server, None) as anonymous,
        ):
            server = observed.server
            team = await new_team(admin, anonymous)
            await warm([server], team, (200, RW))
            assert await statements_of(observed, team.token, team.org) <= await statements_of(
                observed, server.admin_token, team.org
            )

            assert await terminate_listeners(url) == 1  # the only server on this database

            async def extra() -> int:
                as_admin = await statements_of(observed, server.admin_token, team.org)
                return await statements_of(observed, team.token, team.org) - as_admin

            await until(extra, 1)
            for _ in range(3):
                assert await extra() == 1  # each request looked its caller up: none cached
            assert await seen(server, team.token, team.org) == (200, RW)


# --- The cache itself, on the real database. ---------------------------------------------------


def principal(name: str, *, scope: str | None = None, is_admin: bool = False) -> Principal:
    return Principal(name=name, is_admin=is_admin, token_id="t-" + name, scope=scope)


ADMIN_TOKEN = principal("admin", is_admin=True)


@dataclass
class Cache:
    """A :class:`Callers` of this test's own, on the server's database, as another process
    would have one; and the statements this test's engine sends."""

    callers: Callers
    notifier: Notifier
    sessions: async_sessionmaker[AsyncSession]
    statements: Statements

    async def caller(self, who: Principal) -> tuple[Caller, int]:
        """``who``'s caller, and how many statements finding it took."""
        before = self.statements.count
        async with self.sessions() as session:
            found = await self.callers.caller(session, who)
        return found, self.statements.count - before

    async def namespaces(self, who: Principal) -> dict[str, frozenset[str]]:
        return dict((await self.caller(who))[0].namespaces)

    async def cached(self, who: Principal) -> dict[str, frozenset[str]]:
        """``who``'s namespaces once cached: asked twice, the second time costs no query."""
        await self.caller(who)
        found, statements = await self.caller(who)
        assert statements == 0
        return dict(found.namespaces)

    async def eventually(self, who: Principal, expected: dict[str, frozenset[str]]) -> None:
        await until(lambda: self.namespaces(who), expected)


@pytest.fixture
async def cache(database: async_sessionmaker[AsyncSession]) -> AsyncIterator[Cache]:
    engine: AsyncEngine = database.kw["bind"]
    statements = Statements()
    statements.listen(engine)
    notifier = Notifier(engine)
    callers = Callers(notifier)
    await notifier.start()
    try:
        yield Cache(callers, notifier, database, statements)
    finally:
        await notifier.aclose()


@pytest.fixture
def not_listening(cache: Cache) -> Iterator[Callable[[bool], None]]:
    """Make the cache's notifier (not) listening, as a lost connection would."""
    listening = cache.notifier.listening

    def set_listening(value: bool) -> None:
        cache.notifier.listening = value

    yield set_listening
    cache.notifier.listening = listening


async def test_callers_cache_nothing_while_notifications_may_be_missed(
    cache: Cache,
    not_listening: Callable[[bool], None],
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
) -> None:
    team = await new_team(client, anonymous)
    member = principal(team.member)
    expected = {team.member: ALL, team.org: MEMBER}
    not_listening(False)
    for _ in range(3):
        found, statements = await cache.caller(member)
        assert (dict(found.namespaces), statements) == (expected, 1)
    not_listening(True)
    assert await cache.cached(member) == expected  # listening: cached
    not_listening(False)
    assert (await cache.caller(member))[1] == 1  # not served from the cache
    # Without a notifier at all, nothing is ever cached.
    alone = Cache(Callers(), cache.notifier, cache.sessions, cache.statements)
    for _ in range(2):
        assert (await alone.caller(member))[1] == 1
    # The admin token needs no lookup; a read token's scope applies over the cached grants.
    assert (await cache.caller(ADMIN_TOKEN))[1] == 0
    not_listening(True)
    assert await cache.cached(member) == expected
    reader, statements = await cache.caller(principal(team.member, scope="read"))
    assert (reader.read_only, dict(reader.namespaces), statements) == (True, expected, 0)
    assert not (await cache.caller(member))[0].read_only


async def test_a_change_that_rolls_back_leaves_nothing_cached(
    cache: Cache, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    team = await new_team(client, anonymous)
    newcomer = await new_user(client)
    who = principal(newcomer)  # not cached yet
    work = UnitOfWork(cache.sessions)
    try:
        await organizations.add_member(
            work, cache.callers, ADMIN_TOKEN, team.org, MemberCreate(username=newcomer)
        )
        # The request's own write shows in its own lookup, which is not cached: it may roll back.
        inside = await cache.callers.caller(work.session, who)
        assert dict(inside.namespaces) == {newcomer: ALL, team.org: MEMBER}
    finally:
        await work.close()  # rolled back
    assert await cache.cached(who) == {newcomer: ALL}
    work = UnitOfWork(cache.sessions)
    try:
        await organizations.add_member(
            work, cache.callers, ADMIN_TOKEN, team.org, MemberCreate(username=newcomer)
        )
        await work.commit()
    finally:
        await work.close()
    # Committed: dropped in this process once the commit returned (PostgreSQL echoes the
    # notification a moment later, which drops the new entry again: harmless).
    assert await cache.namespaces(who) == {newcomer: ALL, team.org: MEMBER}


async def test_user_changes_reach_a_cache_in_another_process(
    cache: Cache, database_url: str | None, client: httpx.AsyncClient
) -> None:
    """The server creates, disables and enables a user, and makes it an organization's owner:
    this test's cache, another process's stand-in, hears of each."""
    if database_url is None:
        pytest.skip("one SQLite database is served by one server process")
    name = unique("later")
    who = principal(name)  # a token may be minted for a name before its user exists
    assert await cache.cached(who) == {}
    created = await client.post("/admin/users", json={"username": name})
    assert created.status_code == 201, created.text
    await cache.eventually(who, {name: ALL})

    assert await cache.cached(who) == {name: ALL}
    org = unique("org")
    made = await client.post("/admin/organizations", json={"name": org, "owner": name})
    assert made.status_code == 201, made.text
    await cache.eventually(who, {name: ALL, org: ALL})

    assert await cache.cached(who) == {name: ALL, org: ALL}
    await set_disabled(client, name, True)
    await cache.eventually(who, {})  # a disabled user may do nothing anywhere

    assert await cache.cached(who) == {}
    await set_disabled(client, name, False)
    await cache.eventually(who, {name: ALL, org: ALL})
