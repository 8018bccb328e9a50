"""Channels through the blocking facade, against the real server: the issue's snippet with
``with client.channels.connect(token) as ch: for m in ch``, leaving the block closing the stream
(a clean disconnect; nothing stays leased), the presence iterator, the seed's operations,
connections consumed from many threads at once, and errors the same as async."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import aiosdk
from aiosdk.server import ServerThread

WITHIN = 20.0


@pytest.fixture
def app(server: ServerThread) -> Iterator[aiosdk.Client]:
    """The application: a new user's blocking client, with an API token the admin made for it
    (no password: nothing to hash)."""
    name = f"chsync-{uuid.uuid4().hex[:12]}"
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=f"{server.http_url}/api/v1", headers=headers, timeout=30) as admin:
        assert admin.post("/admin/users", json={"username": name}).status_code == 201
        made = admin.post("/tokens", json={"label": "app", "owner": name})
        assert made.status_code == 201, made.text
    with aiosdk.Client(server.http_url, token=made.json()["token"]) as client:
        yield client


@pytest.fixture
def holder(server: ServerThread) -> Iterator[aiosdk.Client]:
    """A blocking client with no credentials (the token is the credential)."""
    with aiosdk.Client(server.http_url) as client:
        yield client


def presence(app: aiosdk.Client, n: int, after: int = 0) -> list[Any]:
    """The first ``n`` presence events of the application's after ``after``."""
    events: list[Any] = []
    for event in app.channels.presence(after=after):
        events.append(event)
        if len(events) == n:
            break
    return events


def kinds(events: list[Any]) -> list[tuple[str, str, bool]]:
    return [(e.client_id, e.kind, e.clean) for e in events]


def test_the_snippet_through_the_facade(
    server: ServerThread, app: aiosdk.Client, holder: aiosdk.Client
) -> None:
    token = app.channels.create_channel("device-17", duration_minutes=120)
    app.channels.send_message("device-17", "hello")
    app.channels.send_message("device-17", b"\x00bytes")
    received: list[Any] = []
    with holder.channels.connect(token) as ch:
        for message in ch:
            received.append(message)
            if len(received) == 2:
                break
        assert ch.client_id == "device-17"
    assert [m.data for m in received] == ["hello", b"\x00bytes"]
    assert [m.position.offset for m in received] == [1, 2]
    events = presence(app, 2)
    assert kinds(events) == [("device-17", "connected", False), ("device-17", "disconnected", True)]
    # the stream is gone: a message sent now is leased to nobody, and pops
    app.channels.send_message("device-17", "after")
    assert holder.channels.pop_first_message(token) == "after"


def test_breaking_out_then_iterating_again_goes_on_where_it_stopped(
    app: aiosdk.Client, holder: aiosdk.Client
) -> None:
    token = app.channels.create_channel("again")
    for i in range(4):
        app.channels.send_message("again", f"g{i}")
    with holder.channels.connect(token) as ch:
        first = next(iter(ch))
        rest = []
        for message in ch:
            rest.append(message)
            if len(rest) == 3:
                break
    assert [first.data, *(m.data for m in rest)] == ["g0", "g1", "g2", "g3"]


def test_the_seed_operations_through_the_facade(app: aiosdk.Client, holder: aiosdk.Client) -> None:
    token = app.channels.create_channel("seed")
    ops = holder.channels
    assert ops.client_id_from_token(token) == "seed"
    assert ops.client_id_from_token("garbage") is None
    assert ops.validate_token_and_extract_client_id(token) == "seed"
    assert ops.get_channel_messages(token) == []
    assert ops.has_channel_messages(token) is False
    for data in ("a", b"b", "c", "d"):
        app.channels.send_message("seed", data)
    assert ops.has_channel_messages(token) is True
    assert ops.get_channel_messages(token) == ["a", b"b", "c", "d"]
    assert ops.pop_first_message(token) == "a"
    assert ops.connect_and_pop_first_message(token) == b"b"
    ops.connect_channel(token)
    ops.disconnect_channel_event(token)
    ops.clear_channel_messages(token)
    assert ops.get_channel_messages(token) == []
    assert ops.pop_first_message(token) is None
    assert kinds(presence(app, 2)) == [("seed", "connected", False), ("seed", "disconnected", True)]


def test_connections_consumed_from_many_threads(app: aiosdk.Client, holder: aiosdk.Client) -> None:
    ids = [f"thread-{i}" for i in range(6)]
    tokens = {client_id: app.channels.create_channel(client_id) for client_id in ids}
    n = 5
    ready = threading.Barrier(len(ids) + 1, timeout=WITHIN)

    def consume(client_id: str) -> list[Any]:
        got: list[Any] = []
        with holder.channels.connect(tokens[client_id]) as ch:
            ready.wait()
            for message in ch:
                got.append(message)
                if len(got) == n:
                    break
        return got

    def send(client_id: str) -> None:
        for i in range(n):
            app.channels.send_message(client_id, f"{client_id}/{i}")

    with ThreadPoolExecutor(2 * len(ids)) as pool:
        consumers = {client_id: pool.submit(consume, client_id) for client_id in ids}
        ready.wait()
        senders = [pool.submit(send, client_id) for client_id in ids]
        for sender in senders:
            sender.result(WITHIN)
        results = {client_id: f.result(WITHIN) for client_id, f in consumers.items()}
    for client_id, got in results.items():
        assert [m.data for m in got] == [f"{client_id}/{i}" for i in range(n)]


def test_errors_are_the_async_ones(app: aiosdk.Client, holder: aiosdk.Client) -> None:
    token = app.channels.create_channel("errors")
    with pytest.raises(aiosdk.InvalidTokenError):
        holder.channels.validate_token_and_extract_client_id("aio_ch_garbage.garbage")
    with pytest.raises(aiosdk.MessageTooLargeError):
        app.channels.send_message("errors", b"x" * (32 * 1024 + 1))
    with pytest.raises(aiosdk.InvalidChannelIdError):
        app.channels.create_channel("x" * 65)
    with pytest.raises(aiosdk.NotFoundError):
        app.channels.send_message("errors-never-created", "x")
    first = app.channels.send_message("errors", "one")
    holder.channels.clear_channel_messages(token)
    with (
        pytest.raises(aiosdk.ContinuityLostError),
        holder.channels.connect(token, after=first) as ch,
    ):
        next(iter(ch))
    app.channels.create_channel("errors")  # replaces the token
    with pytest.raises(aiosdk.TokenTimedOutError):
        holder.channels.get_channel_messages(token)
    with pytest.raises(aiosdk.TokenTimedOutError), holder.channels.connect(token) as ch:
        next(iter(ch))
