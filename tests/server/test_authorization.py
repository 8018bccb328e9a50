"""The authorization layer: the pure asset matrix (no server), then namespace checks of callers
loaded from the real database of a running server (accounts arranged through the HTTP API).
(Caching callers: test_authorization_cache.py.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.server import Server
from aiosdk.server.auth import Principal
from aiosdk.server.authorization import (
    ACTIONS,
    ADMIN,
    ALL_ACTIONS,
    READ,
    ROLE_ACTIONS,
    WRITE,
    Access,
    Caller,
    actions_in,
    allowed,
    asset_actions,
    caller_of,
    ordered,
    require,
    require_admin,
)
from aiosdk.server.errors import NotFoundError, PermissionDeniedError

from .conftest import make_client

R = frozenset({READ})
RW = frozenset({READ, WRITE})
RWA = frozenset({READ, WRITE, ADMIN})
NONE: frozenset[str] = frozenset()

# --- The pure part: callers and assets written out, expectations written out. ----------------

ALICE = Caller("alice", namespaces={"alice": RWA})
ALICE_READ_TOKEN = Caller("alice", read_only=True, namespaces={"alice": RWA})
CAROL = Caller("carol", namespaces={"carol": RWA})
CAROL_READ_TOKEN = Caller("carol", read_only=True, namespaces={"carol": RWA})
ADMIN_TOKEN = Caller("admin", is_admin=True)
ADMIN_READ_TOKEN = Caller("admin", is_admin=True, read_only=True)
LAB_OWNER = Caller("olive", namespaces={"olive": RWA, "lab": RWA})
LAB_ADMIN = Caller("adam", namespaces={"adam": RWA, "lab": RWA})
LAB_MEMBER = Caller("bob", namespaces={"bob": RWA, "lab": RW})
LAB_READ_ONLY = Caller("rita", namespaces={"rita": RWA, "lab": R})
LAB_MEMBER_READ_TOKEN = Caller("bob", read_only=True, namespaces={"bob": RWA, "lab": RW})

ALICES_PRIVATE = Access("alice")
LABS_PRIVATE = Access("lab")
SHARED_READ_WITH_CAROL = Access("alice", shares={"carol": R})
SHARED_RW_WITH_CAROL = Access("alice", shares={"carol": RW})
SHARED_ALL_WITH_CAROL = Access("alice", shares={"carol": RWA})
SHARED_READ_WITH_LAB = Access("alice", shares={"lab": R})
SHARED_RW_WITH_LAB = Access("alice", shares={"lab": RW})
PUBLIC = Access("alice", public=True)
PUBLIC_AND_SHARED_RW_WITH_CAROL = Access("alice", public=True, shares={"carol": RW})

MATRIX = [
    # a private asset: its owner only (and the admin token); a read-only token only reads
    ("owner", ALICE, ALICES_PRIVATE, RWA),
    ("owner, read token", ALICE_READ_TOKEN, ALICES_PRIVATE, R),
    ("stranger", CAROL, ALICES_PRIVATE, NONE),
    ("org member, other owner", LAB_MEMBER, ALICES_PRIVATE, NONE),
    ("admin token", ADMIN_TOKEN, ALICES_PRIVATE, RWA),
    ("admin, read token", ADMIN_READ_TOKEN, ALICES_PRIVATE, R),
    # an organization's private asset: by role
    ("org owner", LAB_OWNER, LABS_PRIVATE, RWA),
    ("org admin", LAB_ADMIN, LABS_PRIVATE, RWA),
    ("org member", LAB_MEMBER, LABS_PRIVATE, RW),
    ("org read_only", LAB_READ_ONLY, LABS_PRIVATE, R),
    ("org member, read token", LAB_MEMBER_READ_TOKEN, LABS_PRIVATE, R),
    ("non-member", ALICE, LABS_PRIVATE, NONE),
    ("admin token, org asset", ADMIN_TOKEN, LABS_PRIVATE, RWA),
    # shared with a user: what the share grants, no more
    ("shared read", CAROL, SHARED_READ_WITH_CAROL, R),
    ("shared read, owner", ALICE, SHARED_READ_WITH_CAROL, RWA),
    ("shared read, someone else", LAB_MEMBER, SHARED_READ_WITH_CAROL, NONE),
    ("shared read-write", CAROL, SHARED_RW_WITH_CAROL, RW),
    ("shared read-write, read token", CAROL_READ_TOKEN, SHARED_RW_WITH_CAROL, R),
    ("shared everything", CAROL, SHARED_ALL_WITH_CAROL, RWA),
    # shared with an organization: the share and the member's role, both
    ("shared read with org, member", LAB_MEMBER, SHARED_READ_WITH_LAB, R),
    ("shared read-write with org, owner", LAB_OWNER, SHARED_RW_WITH_LAB, RW),
    ("shared read-write with org, admin", LAB_ADMIN, SHARED_RW_WITH_LAB, RW),
    ("shared read-write with org, member", LAB_MEMBER, SHARED_RW_WITH_LAB, RW),
    ("shared read-write with org, read_only", LAB_READ_ONLY, SHARED_RW_WITH_LAB, R),
    ("shared read-write with org, read token", LAB_MEMBER_READ_TOKEN, SHARED_RW_WITH_LAB, R),
    ("shared read-write with org, non-member", CAROL, SHARED_RW_WITH_LAB, NONE),
    # public: everyone authenticated reads; the owner keeps everything
    ("public, stranger", CAROL, PUBLIC, R),
    ("public, owner", ALICE, PUBLIC, RWA),
    ("public, owner's read token", ALICE_READ_TOKEN, PUBLIC, R),
    ("public, admin token", ADMIN_TOKEN, PUBLIC, RWA),
    ("public and shared read-write", CAROL, PUBLIC_AND_SHARED_RW_WITH_CAROL, RW),
    (
        "public and shared read-write, read token",
        CAROL_READ_TOKEN,
        PUBLIC_AND_SHARED_RW_WITH_CAROL,
        R,
    ),
]


def can(caller: Caller | None, access: Access, *, allow_anonymous: bool = False) -> frozenset[str]:
    """Every action ``allowed`` answers yes for, asked one by one."""
    return frozenset(
        action
        for action in ACTIONS
        if allowed(caller, access, action, allow_anonymous=allow_anonymous)
    )


@pytest.mark.parametrize(
    ("caller", "access", "expected"),
    [pytest.param(caller, access, expected, id=name) for name, caller, access, expected in MATRIX],
)
@pytest.mark.parametrize("allow_anonymous", [False, True], ids=["closed", "anonymous-on"])
def test_the_asset_matrix(
    caller: Caller, access: Access, expected: frozenset[str], allow_anonymous: bool
) -> None:
    """What an authenticated caller may do does not depend on the anonymous setting."""
    assert can(caller, access, allow_anonymous=allow_anonymous) == expected
    assert asset_actions(caller, access, allow_anonymous=allow_anonymous) == expected


@pytest.mark.parametrize(
    ("access", "allow_anonymous", "expected"),
    [
        (PUBLIC, True, R),
        (PUBLIC, False, NONE),
        (PUBLIC_AND_SHARED_RW_WITH_CAROL, True, R),
        (ALICES_PRIVATE, True, NONE),
        (SHARED_RW_WITH_CAROL, True, NONE),
        (SHARED_RW_WITH_LAB, True, NONE),
        (Access("alice", shares={"anonymous": RWA, "": RWA}), True, NONE),
    ],
)
def test_anonymous_callers_only_read_public_assets_and_only_when_allowed(
    access: Access, allow_anonymous: bool, expected: frozenset[str]
) -> None:
    assert can(None, access, allow_anonymous=allow_anonymous) == expected


def test_a_caller_named_like_a_share_gets_it_only_through_its_namespaces() -> None:
    """Shares go by the caller's namespaces, not by its name: a token whose owner is called
    "lab" but who belongs to nothing gets nothing from a share with the organization lab."""
    impostor = Caller("lab")
    assert can(impostor, SHARED_RW_WITH_LAB) == NONE
    assert can(impostor, LABS_PRIVATE) == NONE


def test_roles_grant_what_the_contract_says() -> None:
    assert dict(ROLE_ACTIONS) == {"owner": RWA, "admin": RWA, "member": RW, "read_only": R}
    assert ALL_ACTIONS == RWA


def test_actions_are_listed_in_their_canonical_order() -> None:
    assert ordered({ADMIN, READ, WRITE}) == ["read", "write", "admin"]
    assert ordered([WRITE, READ]) == ["read", "write"]
    assert ordered([]) == []


def test_an_unknown_action_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        allowed(ALICE, ALICES_PRIVATE, "delete")


def principal(name: str, *, scope: str | None = None, is_admin: bool = False) -> Principal:
    return Principal(name=name, is_admin=is_admin, token_id="t-" + name, scope=scope)


def test_only_the_admin_token_administers() -> None:
    require_admin(principal("admin", is_admin=True))
    require_admin(principal("admin", is_admin=True), WRITE)
    require_admin(principal("admin", is_admin=True, scope="read"), READ)
    with pytest.raises(PermissionDeniedError, match="read-only"):
        require_admin(principal("admin", is_admin=True, scope="read"), WRITE)
    for action in ACTIONS:
        with pytest.raises(PermissionDeniedError, match="admin token"):
            require_admin(principal("alice"), action)


# --- Namespaces, against the database of a running server. -------------------------------------


@dataclass(frozen=True)
class World:
    """Users and an organization made through the API, with unique names."""

    alice: str  # owner of lab
    adam: str  # admin of lab
    bob: str  # member of lab
    rita: str  # read_only in lab
    carol: str  # in no organization
    dora: str  # disabled, was a member of lab
    lab: str
    other: str  # an organization alice is not in (carol owns it)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
async def world(server: Server) -> World:
    names = {role: unique(role) for role in ("alice", "adam", "bob", "rita", "carol", "dora")}
    lab, other = unique("lab"), unique("other")
    async with make_client(server, server.admin_token) as admin:
        for name in names.values():
            assert (await admin.post("/admin/users", json={"username": name})).status_code == 201
        for org, owner in ((lab, names["alice"]), (other, names["carol"])):
            created = await admin.post("/admin/organizations", json={"name": org, "owner": owner})
            assert created.status_code == 201, created.text
        for who, role in (("adam", "admin"), ("bob", "member"), ("rita", "read_only")):
            await add(admin, lab, names[who], role)
        await add(admin, lab, names["dora"], "member")
        disabled = await admin.patch(f"/admin/users/{names['dora']}", json={"disabled": True})
        assert disabled.status_code == 200
    return World(**names, lab=lab, other=other)


async def add(admin: httpx.AsyncClient, org: str, username: str, role: str) -> None:
    response = await admin.post(
        f"/organizations/{org}/members", json={"username": username, "role": role}
    )
    assert response.status_code == 201, response.text


@pytest.fixture
async def session(database: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with database() as opened:
        yield opened


async def loaded(session: AsyncSession, who: Principal | None) -> Caller | None:
    """The caller ``who`` is, as the database has it (``None``: anonymous)."""
    return None if who is None else await caller_of(session, who)


@pytest.mark.anyio
async def test_actions_in_namespaces(world: World, session: AsyncSession) -> None:
    w = world
    cases = [
        (principal(w.alice), w.alice, RWA),  # own namespace
        (principal(w.alice, scope="read"), w.alice, R),
        (principal(w.alice), w.lab, RWA),  # owner
        (principal(w.adam), w.lab, RWA),
        (principal(w.bob), w.lab, RW),
        (principal(w.bob, scope="read"), w.lab, R),
        (principal(w.rita), w.lab, R),
        (principal(w.carol), w.lab, NONE),  # not a member
        (principal(w.alice), w.other, NONE),
        (principal(w.alice), w.bob, NONE),  # another user's namespace
        (principal(w.dora), w.lab, NONE),  # disabled: a member no more
        (principal(w.dora), w.dora, NONE),
        (principal(w.lab), w.lab, NONE),  # a token owner named like the organization, no user
        (principal("nobody-" + uuid.uuid4().hex[:6]), w.lab, NONE),
        (principal("admin", is_admin=True), w.lab, RWA),
        (principal("admin", is_admin=True), w.alice, RWA),
        (principal("admin", is_admin=True, scope="read"), w.lab, R),
        (None, w.lab, NONE),
        (None, w.alice, NONE),
    ]
    for who, namespace, expected in cases:
        assert actions_in(await loaded(session, who), namespace) == expected, (who, namespace)


@pytest.mark.anyio
async def test_require_hides_what_the_caller_cannot_read(
    world: World, session: AsyncSession
) -> None:
    w = world
    bob, alice = (
        await caller_of(session, principal(w.bob)),
        await caller_of(session, principal(w.alice)),
    )
    alice_read = await caller_of(session, principal(w.alice, scope="read"))
    assert require(bob, w.lab, WRITE) == RW
    assert require(alice, w.lab, ADMIN) == RWA
    with pytest.raises(PermissionDeniedError, match="'admin' permission"):
        require(bob, w.lab, ADMIN)
    with pytest.raises(PermissionDeniedError, match="'write' permission"):
        require(await caller_of(session, principal(w.rita)), w.lab, WRITE)
    with pytest.raises(PermissionDeniedError, match="read-only"):
        require(alice_read, w.lab, WRITE)
    assert require(alice_read, w.lab, READ) == R
    # Not even readable: the same answer as for a namespace that does not exist.
    for who in (principal(w.carol), principal(w.dora), principal(w.lab), None):
        with pytest.raises(NotFoundError) as hidden:
            require(await loaded(session, who), w.lab, READ, not_found="Organization not found")
        assert hidden.value.message == "Organization not found"
    with pytest.raises(NotFoundError) as missing:
        require(alice, unique("missing"), READ)
    assert missing.value.message.startswith("Namespace ")
    with pytest.raises(ValueError, match="unknown action"):
        require(alice, w.alice, "own")


@pytest.mark.anyio
async def test_caller_of_loads_every_namespace_once_for_the_asset_checks(
    world: World, session: AsyncSession
) -> None:
    w = world
    alice = await caller_of(session, principal(w.alice))
    assert dict(alice.namespaces) == {w.alice: RWA, w.lab: RWA}
    assert not alice.read_only
    bob = await caller_of(session, principal(w.bob, scope="read"))
    assert dict(bob.namespaces) == {w.bob: RWA, w.lab: RW}
    assert bob.read_only
    carol = await caller_of(session, principal(w.carol))
    assert dict(carol.namespaces) == {w.carol: RWA, w.other: RWA}
    assert dict((await caller_of(session, principal(w.dora))).namespaces) == {}
    assert dict((await caller_of(session, principal(w.lab))).namespaces) == {}
    admin = await caller_of(session, principal("admin", is_admin=True))
    assert admin.is_admin

    shared = Access(w.alice, shares={w.lab: RW})
    assert can(bob, shared) == R  # read token
    rita = await caller_of(session, principal(w.rita))
    assert can(rita, shared) == R  # read_only role
    adam = await caller_of(session, principal(w.adam))
    assert can(adam, shared) == RW
    assert can(carol, shared) == NONE
    assert can(admin, shared) == RWA
    assert can(carol, Access(w.lab)) == NONE
    assert can(adam, Access(w.lab)) == RWA
