"""Watching a catalog container end to end, against the real server: the events of its
children in order, resumable, typed gaps, access, no history for watchers who read through a
share (and their resume tokens), reconnection through a fault proxy under ``forceful``,
cancellation, and the official grpcio client."""

from __future__ import annotations

import base64
import importlib.util
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import anyio
import grpc
import pytest

import aiosdk
from aiosdk.catalog.watch import CatalogEvent, watch
from aiosdk.proto import CatalogEvent as WireEvent
from aiosdk.proto import CatalogEventKind, CatalogServiceStub, WatchRequest
from aiosdk.server import ServerThread
from aiosdk.server.catalog import events
from aiosdk.testing.accounts import AsyncAccounts, TestUser

pytestmark = pytest.mark.anyio

WITHIN = 10.0


async def _call(client: aiosdk.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    response = await client._ctx.request(method, path, **kwargs)
    return response.json() if response.content else None


def _url(path: str) -> str:
    return "/".join(quote(key, safe="") for key in path.split("/"))


async def _create(client: aiosdk.AsyncClient, parent: str, key: str, **metadata: Any) -> Any:
    body = {"key": key, "structure_family": "container", "metadata": metadata}
    return await _call(client, "POST", f"/catalog/children/{_url(parent)}", json=body)


async def _update(client: aiosdk.AsyncClient, path: str, **metadata: Any) -> Any:
    return await _call(client, "PATCH", f"/catalog/nodes/{_url(path)}", json={"metadata": metadata})


async def _delete(client: aiosdk.AsyncClient, path: str) -> None:
    await _call(client, "DELETE", f"/catalog/nodes/{_url(path)}")


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110  # (a condition of another task's list)
        await anyio.sleep(0.02)


async def _take(stream: AsyncIterator[CatalogEvent], count: int) -> list[CatalogEvent]:
    taken: list[CatalogEvent] = []
    with anyio.fail_after(WITHIN):
        async for event in stream:
            taken.append(event)
            if len(taken) == count:
                break
    return taken


async def _share(client: aiosdk.AsyncClient, path: str, namespace: str) -> None:
    body = {"namespace": namespace, "actions": ["read"]}
    await _call(client, "PUT", f"/catalog/shares/{_url(path)}", json=body)


async def _opened(
    stream: AsyncIterator[CatalogEvent], writer: aiosdk.AsyncClient, container: str
) -> CatalogEvent:
    """Open ``stream`` (a watch of ``container`` from now): create probe children until one
    arrives, consume every probe's event, and return the last one."""
    created = 0
    stop = anyio.Event()

    async def probe() -> None:
        nonlocal created
        while not stop.is_set():
            await _create(writer, container, f"probe-{created}")
            created += 1
            with anyio.move_on_after(0.1):
                await stop.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(probe)
        (first,) = await _take(stream, 1)
        stop.set()
    rest = created - int(first.key.removeprefix("probe-")) - 1
    return (await _take(stream, rest))[-1] if rest else first


async def _raw(client: aiosdk.AsyncClient, request: WatchRequest, count: int) -> list[WireEvent]:
    """The first ``count`` wire messages of a watch opened with ``request`` as it is."""

    def open_stream(stub: CatalogServiceStub, _last: WireEvent | None) -> AsyncIterator[WireEvent]:
        return stub.watch(request)

    stream = client._ctx.grpc_stream(CatalogServiceStub, open_stream, idempotent=True, what="W")
    messages: list[WireEvent] = []
    try:
        with anyio.fail_after(WITHIN):
            async for message in stream:
                messages.append(message)
                if len(messages) == count:
                    break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return messages


@pytest.fixture
async def alice(aiosdk_accounts: AsyncAccounts) -> tuple[TestUser, aiosdk.AsyncClient]:
    user = await aiosdk_accounts.user("alice")
    return user, await aiosdk_accounts.client(user)


@pytest.fixture
async def box(alice: tuple[TestUser, aiosdk.AsyncClient]) -> str:
    """A new, empty container of alice's: its path."""
    user, client = alice
    await _create(client, user.username, "box")
    return f"{user.username}/box"


async def test_children_created_updated_and_deleted_in_order(
    alice: tuple[TestUser, aiosdk.AsyncClient], box: str
) -> None:
    _user, client = alice
    await _create(client, box, "a", color="red")
    await _update(client, f"{box}/a", color="blue")
    await _create(client, box, "b")
    await _delete(client, f"{box}/a")
    stream = watch(client._ctx, box, 0)
    try:
        got = await _take(stream, 4)
        assert [(e.kind, e.key, e.sequence) for e in got] == [
            ("created", "a", 1),
            ("updated", "a", 2),
            ("created", "b", 3),
            ("deleted", "a", 4),
        ]
        assert got[0].metadata == {"color": "red"}
        assert got[1].metadata == {"color": "blue"}
        assert got[1].revision == got[0].revision + 1
        assert got[3].metadata is None
        assert got[0].node_id == got[1].node_id == got[3].node_id != got[2].node_id
        assert got[0].path == f"{box}/a"
        assert got[2].structure_family == "container"
        # Then live: what happens after the stream caught up.
        await _update(client, f"{box}/b", n=1)
        (live,) = await _take(stream, 1)
        assert (live.kind, live.key, live.sequence, live.metadata) == ("updated", "b", 5, {"n": 1})
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_watching_from_now_starts_after_the_current_sequence(
    alice: tuple[TestUser, aiosdk.AsyncClient], box: str
) -> None:
    _user, client = alice
    await _create(client, box, "old-1")
    await _create(client, box, "old-2")
    stream = watch(client._ctx, box, None)
    received: list[CatalogEvent] = []

    async def receive() -> None:
        received.extend(await _take(stream, 3))

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(receive)
            number = 0
            while len(received) < 3:  # until the watch, open by then, has seen three
                await _create(client, box, f"new-{number}")
                number += 1
                await anyio.sleep(0.1)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    first = received[0].sequence
    assert first > 2
    assert [e.sequence for e in received] == [first, first + 1, first + 2]
    assert all(e.key.startswith("new-") for e in received)


async def test_resuming_after_a_sequence(
    alice: tuple[TestUser, aiosdk.AsyncClient], box: str
) -> None:
    _user, client = alice
    for key in "abcd":
        await _create(client, box, key)
    stream = watch(client._ctx, box, 2)
    try:
        assert [(e.sequence, e.key) for e in await _take(stream, 2)] == [(3, "c"), (4, "d")]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_a_resume_point_no_longer_kept_is_a_gap(
    alice: tuple[TestUser, aiosdk.AsyncClient], box: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _user, client = alice
    monkeypatch.setattr(events, "KEEP", 5)  # (the server runs in this process)
    monkeypatch.setattr(events, "PRUNE_EVERY", 5)
    for number in range(11):
        await _create(client, box, f"k{number}")  # pruned at 10: events 1..5 are gone
    with anyio.fail_after(WITHIN), pytest.raises(aiosdk.WatchGapError, match="no longer kept"):
        await _take(watch(client._ctx, box, 2), 1)
    stream = watch(client._ctx, box, 5)  # the oldest kept is 6: resuming after 5 is fine
    try:
        assert [e.sequence for e in await _take(stream, 6)] == [6, 7, 8, 9, 10, 11]
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    with anyio.fail_after(WITHIN), pytest.raises(aiosdk.WatchGapError, match="ahead"):
        await _take(watch(client._ctx, box, 12), 1)


async def test_the_root_and_assets_cannot_be_watched(
    alice: tuple[TestUser, aiosdk.AsyncClient], box: str
) -> None:
    _user, client = alice
    with anyio.fail_after(WITHIN), pytest.raises(aiosdk.BadRequestError, match="root"):
        await _take(watch(client._ctx, "", None), 1)
    with anyio.fail_after(WITHIN), pytest.raises(aiosdk.BadRequestError, match="Invalid path"):
        await _take(watch(client._ctx, f"{box}/../x", None), 1)


async def test_a_watcher_who_may_not_read_gets_not_found(
    alice: tuple[TestUser, aiosdk.AsyncClient], box: str, aiosdk_accounts: AsyncAccounts
) -> None:
    bob = await aiosdk_accounts.client(await aiosdk_accounts.user("bob"))
    with anyio.fail_after(WITHIN), pytest.raises(aiosdk.NotFoundError) as hidden:
        await _take(watch(bob._ctx, box, None), 1)
    with anyio.fail_after(WITHIN), pytest.raises(aiosdk.NotFoundError) as missing:
        await _take(watch(bob._ctx, f"{box}-nothing", None), 1)
    # Nothing tells an unreadable container from a missing one, but the path.
    assert hidden.value.message.replace(box, "?") == missing.value.message.replace(
        f"{box}-nothing", "?"
    )


async def test_losing_access_ends_the_watch(
    alice: tuple[TestUser, aiosdk.AsyncClient], box: str, aiosdk_accounts: AsyncAccounts
) -> None:
    _user, client = alice
    bob_user = await aiosdk_accounts.user("bob")
    bob = await aiosdk_accounts.client(bob_user)
    await _share(client, box, bob_user.username)
    stream = watch(bob._ctx, box, None)
    try:
        await _opened(stream, client, box)
        await _create(client, box, "seen")
        assert [e.key for e in await _take(stream, 1)] == ["seen"]
        params = {"namespace": bob_user.username}
        await _call(client, "DELETE", f"/catalog/shares/{_url(box)}", params=params)
        await _create(client, box, "unseen")
        with anyio.fail_after(WITHIN), pytest.raises(aiosdk.NotFoundError):
            await _take(stream, 1)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_a_deleted_container_ends_its_watch(
    alice: tuple[TestUser, aiosdk.AsyncClient], box: str
) -> None:
    _user, client = alice
    await _create(client, box, "a")
    stream = watch(client._ctx, box, 0)
    try:
        await _take(stream, 1)
        await _call(client, "DELETE", f"/catalog/nodes/{_url(box)}", params={"recursive": True})
        with anyio.fail_after(WITHIN), pytest.raises(aiosdk.NotFoundError):
            await _take(stream, 1)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_cancelling_a_watch_releases_its_stream(
    client: aiosdk.AsyncClient, alice: tuple[TestUser, aiosdk.AsyncClient], box: str
) -> None:
    _user, owner = alice
    before = (await client.get_status()).active_streams

    async def forever() -> None:
        async for _event in watch(owner._ctx, box, None):
            pass

    with anyio.fail_after(WITHIN):
        async with anyio.create_task_group() as group:
            group.start_soon(forever)
            while (await client.get_status()).active_streams <= before:  # noqa: ASYNC110
                await anyio.sleep(0.05)
            group.cancel_scope.cancel()
        while (await client.get_status()).active_streams > before:  # noqa: ASYNC110
            await anyio.sleep(0.05)


# -- no history through a share ------------------------------------------------------------


async def test_a_share_gives_no_history_from_before_it(
    alice: tuple[TestUser, aiosdk.AsyncClient], aiosdk_accounts: AsyncAccounts
) -> None:
    user, owner = alice
    proj = f"{user.username}/proj"
    await _create(owner, user.username, "proj")
    await _create(owner, proj, "tmp", password="hunter2")
    await _delete(owner, f"{proj}/tmp")
    bob_user = await aiosdk_accounts.user("bob")
    bob = await aiosdk_accounts.client(bob_user)
    await _share(owner, proj, bob_user.username)
    container = await bob.catalog.get(proj)
    assert isinstance(container, aiosdk.AsyncContainer)
    assert await container.keys().head(10) == []
    for after in (0, 1):  # the secret's creation, its deletion: before bob could read them
        with anyio.fail_after(WITHIN), pytest.raises(aiosdk.WatchGapError, match="share") as gap:
            await _take(container.watch(after=after), 1)
        assert gap.value.grpc_status == "OUT_OF_RANGE"
    stream = container.watch()  # from now: only what happens from now on
    try:
        opened = await _opened(stream, owner, proj)
        await _create(owner, proj, "later", n=1)
        (later,) = await _take(stream, 1)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    assert opened.sequence > 2
    assert (later.kind, later.key, later.metadata) == ("created", "later", {"n": 1})
    assert later.sequence == opened.sequence + 1
    # Starting at the current sequence needs no token: nothing before it.
    (ready,) = await _raw(bob, WatchRequest(path=proj, after_sequence=later.sequence), 1)
    assert (ready.kind, ready.sequence) == (CatalogEventKind.READY, later.sequence)


async def test_a_public_container_gives_no_history_either(
    alice: tuple[TestUser, aiosdk.AsyncClient], box: str, aiosdk_accounts: AsyncAccounts
) -> None:
    _user, owner = alice
    await _create(owner, box, "old", secret="s")
    await _call(owner, "PUT", f"/catalog/public/{_url(box)}", json={"public": True})
    carol = await aiosdk_accounts.client(await aiosdk_accounts.user("carol"))
    with anyio.fail_after(WITHIN), pytest.raises(aiosdk.WatchGapError, match="public"):
        await _take(watch(carol._ctx, box, 0), 1)


async def test_owners_and_members_replay_from_the_start(
    alice: tuple[TestUser, aiosdk.AsyncClient], aiosdk_accounts: AsyncAccounts
) -> None:
    user, owner = alice
    member_user = await aiosdk_accounts.user("member")
    lab = await aiosdk_accounts.organization("lab", owner=user, members={member_user: "read_only"})
    member = await aiosdk_accounts.client(member_user)
    for namespace in (user.username, lab):
        proj = f"{namespace}/proj"
        await _create(owner, namespace, "proj")
        await _create(owner, proj, "tmp", password="hunter2")
        await _delete(owner, f"{proj}/tmp")
        readers = [owner] if namespace == user.username else [owner, member]
        for reader in readers:
            stream = watch(reader._ctx, proj, 0)
            try:
                got = await _take(stream, 2)
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            assert [(e.kind, e.sequence) for e in got] == [("created", 1), ("deleted", 2)]
            assert got[0].metadata == {"password": "hunter2"}


async def test_resume_tokens_are_the_callers_own(
    alice: tuple[TestUser, aiosdk.AsyncClient], aiosdk_accounts: AsyncAccounts
) -> None:
    user, owner = alice
    one, two = f"{user.username}/one", f"{user.username}/two"
    bob_user, carol_user = await aiosdk_accounts.user("bob"), await aiosdk_accounts.user("carol")
    bob, carol = await aiosdk_accounts.client(bob_user), await aiosdk_accounts.client(carol_user)
    for path in (one, two):
        await _create(owner, user.username, path.rsplit("/", 1)[1])
        await _create(owner, path, "before")
        for grantee in (bob_user.username, carol_user.username):
            await _share(owner, path, grantee)
    (ready,) = await _raw(bob, WatchRequest(path=one), 1)
    assert ready.kind is CatalogEventKind.READY
    assert ready.sequence == 1
    token = ready.resume_token
    assert token
    await _create(owner, one, "after-1")
    await _create(owner, one, "after-2")

    def resume(path: str, after: int, resume_token: str | None) -> WatchRequest:
        return WatchRequest(path=path, after_sequence=after, resume_token=resume_token)

    # Its own token: bob resumes where that stream started, or later.
    got = await _raw(bob, resume(one, 1, token), 3)
    assert [(m.kind, m.sequence, m.key) for m in got] == [
        (CatalogEventKind.READY, 1, "one"),
        (CatalogEventKind.CREATED, 2, "after-1"),
        (CatalogEventKind.CREATED, 3, "after-2"),
    ]
    assert [m.sequence for m in await _raw(bob, resume(one, 2, token), 2)] == [2, 3]
    payload, _dot, signature = token.partition(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    lowered = base64.urlsafe_b64encode(json.dumps([*decoded[:2], 0, decoded[3]]).encode())
    refused = {
        "before the token's point": (bob, resume(one, 0, token)),
        "no token": (bob, resume(one, 1, None)),
        "another user's": (carol, resume(one, 1, token)),
        "another container's": (bob, resume(two, 0, token)),
        "a forged signature": (bob, resume(one, 1, f"{payload}.{signature[:-2]}xx")),
        "a changed payload": (bob, resume(one, 0, f"{lowered.decode()}.{signature}")),
        "garbage": (bob, resume(one, 1, "not a token")),
    }
    for case, (client, request) in refused.items():
        with pytest.raises(aiosdk.StatusError) as refusal:
            await _raw(client, request, 1)
        assert refusal.value.grpc_status == "OUT_OF_RANGE", case
        assert "share" in refusal.value.message, case
    # A share removed and made again is another share: the old token admits nothing.
    params = {"namespace": bob_user.username}
    await _call(owner, "DELETE", f"/catalog/shares/{_url(one)}", params=params)
    await _share(owner, one, bob_user.username)
    with pytest.raises(aiosdk.StatusError, match="not valid") as refusal:
        await _raw(bob, resume(one, 1, token), 1)
    assert refusal.value.grpc_status == "OUT_OF_RANGE"


# -- a reconnect through a fault proxy ------------------------------------------------------


@pytest.fixture
def grpc_proxy(server: ServerThread) -> Iterator[Any]:
    """A TCP proxy in front of the real gRPC port, and a scripted discovery naming it."""
    from faults.proxy import TcpProxy  # (tests/faults: the fault-injection helpers)
    from faults.scripted import ScriptedServer

    relay = TcpProxy(server.grpc_host, server.grpc_port).start()
    scripted = ScriptedServer().start()
    scripted.grpc_port = relay.port
    relay.discovery_url = scripted.url
    yield relay
    scripted.stop()
    relay.stop()


def _cut(relay: Any) -> None:
    """Reset every connection the proxy relays now (it keeps accepting new ones); blocks."""
    relay._thread.call(relay._connections.close_all())


@pytest.mark.parametrize("reader", ["admin", "shared"])
async def test_a_reconnect_under_forceful_loses_and_repeats_nothing(
    server: ServerThread,
    alice: tuple[TestUser, aiosdk.AsyncClient],
    box: str,
    grpc_proxy: Any,
    aiosdk_accounts: AsyncAccounts,
    reader: str,
) -> None:
    _user, writer = alice
    received: list[CatalogEvent] = []
    created = 0
    token = server.admin_token
    if reader == "shared":  # reads only through a share: its reconnections need their tokens
        bob_user = await aiosdk_accounts.user("bob")
        bob = await aiosdk_accounts.client(bob_user)
        await _share(writer, box, bob_user.username)
        token = (await bob.tokens.create("watch", expires_in=600)).secret.reveal()

    async def create() -> None:
        nonlocal created
        await _create(writer, box, f"k{created}")  # the event numbered created + 1
        created += 1

    async with aiosdk.AsyncClient(
        grpc_proxy.discovery_url, token=token, retry_mode="forceful"
    ) as watcher:
        stream = watch(watcher._ctx, box, None)

        async def receive() -> None:
            async for event in stream:
                received.append(event)

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(receive)
                with anyio.fail_after(WITHIN):
                    while not received:  # the watch is open once it has seen something
                        await create()
                        await anyio.sleep(0.1)
                    for _round in range(2):
                        await anyio.to_thread.run_sync(_cut, grpc_proxy)
                        for _ in range(3):  # while the watcher reconnects
                            await create()
                        await _until(lambda: received[-1].sequence == created)
                group.cancel_scope.cancel()
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
    first = received[0].sequence
    assert [e.sequence for e in received] == list(range(first, created + 1))
    assert [e.key for e in received] == [f"k{n - 1}" for n in range(first, created + 1)]
    assert grpc_proxy.connections >= 3  # it did reconnect, twice


# -- the official grpcio client --------------------------------------------------------------


@pytest.fixture(scope="module")
def grpcio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    path = Path(__file__).parent / "server" / "grpcio_stubs.py"
    spec = importlib.util.spec_from_file_location("watch_grpcio_stubs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with module.grpcio_stubs(tmp_path_factory.mktemp("grpcio"), "catalog") as modules:
        yield modules


async def test_the_official_grpcio_client_watches(
    server: ServerThread,
    alice: tuple[TestUser, aiosdk.AsyncClient],
    box: str,
    grpcio: dict[str, ModuleType],
) -> None:
    _user, client = alice
    await _create(client, box, "a", x=1)
    await _delete(client, f"{box}/a")
    pb2, pb2_grpc = grpcio["catalog_pb2"], grpcio["catalog_pb2_grpc"]
    metadata = [("authorization", f"Bearer {server.admin_token}")]

    def read(after: int | None, count: int) -> tuple[list[Any], grpc.StatusCode | None]:
        with grpc.insecure_channel(f"{server.grpc_host}:{server.grpc_port}") as channel:
            stub = pb2_grpc.CatalogServiceStub(channel)
            request = pb2.WatchRequest(path=box)
            if after is not None:
                request.after_sequence = after
            call = stub.Watch(request, metadata=metadata, timeout=WITHIN)
            messages: list[Any] = []
            try:
                for message in call:
                    messages.append(message)
                    if len(messages) == count:
                        break
            except grpc.RpcError as exc:
                return messages, exc.code()
            finally:
                call.cancel()
            return messages, None

    messages, failed = await anyio.to_thread.run_sync(read, 0, 3)
    assert failed is None
    ready, created, deleted = messages
    assert ready.kind == pb2.CatalogEvent.READY
    assert (ready.sequence, ready.path) == (0, box)
    assert ready.HasField("resume_token")
    assert created.kind == pb2.CatalogEvent.CREATED
    assert (created.sequence, created.key, created.path) == (1, "a", f"{box}/a")
    assert json.loads(created.metadata_json) == {"x": 1}
    assert deleted.kind == pb2.CatalogEvent.DELETED
    assert deleted.sequence == 2
    assert not deleted.HasField("metadata_json")
    messages, failed = await anyio.to_thread.run_sync(read, None, 1)
    assert (messages[0].kind, messages[0].sequence) == (pb2.CatalogEvent.READY, 2)
    _messages, failed = await anyio.to_thread.run_sync(read, 7, 1)
    assert failed == grpc.StatusCode.OUT_OF_RANGE
