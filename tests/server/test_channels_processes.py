"""Channels across two ``aiosdk serve`` processes sharing one PostgreSQL database and one keyring:
a message sent through one reaches a subscriber connected to the other, presence events of a
client of one are streamed by the other (a clean disconnect at once, a process killed under its
client after the grace), and pops from both at once give each message to one caller.

Skipped without PostgreSQL (``AIOSDK_TEST_DATABASE_URL``, or a local trust-auth server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiosdk
from aiosdk.server.keyring import create_keyring_file

from .conftest import POSTGRES_URL_ENV, fresh_postgres_database

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

ADMIN_TOKEN = "channels-two-processes-admin-token"
GRACE = 0.5  # --channel-grace: a dead process's clients are disconnected this soon
WITHIN = 30.0  # a hang guard, not a timing assertion


@dataclass
class Process:
    process: asyncio.subprocess.Process
    url: str

    def kill(self) -> None:
        self.process.kill()


@asynccontextmanager
async def serve(data_dir: Path, database_url: str, keyring: Path) -> AsyncIterator[Process]:
    """``aiosdk serve`` on free ports, the shared database and keyring; stopped by SIGINT."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiosdk.cli",
        "serve",
        "--data",
        str(data_dir),
        "--database",
        database_url,
        "--keyring",
        str(keyring),
        "--admin-token",
        ADMIN_TOKEN,
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--log-level",
        "warning",
        "--channel-grace",
        str(GRACE),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    output = ""
    url = None
    try:
        with anyio.fail_after(WITHIN):
            while True:
                line = (await process.stdout.readline()).decode()
                assert line, f"aiosdk serve exited early: {output!r}"
                output += line
                name, _, value = line.partition(": ")
                if name == "URL":
                    url = value.strip()
                if name.startswith("Admin token"):
                    break
        assert url is not None, output
        yield Process(process, url)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # (killed by the test)
                process.send_signal(signal.SIGINT)
        with anyio.fail_after(WITHIN):
            await process.communicate()


@dataclass
class Shared:
    """Two server processes on one database and keyring."""

    database_url: str
    keyring: Path
    tmp: Path
    one: Process
    two: Process


@dataclass
class Two:
    """:class:`Shared`, and a new user (the application) logged in through each process."""

    shared: Shared
    app_one: aiosdk.AsyncClient
    app_two: aiosdk.AsyncClient

    @property
    def one(self) -> Process:
        return self.shared.one

    @property
    def two(self) -> Process:
        return self.shared.two


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    base_url = os.environ.get(POSTGRES_URL_ENV)
    if not base_url:
        pytest.skip(f"two server processes need PostgreSQL: {POSTGRES_URL_ENV} is unset or empty")
    tmp = tmp_path_factory.mktemp("two-processes")
    keyring = tmp / "keyring.json"
    await anyio.to_thread.run_sync(create_keyring_file, keyring)
    async with (
        fresh_postgres_database(base_url) as url,
        serve(tmp / "one", url, keyring) as one,  # (first: it upgrades the schema)
        serve(tmp / "two", url, keyring) as two,
    ):
        yield Shared(url, keyring, tmp, one, two)


@pytest.fixture
async def two(shared: Shared) -> AsyncIterator[Two]:
    """A new user (no password: nothing to hash) with an API token, used through each process."""
    name = f"chproc-{uuid.uuid4().hex[:12]}"
    async with aiosdk.AsyncClient(shared.one.url, token=ADMIN_TOKEN) as admin:
        await admin.admin.create_user(name)
        made = await admin._ctx.request("POST", "/tokens", json={"label": "app", "owner": name})
    token = made.json()["token"]
    async with (
        aiosdk.AsyncClient(shared.one.url, token=token) as app_one,
        aiosdk.AsyncClient(shared.two.url, token=token) as app_two,
    ):
        yield Two(shared, app_one, app_two)


async def next_message(ch: Any) -> Any:
    with anyio.fail_after(WITHIN):
        return await ch.__anext__()


