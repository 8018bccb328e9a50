"""``/api/v1/admin``: users (create, list, get, update, disable) and organizations, and
``/api/v1/user``, over loopback against the real server."""

from __future__ import annotations

import uuid
from datetime import timedelta

import anyio
import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.server import Server
from aiosdk.server.accounts.models import LoginSession, Namespace, User
from aiosdk.server.accounts.passwords import verify_password
from aiosdk.server.auth import generate_token, hash_token
from aiosdk.server.storage import Token, utcnow

from .conftest import assert_error, create_token, make_client

pytestmark = pytest.mark.anyio

USER_FIELDS = {"id", "username", "email", "display_name", "created_at", "disabled"}


def unique(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def new_user(admin: httpx.AsyncClient, **fields: object) -> dict[str, object]:
    response = await admin.post("/admin/users", json={"username": unique(), **fields})
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


async def stored_user(database: async_sessionmaker[AsyncSession], username: str) -> User:
    async with database() as session:
        user = await session.scalar(select(User).where(User.username == username))
    assert user is not None
    return user


async def test_create_and_get_a_user(
    client: httpx.AsyncClient, database: async_sessionmaker[AsyncSession]
) -> None:
    name = unique("alice")
    response = await client.post(
        "/admin/users",
        json={
            "username": name,
            "password": "correct horse",
            "email": "alice@example.org",
            "display_name": "Alice A.",
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == USER_FIELDS
    assert created["username"] == name
    assert created["email"] == "alice@example.org"
    assert created["display_name"] == "Alice A."
    assert created["disabled"] is False
    assert "correct horse" not in response.text
    assert (await client.get(f"/admin/users/{name}")).json() == created

    user = await stored_user(database, name)
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert await verify_password(user.password_hash, "correct horse")
    assert not await verify_password(user.password_hash, "correct horsE")
    async with database() as session:
        namespace = await session.get(Namespace, name)
    assert namespace is not None
    assert namespace.kind == "user"


async def test_a_user_without_a_password_has_none(
    client: httpx.AsyncClient, database: async_sessionmaker[AsyncSession]
) -> None:
    created = await new_user(client)
    assert created["email"] is None
    assert created["display_name"] is None
    assert (await stored_user(database, str(created["username"]))).password_hash is None


@pytest.mark.parametrize("name", ["a", "0", "a-b_c", "x" * 64, "9lives", "a--b"])
async def test_valid_names(client: httpx.AsyncClient, name: str) -> None:
    # Each module has a server of its own, so these names are free.
    response = await client.post("/admin/users", json={"username": name})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "body",
    [
        {"username": "Alice"},
        {"username": "-alice"},
        {"username": "alice-"},
        {"username": "_alice"},
        {"username": "al ice"},
        {"username": "al.ice"},
        {"username": "al/ice"},
        {"username": "élise"},
        {"username": ""},
        {"username": "x" * 65},
        {"username": 12},
        {"username": None},
        {},
        {"username": "fine", "password": "short"},
        {"username": "fine", "password": "x" * 1025},
        {"username": "fine", "password": 12345678},
        {"username": "fine", "email": "not-an-address"},
        {"username": "fine", "email": "a@b@c"},
        {"username": "fine", "email": "a" * 250 + "@b.org"},
        {"username": "fine", "display_name": ""},
        {"username": "fine", "display_name": "nul\x00"},
        {"username": "fine", "display_name": "x" * 201},
        {"username": "fine", "is_admin": True},
    ],
)
async def test_invalid_users_are_refused(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    assert_error(await client.post("/admin/users", json=body), 422, "invalid_request")


async def test_password_limits_are_inclusive(client: httpx.AsyncClient) -> None:
    await new_user(client, password="x" * 8)
    await new_user(client, password="x" * 1024)


@pytest.mark.parametrize("name", ["admin", "public"])
async def test_reserved_names_are_refused(client: httpx.AsyncClient, name: str) -> None:
    error = assert_error(
        await client.post("/admin/users", json={"username": name}), 409, "conflict"
    )
    assert "reserved" in error["message"]
    owner = await new_user(client)
    response = await client.post(
        "/admin/organizations", json={"name": name, "owner": owner["username"]}
    )
    assert_error(response, 409, "conflict")


async def test_users_and_organizations_share_one_name_space(client: httpx.AsyncClient) -> None:
    user = await new_user(client)
    name = str(user["username"])
    assert_error(await client.post("/admin/users", json={"username": name}), 409, "conflict")
    taken = await client.post("/admin/organizations", json={"name": name, "owner": name})
    assert_error(taken, 409, "conflict")

    org = unique("org")
    created = await client.post("/admin/organizations", json={"name": org, "owner": name})
    assert created.status_code == 201
    assert_error(await client.post("/admin/users", json={"username": org}), 409, "conflict")
    again = await client.post("/admin/organizations", json={"name": org, "owner": name})
    assert_error(again, 409, "conflict")


async def test_concurrent_creations_of_one_name_make_one_user(client: httpx.AsyncClient) -> None:
    name = unique("race")
    statuses: list[int] = []

    async def create(index: int) -> None:
        body = {"username": name, "display_name": f"attempt {index}"}
        statuses.append((await client.post("/admin/users", json=body)).status_code)

    async with anyio.create_task_group() as group:
        for index in range(8):
            group.start_soon(create, index)
    assert sorted(statuses) == [201] + [409] * 7


async def test_users_are_listed_page_by_page(client: httpx.AsyncClient) -> None:
    created = [str((await new_user(client))["username"]) for _ in range(5)]
    seen: list[str] = []
    page_token: str | None = None
    while True:
        params: dict[str, str | int] = {"page_size": 2}
        if page_token is not None:
            params["page_token"] = page_token
        response = await client.get("/admin/users", params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= 2
        assert all(set(item) == USER_FIELDS for item in page["items"])
        seen.extend(item["username"] for item in page["items"])
        page_token = page["next_page_token"]
        if page_token is None:
            break
    assert len(seen) == len(set(seen))
    assert seen[-5:] == created  # oldest first; these are the newest
    assert_error(
        await client.get("/admin/users", params={"page_token": "junk"}), 400, "invalid_request"
    )
    assert_error(await client.get("/admin/users", params={"page_size": 0}), 422, "invalid_request")


async def test_an_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    name = unique("ghost")
    assert_error(await client.get(f"/admin/users/{name}"), 404, "not_found")
    assert_error(await client.patch(f"/admin/users/{name}", json={}), 404, "not_found")


async def test_update_changes_only_what_is_given(
    client: httpx.AsyncClient, database: async_sessionmaker[AsyncSession]
) -> None:
    user = await new_user(client, password="first password", email="a@x.org", display_name="A")
    name = str(user["username"])
    path = f"/admin/users/{name}"
    first_hash = (await stored_user(database, name)).password_hash

    renamed = await client.patch(path, json={"display_name": "Alice"})
    assert renamed.status_code == 200
    assert renamed.json() == {**user, "display_name": "Alice"}
    assert (await stored_user(database, name)).password_hash == first_hash

    cleared = (await client.patch(path, json={"email": None})).json()
    assert cleared == {**user, "display_name": "Alice", "email": None}

    assert (await client.patch(path, json={"password": "second password"})).status_code == 200
    second_hash = (await stored_user(database, name)).password_hash
    assert second_hash != first_hash
    assert await verify_password(second_hash, "second password")
    assert not await verify_password(second_hash, "first password")

    assert (await client.patch(path, json={"password": None})).status_code == 200
    assert (await stored_user(database, name)).password_hash is None

    assert (await client.patch(path, json={})).json() == cleared
    for body in (
        {"password": "short"},
        {"disabled": "yes"},
        {"disabled": 1},
        {"username": "other"},
        {"email": "nope"},
    ):
        assert_error(await client.patch(path, json=body), 422, "invalid_request")


async def add_session(
    database: async_sessionmaker[AsyncSession], user_id: str, username: str
) -> tuple[str, str]:
    """A login session of the user with one access token, as a login makes them: its id and
    the access token's secret."""
    secret = generate_token()
    async with database() as session:
        login = LoginSession(user_id=user_id, expires_at=utcnow() + timedelta(hours=1))
        session.add(login)
        await session.flush()
        session.add(
            Token(
                label="session",
                secret_hash=hash_token(secret),
                owner=username,
                session_id=login.id,
                expires_at=utcnow() + timedelta(minutes=15),
            )
        )
        await session.commit()
        return login.id, secret


async def test_disabling_a_user_revokes_its_tokens_and_sessions_at_once(
    server: Server, client: httpx.AsyncClient, database: async_sessionmaker[AsyncSession]
) -> None:
    user = await new_user(client)
    name, user_id = str(user["username"]), str(user["id"])
    api_tokens = [
        (await create_token(client, label=f"t{i}", owner=name))["token"] for i in range(2)
    ]
    session_id, access_token = await add_session(database, user_id, name)
    other = await new_user(client)
    others_token = (await create_token(client, owner=other["username"]))["token"]
    credentials = [*api_tokens, access_token]

    for secret in [*credentials, others_token]:
        async with make_client(server, secret) as http:
            assert (await http.get("/user")).status_code == 200  # authenticated, and cached

    disabled = await client.patch(f"/admin/users/{name}", json={"disabled": True})
    assert disabled.status_code == 200
    assert disabled.json()["disabled"] is True
    for secret in credentials:
        async with make_client(server, secret) as http:
            assert_error(await http.get("/user"), 401, "unauthenticated")
    async with make_client(server, others_token) as http:
        assert (await http.get("/user")).status_code == 200  # nobody else's

    async with database() as session:
        login = await session.get(LoginSession, session_id)
        assert login is not None
        assert login.revoked_at is not None
        assert login.revoked_reason == "user_disabled"
        live = await session.scalars(
            select(Token.id).where(Token.owner == name, Token.revoked_at.is_(None))
        )
        assert list(live) == []
    assert (await client.get(f"/admin/users/{name}")).json()["disabled"] is True

    # Enabling lets the user in again with new credentials, not with the old ones.
    enabled = await client.patch(f"/admin/users/{name}", json={"disabled": False})
    assert enabled.json()["disabled"] is False
    for secret in credentials:
        async with make_client(server, secret) as http:
            assert_error(await http.get("/user"), 401, "unauthenticated")
    fresh = (await create_token(client, owner=name))["token"]
    async with make_client(server, fresh) as http:
        assert (await http.get("/user")).json()["username"] == name


async def test_disabling_twice_still_revokes_what_was_added_since(
    server: Server, client: httpx.AsyncClient
) -> None:
    user = await new_user(client)
    name = str(user["username"])
    assert (await client.patch(f"/admin/users/{name}", json={"disabled": True})).status_code == 200
    late = await create_token(client, owner=name)
    assert (await client.patch(f"/admin/users/{name}", json={"disabled": True})).status_code == 200
    async with make_client(server, late["token"]) as http:
        assert_error(await http.get("/user"), 401, "unauthenticated")
    assert_error(await client.get(f"/tokens/{late['id']}"), 404, "not_found")  # revoked


async def test_create_an_organization(
    server: Server, client: httpx.AsyncClient, database: async_sessionmaker[AsyncSession]
) -> None:
    owner = await new_user(client)
    name = unique("lab")
    response = await client.post(
        "/admin/organizations",
        json={"name": name, "owner": owner["username"], "display_name": "The Lab"},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {
        "id",
        "name",
        "display_name",
        "created_at",
        "role",
        "allowed_actions",
        "members",
    }
    assert created["name"] == name
    assert created["display_name"] == "The Lab"
    assert created["role"] is None  # the admin token is no member
    assert created["allowed_actions"] == ["read", "write", "admin"]
    assert created["members"] == [{"username": owner["username"], "role": "owner"}]
    assert (await client.get(f"/organizations/{name}")).json() == created
    async with database() as session:
        namespace = await session.get(Namespace, name)
    assert namespace is not None
    assert namespace.kind == "organization"

    token = (await create_token(client, owner=owner["username"]))["token"]
    async with make_client(server, token) as http:
        profile = (await http.get("/user")).json()
    assert profile["organizations"] == [
        {
            "name": name,
            "display_name": "The Lab",
            "role": "owner",
            "allowed_actions": ["read", "write", "admin"],
        }
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Lab", "owner": "someone"},
        {"name": "lab"},
        {"owner": "someone"},
        {"name": "lab", "owner": ""},
        {"name": "lab", "owner": 3},
        {"name": "lab", "owner": "someone", "members": []},
    ],
)
async def test_invalid_organizations_are_refused(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    assert_error(await client.post("/admin/organizations", json=body), 422, "invalid_request")


async def test_an_organization_needs_an_existing_owner(client: httpx.AsyncClient) -> None:
    name = unique("lab")
    ghost = unique("ghost")
    response = await client.post("/admin/organizations", json={"name": name, "owner": ghost})
    assert_error(response, 404, "not_found")
    # Nothing was kept: the name is still free.
    owner = await new_user(client)
    again = await client.post(
        "/admin/organizations", json={"name": name, "owner": owner["username"]}
    )
    assert again.status_code == 201


async def test_the_profile_of_a_user_and_of_the_admin_token(
    server: Server, client: httpx.AsyncClient
) -> None:
    admin = (await client.get("/user")).json()
    assert admin == {
        "id": None,
        "username": "admin",
        "email": None,
        "display_name": None,
        "created_at": None,
        "is_admin": True,
        "organizations": [],
    }
    user = await new_user(client, email="b@example.org", display_name="B")
    token = (await create_token(client, owner=user["username"]))["token"]
    async with make_client(server, token) as http:
        profile = (await http.get("/user")).json()
    assert profile == {
        "id": user["id"],
        "username": user["username"],
        "email": "b@example.org",
        "display_name": "B",
        "created_at": user["created_at"],
        "is_admin": False,
        "organizations": [],
    }


async def test_a_token_whose_owner_is_no_user_has_no_profile(
    server: Server, client: httpx.AsyncClient
) -> None:
    token = (await create_token(client, owner=unique("robot")))["token"]
    async with make_client(server, token) as http:
        assert_error(await http.get("/user"), 404, "not_found")