async def presence(app: aiosdk.AsyncClient, until: Callable[[list[Any]], bool]) -> list[Any]:
    events: list[Any] = []
    with anyio.fail_after(WITHIN):
        async with aclosing(app.channels.presence(after=0)) as stream:  # type: ignore[type-var]
            async for event in stream:
                events.append(event)
                if until(events):
                    break
    return events


def kinds(events: list[Any]) -> list[tuple[str, str, bool]]:
    return [(e.client_id, e.kind, e.clean) for e in events]


async def test_a_message_sent_through_one_reaches_a_subscriber_on_the_other(two: Two) -> None:
    token = await two.app_one.channels.create_channel("across")  # signed by one
    async with (
        aiosdk.AsyncClient(two.two.url) as holder,  # ... verified by two
        holder.channels.connect(token) as ch,
    ):
        await two.app_one.channels.send_message("across", "from one")
        first = await next_message(ch)
        await two.app_two.channels.send_message("across", "from two")
        await two.app_one.channels.send_message("across", b"from one again")
        rest = [await next_message(ch), await next_message(ch)]
    assert [m.data for m in [first, *rest]] == ["from one", "from two", b"from one again"]
    assert [m.position.offset for m in [first, *rest]] == [1, 2, 3]
    # and the other way round: subscribed on one, sent through two
    async with (
        aiosdk.AsyncClient(two.one.url) as holder,
        holder.channels.connect(token) as ch,
    ):
        await two.app_two.channels.send_message("across", "two to one")
        got = await next_message(ch)
    assert got.data == "two to one"


async def test_presence_across_processes(two: Two) -> None:
    token = await two.app_one.channels.create_channel("seen")
    await two.app_one.channels.send_message("seen", "hi")
    async with (
        aiosdk.AsyncClient(two.two.url) as holder,
        holder.channels.connect(token) as ch,
    ):
        await next_message(ch)
    events = await presence(two.app_one, lambda e: len(e) >= 2)  # streamed by one
    assert kinds(events) == [("seen", "connected", False), ("seen", "disconnected", True)]


async def test_a_killed_process_s_client_is_a_dirty_disconnect_seen_by_the_other(
    two: Two,
) -> None:
    token = await two.app_one.channels.create_channel("orphan")
    await two.app_one.channels.send_message("orphan", "hi")

    async def listen(holder: aiosdk.AsyncClient, doomed: Process) -> None:
        async with holder.channels.connect(token) as ch:
            await next_message(ch)
            doomed.kill()  # no goodbye: the stream's connection just dies
            await next_message(ch)

    three = serve(two.shared.tmp / "three", two.shared.database_url, two.shared.keyring)
    async with three as doomed, aiosdk.AsyncClient(doomed.url, retry_mode="disabled") as holder:
        with pytest.raises((aiosdk.TransportError, aiosdk.ServiceUnavailableError)):
            await listen(holder, doomed)
    events = await presence(two.app_one, lambda e: len(e) >= 2)
    assert kinds(events) == [("orphan", "connected", False), ("orphan", "disconnected", False)]


async def test_pops_through_both_processes_give_each_message_to_one_caller(two: Two) -> None:
    token = await two.app_one.channels.create_channel("race")
    sent = [f"r{i}" for i in range(40)]
    await two.app_one.channels.broadcast(["race"], "r0")
    for data in sent[1:]:
        await two.app_two.channels.send_message("race", data)
    popped: list[str | bytes] = []
    async with (
        aiosdk.AsyncClient(two.one.url) as via_one,
        aiosdk.AsyncClient(two.two.url) as via_two,
    ):

        async def caller(n: int) -> None:
            channels = (via_one if n % 2 else via_two).channels
            pop = (
                channels.connect_and_pop_first_message if n % 4 < 2 else channels.pop_first_message
            )
            while (message := await pop(token)) is not None:
                popped.append(message)

        with anyio.fail_after(WITHIN):
            async with anyio.create_task_group() as tg:
                for n in range(12):
                    tg.start_soon(caller, n)
    assert sorted(popped) == sorted(sent)
