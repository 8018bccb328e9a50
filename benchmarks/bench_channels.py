"""Channels: messages per second to one subscriber, and fan-out of one message to 1,000
subscribers, against a raw grpclib server streaming the same messages on the same machine.

Usage: python benchmarks/bench_channels.py [--quick] [--bursts 20000x100,2000x4096]
       [--server-command CMD]

Starts ``aiosdk serve`` as a separate process (free ports, a temporary data directory on SQLite,
``--log-level warning``, ``--channel-queue-size`` large enough for (a)'s queue), and a raw
grpclib server in another process (this script with ``--raw-server``), both pinned to one core
and the client to another where possible. The raw server speaks the same ``Listen`` and
``Broadcast`` methods of ``aiosdk.v1.ChannelService`` with the same generated messages, and
nothing else: no database, no tokens, no acknowledgements. It prints a table:

(a) messages per second to one subscriber: N messages of S bytes queued to one channel
    (untimed), then drained by ``async with client.channels.connect(token) as ch: async for m
    in ch``, timed from before ``connect`` until the Nth message is in hand; against a raw
    ``Listen`` stream sending the same N messages of S bytes, one message per stream message,
    timed the same way. The two take turns run by run. Goal: ours / raw >= 0.8. Each run drains
    a channel of its own; all of them are filled by the same N ``broadcast`` calls, since
    queueing (one database transaction per call) is far slower than draining: its rate is shown
    for information, and it is why N is 5,000 and 1,000 by default rather than the 20,000 and
    2,000 one might pick (``--bursts`` picks others; 20,000 takes minutes to queue). Also for
    information: the live rate, messages received per second while a few concurrent
    ``send_message`` callers send to an open subscription, and the median time from a send to
    its arrival; and the CPU time per message of each server and of the client.
(b) fan-out: 1,000 channels, each with an open ``connect`` (spread over several AsyncClient
    instances, as the raw side spreads its streams over as many grpclib channels: a raw
    grpclib server keeps h2's limit of 100 concurrent streams per HTTP/2 connection, where
    ours advertises 10,000 and a client opens another connection when one is full), and one
    ``client.channels.broadcast(client_ids, message)``; each subscriber notes when the message
    is in hand, and the figures are the p50 and p99 of (arrival - start of the broadcast call)
    per round. Against a raw server holding 1,000 ``Listen`` streams over the same number of
    grpclib channels, whose ``Broadcast`` puts the message on every stream. The rounds take
    turns. Goal: raw time / ours >= 0.8.

Every figure is the median of several runs (rounds in (b)), with min and max. Progress goes to
stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import grpclib
from grpclib.client import Channel
from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream

import aiosdk
from aiosdk.proto import (
    BroadcastRequest,
    BroadcastResponse,
    ChannelMessage,
    ChannelMessages,
    ChannelPosition,
    ListenClose,
    ListenConnected,
    ListenRequest,
    ListenResponse,
    ListenStart,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    Pinning,
    ServerProcess,
    Summary,
    Table,
    default_server_command,
    plan_pinning,
    server_header,
)

GOAL_RATIO = 0.8
NAMESPACE = "bench"
LISTEN = "/aiosdk.v1.ChannelService/Listen"
BROADCAST = "/aiosdk.v1.ChannelService/Broadcast"
FANOUT_SIZE = 100  # bytes of the fan-out message
STOP = b"stop"  # the fan-out message that ends the subscribers
ROUND_TIMEOUT = 60.0


@dataclass(frozen=True)
class Plan:
    bursts: tuple[tuple[int, int], ...]  # (messages, bytes each) queued to one channel
    runs: int  # runs of each burst, per side
    senders: int  # concurrent send_message callers (queueing, and the live rate)
    live_messages: int  # messages sent in one live-rate run
    live_runs: int
    subscribers: int  # (b)
    clients: int  # (b): AsyncClient instances / grpclib channels the subscribers spread over
    rounds: int  # (b): timed rounds per side, after one warm-up round


FULL = Plan(
    bursts=((5_000, 100), (1_000, 4096)),
    runs=3,
    senders=8,
    live_messages=500,
    live_runs=3,
    subscribers=1_000,
    clients=20,
    rounds=7,
)
QUICK = Plan(
    bursts=((1_000, 100), (200, 4096)),
    runs=2,
    senders=8,
    live_messages=200,
    live_runs=1,
    subscribers=200,
    clients=4,
    rounds=3,
)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def payload(size: int, tag: int = 0) -> bytes:
    """``size`` bytes beginning with ``tag`` (8 digits)."""
    head = f"{tag:08d}".encode()
    return head + bytes(size - len(head))


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_quiet(pids: Sequence[int], *, most: float = 5.0) -> None:
    """Until the processes ``pids`` use (almost) no CPU over 100 ms, at most ``most`` seconds:
    what a server still does after a measurement (e.g. the acknowledgements of a fan-out) must
    not land on the next one, which runs on the same core."""
    if not os.path.exists("/proc/self/stat"):  # noqa: ASYNC240 - a quick check of /proc
        await asyncio.sleep(0.5)
        return
    deadline = time.monotonic() + most
    before = sum(cpu_seconds(pid) for pid in pids)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = sum(cpu_seconds(pid) for pid in pids)
        if now - before < 0.005:
            return
        before = now


# -- the raw grpclib server (its own process) --------------------------------------------------


def _one_message(offset: int, data: bytes, epoch: str) -> ListenResponse:
    """What the raw server sends per stream message: one message, as our server's batch."""
    message = ChannelMessage(offset=offset, data=data, sent_at=datetime.now(timezone.utc))
    return ListenResponse(messages=ChannelMessages(messages=[message], epoch=epoch))


class RawChannels:
    """``Listen`` and ``Broadcast`` of ChannelService, with nothing behind them.

    ``Listen``'s start token says what to do: ``burst:N:SIZE`` sends N messages of SIZE bytes,
    one per stream message, then waits for the client's ``close``; ``fanout`` registers the
    stream, which then sends whatever ``Broadcast`` hands it.
    """

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[bytes]] = set()

    def __mapping__(self) -> dict[str, Handler]:
        return {
            LISTEN: Handler(self.listen, Cardinality.STREAM_STREAM, ListenRequest, ListenResponse),
            BROADCAST: Handler(
                self.broadcast, Cardinality.UNARY_UNARY, BroadcastRequest, BroadcastResponse
            ),
        }

    async def listen(self, stream: Stream[ListenRequest, ListenResponse]) -> None:
        first = await stream.recv_message()
        if first is None or first.start is None:
            raise grpclib.GRPCError(grpclib.Status.INVALID_ARGUMENT, "start first")
        epoch = secrets.token_hex(8)
        spec = first.start.token
        connected = ListenResponse(
            connected=ListenConnected(client_id=spec, epoch=epoch, heartbeat_seconds=15.0)
        )
        if spec.startswith("burst:"):
            await stream.send_message(connected)
            _, n, size = spec.split(":")
            data = payload(int(size))
            for offset in range(1, int(n) + 1):
                await stream.send_message(_one_message(offset, data, epoch))
            while await stream.recv_message() is not None:  # until the client's close
                pass
            return
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._subscribers.add(queue)  # before `connected`: the client counts on it
        try:
            await stream.send_message(connected)
            sender = asyncio.ensure_future(self._send(stream, queue, epoch))
            try:
                while await stream.recv_message() is not None:
                    pass
            finally:
                sender.cancel()
        finally:
            self._subscribers.discard(queue)

    async def _send(
        self, stream: Stream[ListenRequest, ListenResponse], queue: asyncio.Queue[bytes], epoch: str
    ) -> None:
        offset = 0
        while True:
            data = await queue.get()
            offset += 1
            await stream.send_message(_one_message(offset, data, epoch))

    async def broadcast(self, stream: Stream[BroadcastRequest, BroadcastResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        for queue in self._subscribers:
            queue.put_nowait(request.data)
        positions = [ChannelPosition(epoch="raw", offset=1) for _ in request.client_ids]
        await stream.send_message(BroadcastResponse(positions=positions))


async def serve_raw() -> None:
    server = Server([RawChannels()])
    await server.start("127.0.0.1", 0)
    listening: Any = server._server  # grpclib keeps its asyncio.Server there
    port = listening.sockets[0].getsockname()[1]
    print(f"raw grpclib server on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


class RawServerProcess:
    """This script with ``--raw-server``, pinned like the aiosdk server."""

    def __init__(self, pinning: Pinning) -> None:
        self.argv = [sys.executable, str(Path(__file__).resolve()), "--raw-server"]
        self._pinning = pinning
        self._process: subprocess.Popen[bytes] | None = None
        self.host, self.port = "", 0

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> RawServerProcess:
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            preexec_fn=self._pinning.server_preexec(),
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode().strip()
        if not line.startswith("raw grpclib server on "):
            self.__exit__()
            raise RuntimeError(f"the raw server printed {line!r}, not its address")
        self.host, _, port = line.rpartition(" ")[2].rpartition(":")
        self.port = int(port)
        return self

    def __exit__(self, *exc: object) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def channel(self) -> Channel:
        return Channel(self.host, self.port)


# -- setup -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ours:
    """The aiosdk side: the server, the channels' owner (a user's API token), and what the
    token holders' clients carry: nothing (``holder_token`` None), as the contract has it,
    unless the probe found that a client without credentials cannot connect."""

    url: str
    owner_token: str
    holder_token: str | None

    def owner(self) -> aiosdk.AsyncClient:
        return aiosdk.AsyncClient(self.url, token=self.owner_token)

    def holder(self) -> aiosdk.AsyncClient:
        return aiosdk.AsyncClient(self.url, token=self.holder_token)


async def make_owner(server: ServerProcess) -> Ours:
    """A user who owns the channels; probe a token holder's client without credentials."""
    password = secrets.token_urlsafe(16)
    async with aiosdk.AsyncClient(server.url, token=server.token) as admin:
        await admin.admin.create_user(NAMESPACE, password=password)
    async with aiosdk.AsyncClient(server.url) as client:
        await client.login(username=NAMESPACE, password=password)
        owner_token = (await client.tokens.create("bench")).secret.reveal()
    ours = Ours(server.url, owner_token, None)
    async with ours.owner() as owner, ours.holder() as holder:
        token = await owner.channels.create_channel("probe")
        try:
            async with holder.channels.connect(token):
                pass
        except aiosdk.AuthenticationError as exc:
            progress(f"a client without credentials cannot connect ({exc}); holders log in")
            return Ours(server.url, owner_token, owner_token)
    return ours


async def gather_limited(calls: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    """Run ``calls`` with at most ``limit`` at a time; their results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))


async def send_all(
    owner: aiosdk.AsyncClient, client_id: str, n: int, size: int, senders: int
) -> float:
    """``n`` messages of ``size`` bytes to ``client_id``, ``senders`` at a time: seconds."""
    data = payload(size)
    started = time.perf_counter()
    await gather_limited([lambda: owner.channels.send_message(client_id, data)] * n, limit=senders)
    return time.perf_counter() - started


async def broadcast_all(
    owner: aiosdk.AsyncClient, client_ids: list[str], n: int, size: int, senders: int
) -> float:
    """``n`` broadcasts of ``size`` bytes to ``client_ids``, ``senders`` at a time: seconds."""
    data = payload(size)
    started = time.perf_counter()
    await gather_limited([lambda: owner.channels.broadcast(client_ids, data)] * n, limit=senders)
    return time.perf_counter() - started


# -- (a) messages per second to one subscriber -------------------------------------------------


@dataclass
class Burst:
    n: int
    size: int
    ours: Summary = field(default_factory=Summary)  # messages/s
    raw: Summary = field(default_factory=Summary)
    queueing: Summary = field(default_factory=Summary)  # broadcast calls/s
    cpu_us: dict[str, Summary] = field(default_factory=dict)  # CPU per message, by whose

    def add(self, side: str, meter: Meter) -> None:
        (self.ours if side == "aiosdk" else self.raw).add(self.n / meter.wall)
        for whose, seconds in (("server", meter.server), ("client", meter.client)):
            self.cpu_us.setdefault(f"{side} {whose}", Summary()).add(seconds / self.n * 1e6)


class Meter:
    """Wall seconds, and the CPU seconds of this process (the client) and of a server
    process, between :meth:`start` and :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.wall = self.client = self.server = 0.0

    def start(self) -> None:
        self.wall, self.client = time.perf_counter(), time.process_time()
        self.server = cpu_seconds(self.pid)

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.wall
        self.client = time.process_time() - self.client
        self.server = cpu_seconds(self.pid) - self.server


async def drain_ours(
    holder: aiosdk.AsyncClient, token: str, n: int, size: int, meter: Meter
) -> None:
    """From ``connect`` until the ``n``th message is in hand, metered."""
    got, last = 0, 0
    meter.start()
    async with holder.channels.connect(token) as ch:
        async for message in ch:
            got += 1
            if message.position.offset <= last or len(message.data) != size:
                raise RuntimeError(f"message {got}: offset {message.position.offset}, after {last}")
            last = message.position.offset
            if got == n:
                meter.stop()
                break


async def drain_raw(channel: Channel, n: int, size: int, meter: Meter) -> None:
    """From opening a raw ``Listen`` until the ``n``th message is in hand, metered."""
    got = 0
    meter.start()
    async with channel.request(
        LISTEN, Cardinality.STREAM_STREAM, ListenRequest, ListenResponse
    ) as stream:
        await stream.send_message(ListenRequest(start=ListenStart(token=f"burst:{n}:{size}")))
        while got < n:
            reply = await stream.recv_message()
            if reply is None:
                raise RuntimeError(f"the raw stream ended after {got} messages")
            if reply.messages is not None:
                for message in reply.messages.messages:
                    got += 1
                    if message.offset != got or len(message.data) != size:
                        raise RuntimeError(f"raw message {got}: offset {message.offset}")
        meter.stop()
        await stream.send_message(ListenRequest(close=ListenClose()), end=True)
        while await stream.recv_message() is not None:
            pass


async def wait_drained(holder: aiosdk.AsyncClient, token: str) -> None:
    """Until the channel has nothing pending (the acks of a drain have landed)."""
    deadline = time.monotonic() + 10
    while await holder.channels.has_channel_messages(token):
        if time.monotonic() > deadline:
            raise RuntimeError("the channel still has pending messages 10 s after a drain")
        await asyncio.sleep(0.05)


async def bench_bursts(
    server: ServerProcess, raw: RawServerProcess, plan: Plan, ours: Ours
) -> list[Burst]:
    results = [Burst(n, size) for n, size in plan.bursts]
    channel = raw.channel()
    try:
        async with (
            ours.owner() as owner,
            ours.holder() as holder,
        ):
            for burst in results:
                # A warm-up of each side, checked like every run.
                warm = f"warm-{burst.size}"
                token = await owner.channels.create_channel(warm)
                await send_all(owner, warm, 100, burst.size, plan.senders)
                await drain_ours(holder, token, 100, burst.size, Meter(server.pid))
                await drain_raw(channel, 100, burst.size, Meter(raw.pid))
                # One channel per run, all filled by the same broadcasts: N broadcasts
                # instead of N sends per run (queueing is the slow part, and untimed).
                client_ids = [f"rate-{burst.size}-{run}" for run in range(plan.runs)]
                tokens = [await owner.channels.create_channel(c) for c in client_ids]
                seconds = await broadcast_all(owner, client_ids, burst.n, burst.size, plan.senders)
                burst.queueing.add(burst.n / seconds)
                progress(
                    f"(a) queued {burst.n} x {burst.size} B to {plan.runs} channels in"
                    f" {seconds:.1f} s"
                )
                for run, token in enumerate(tokens):

                    async def by_sdk(b: Burst = burst, t: str = token) -> None:
                        meter = Meter(server.pid)
                        await drain_ours(holder, t, b.n, b.size, meter)
                        b.add("aiosdk", meter)

                    async def by_grpclib(b: Burst = burst) -> None:
                        meter = Meter(raw.pid)
                        await drain_raw(channel, b.n, b.size, meter)
                        b.add("grpclib", meter)

                    order = (by_sdk, by_grpclib)
                    for side in order if run % 2 == 0 else order[::-1]:
                        await wait_quiet([server.pid, raw.pid])
                        gc.collect()
                        await side()
                    progress(
                        f"(a) {burst.n} x {burst.size} B run {run + 1}/{plan.runs}: ours"
                        f" {burst.ours.values[-1]:,.0f}/s, raw {burst.raw.values[-1]:,.0f}/s"
                    )
                for token in tokens:
                    await wait_drained(holder, token)
    finally:
        channel.close()
    return results


@dataclass
class Live:
    received: Summary = field(default_factory=Summary)  # messages/s at the subscriber
    sent: Summary = field(default_factory=Summary)  # send_message calls/s
    latency_ms: Summary = field(default_factory=Summary)  # median send start -> arrival


async def live_run(
    owner: aiosdk.AsyncClient,
    holder: aiosdk.AsyncClient,
    client_id: str,
    token: str,
    n: int,
    senders: int,
) -> tuple[float, float, float]:
    """``n`` messages sent by ``senders`` concurrent callers to an open subscription: messages
    received per second, send_message calls per second, median seconds from send to arrival."""
    sent_at: dict[int, float] = {}
    arrived: dict[int, float] = {}
    ready = asyncio.Event()

    async def listen() -> None:
        async with holder.channels.connect(token) as ch:
            ready.set()
            async for message in ch:
                arrived[int(message.data[:8])] = time.perf_counter()
                if len(arrived) == n:
                    break

    async def send(tags: range) -> None:
        for tag in tags:
            sent_at[tag] = time.perf_counter()
            await owner.channels.send_message(client_id, payload(100, tag))

    listener = asyncio.ensure_future(listen())
    await ready.wait()
    await asyncio.sleep(0.2)  # the stream is open on the server
    gc.collect()
    started = time.perf_counter()
    per = n // senders
    await asyncio.gather(
        *(send(range(i * per, n if i == senders - 1 else (i + 1) * per)) for i in range(senders))
    )
    sends_done = time.perf_counter()
    await asyncio.wait_for(listener, ROUND_TIMEOUT)
    delays = [arrived[tag] - sent_at[tag] for tag in range(n)]
    return (
        n / (max(arrived.values()) - started),
        n / (sends_done - started),
        percentile(delays, 50),
    )


async def bench_live(plan: Plan, ours: Ours) -> Live:
    """The live rate: an open subscription, ``plan.senders`` concurrent send_message callers."""
    live = Live()
    async with (
        ours.owner() as owner,
        ours.holder() as holder,
    ):
        token = await owner.channels.create_channel("live")
        for run in range(-1, plan.live_runs):  # run -1: a warm-up
            n = 100 if run < 0 else plan.live_messages
            received, sent, latency = await live_run(owner, holder, "live", token, n, plan.senders)
            await wait_drained(holder, token)
            if run < 0:
                continue
            live.received.add(received)
            live.sent.add(sent)
            live.latency_ms.add(latency * 1e3)
            progress(
                f"(a) live run {run + 1}/{plan.live_runs}: received {received:,.0f}/s,"
                f" sent {sent:,.0f}/s"
            )
    return live


# -- (b) fan-out -------------------------------------------------------------------------------


class Arrivals:
    """When each subscriber had the current round's message."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.round = -1
        self.times: list[float] = []
        self.complete = asyncio.Event()
        self.stopped = 0
        self.connected = 0
        self.all_connected = asyncio.Event()

    def connect(self) -> None:
        """A subscriber's stream is open."""
        self.connected += 1
        if self.connected == self.expected:
            self.all_connected.set()

    async def wait_connected(self, name: str) -> None:
        try:
            await asyncio.wait_for(self.all_connected.wait(), ROUND_TIMEOUT)
        except TimeoutError:
            raise RuntimeError(
                f"{name}: {self.connected} of {self.expected} subscriptions open after"
                f" {ROUND_TIMEOUT:.0f} s"
            ) from None

    def start(self, round_: int) -> None:
        self.round, self.times = round_, []
        self.complete.clear()

    def hit(self, data: bytes) -> bool:
        """Note ``data``'s arrival; False when it says stop."""
        now = time.perf_counter()
        if data == STOP:
            self.stopped += 1
            return False
        if int(data[:8]) == self.round:
            self.times.append(now)
            if len(self.times) == self.expected:
                self.complete.set()
        return True


@dataclass
class FanOut:
    p50_ms: Summary = field(default_factory=Summary)
    p99_ms: Summary = field(default_factory=Summary)
    call_ms: Summary = field(default_factory=Summary)  # the broadcast call's own latency
    server_cpu_ms: Summary = field(default_factory=Summary)  # per round, until all have it
    client_cpu_ms: Summary = field(default_factory=Summary)


class OursFanOut:
    name = "aiosdk"

    def __init__(self, ours: Ours, plan: Plan, pid: int) -> None:
        self._ours, self._plan, self.pid = ours, plan, pid
        self.arrivals = Arrivals(plan.subscribers)
        self.client_ids = [f"fan-{i:04d}" for i in range(plan.subscribers)]
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        self.owner = self._ours.owner()
        self.holders = [self._ours.holder() for _ in range(self._plan.clients)]
        tokens = await gather_limited(
            [partial(self.owner.channels.create_channel, c) for c in self.client_ids], 16
        )
        for i, token in enumerate(tokens):
            holder = self.holders[i % len(self.holders)]
            self._tasks.append(asyncio.ensure_future(self._subscribe(holder, token)))
        await self.arrivals.wait_connected(self.name)

    async def _subscribe(self, holder: aiosdk.AsyncClient, token: str) -> None:
        async with holder.channels.connect(token) as ch:
            self.arrivals.connect()
            async for message in ch:
                assert isinstance(message.data, bytes)
                if not self.arrivals.hit(message.data):
                    break

    async def broadcast(self, data: bytes) -> None:
        await self.owner.channels.broadcast(self.client_ids, data)

    async def close(self) -> None:
        await self.broadcast(STOP)
        await asyncio.wait_for(asyncio.gather(*self._tasks), ROUND_TIMEOUT)
        for client in (self.owner, *self.holders):
            await client.aclose()


class RawFanOut:
    name = "grpclib"

    def __init__(self, raw: RawServerProcess, plan: Plan) -> None:
        self._raw, self._plan, self.pid = raw, plan, raw.pid
        self.arrivals = Arrivals(plan.subscribers)
        self.client_ids = [f"fan-{i:04d}" for i in range(plan.subscribers)]
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        self.channels = [self._raw.channel() for _ in range(self._plan.clients + 1)]
        self.sender = self.channels[-1]  # the broadcaster's own connection, as the owner's
        for i in range(self._plan.subscribers):
            channel = self.channels[i % self._plan.clients]
            self._tasks.append(asyncio.ensure_future(self._subscribe(channel)))
        await self.arrivals.wait_connected(self.name)

    async def _subscribe(self, channel: Channel) -> None:
        async with channel.request(
            LISTEN, Cardinality.STREAM_STREAM, ListenRequest, ListenResponse
        ) as stream:
            await stream.send_message(ListenRequest(start=ListenStart(token="fanout")))
            while (reply := await stream.recv_message()) is not None:
                if reply.connected is not None:
                    self.arrivals.connect()  # registered on the raw server: it sent this after
                if reply.messages is None:
                    continue
                if not all(self.arrivals.hit(m.data) for m in reply.messages.messages):
                    break
            await stream.send_message(ListenRequest(close=ListenClose()), end=True)
            while await stream.recv_message() is not None:
                pass

    async def broadcast(self, data: bytes) -> None:
        async with self.sender.request(
            BROADCAST, Cardinality.UNARY_UNARY, BroadcastRequest, BroadcastResponse
        ) as stream:
            request = BroadcastRequest(client_ids=self.client_ids, data=data)
            await stream.send_message(request, end=True)
            await stream.recv_message()

    async def close(self) -> None:
        await self.broadcast(STOP)
        await asyncio.wait_for(asyncio.gather(*self._tasks), ROUND_TIMEOUT)
        for channel in self.channels:
            channel.close()


async def fan_round(side: OursFanOut | RawFanOut, round_: int, figures: FanOut | None) -> None:
    arrivals = side.arrivals
    arrivals.start(round_)
    gc.collect()
    meter = Meter(side.pid)
    meter.start()
    started = time.perf_counter()
    await side.broadcast(payload(FANOUT_SIZE, round_))
    called = time.perf_counter()
    try:
        await asyncio.wait_for(arrivals.complete.wait(), ROUND_TIMEOUT)
    except TimeoutError:
        raise RuntimeError(
            f"{side.name}: round {round_}: {len(arrivals.times)} of {arrivals.expected}"
            f" subscribers had the message after {ROUND_TIMEOUT:.0f} s"
        ) from None
    meter.stop()
    if figures is not None:
        delays = [t - started for t in arrivals.times]
        figures.p50_ms.add(percentile(delays, 50) * 1e3)
        figures.p99_ms.add(percentile(delays, 99) * 1e3)
        figures.call_ms.add((called - started) * 1e3)
        figures.server_cpu_ms.add(meter.server * 1e3)
        figures.client_cpu_ms.add(meter.client * 1e3)


async def bench_fanout(
    server: ServerProcess, raw: RawServerProcess, plan: Plan, ours: Ours
) -> dict[str, FanOut]:
    sides: list[OursFanOut | RawFanOut] = [
        OursFanOut(ours, plan, server.pid),
        RawFanOut(raw, plan),
    ]
    results = {side.name: FanOut() for side in sides}
    quiet = [server.pid, raw.pid]
    for side in sides:
        progress(f"(b) {side.name}: opening {plan.subscribers} subscriptions")
        await side.open()
    for side in sides:
        await fan_round(side, 0, None)  # warm-up: every subscription is open after it
    for round_ in range(1, plan.rounds + 1):
        for side in sides if round_ % 2 else sides[::-1]:
            await wait_quiet(quiet)
            await fan_round(side, round_, results[side.name])
        progress(
            f"(b) round {round_}/{plan.rounds}: "
            + ", ".join(
                f"{name} p50 {r.p50_ms.values[-1]:.1f} ms p99 {r.p99_ms.values[-1]:.1f} ms"
                for name, r in results.items()
            )
        )
    for side in sides:
        await side.close()
    return results


# -- the table ---------------------------------------------------------------------------------


def report(
    table: Table, plan: Plan, bursts: list[Burst], live: Live, fanout: dict[str, FanOut]
) -> None:
    table.title(
        "(a) messages/s to one subscriber: N queued, then drained by"
        " `async with connect(token) as ch: async for m in ch`"
    )
    table.text(
        "    raw: a grpclib Listen stream sending the same N messages, one per stream message"
    )
    table.header("messages/s")
    for burst in bursts:
        what = f"{burst.n:,} x {burst.size:,} B"
        table.row(f"aiosdk  {what}", burst.ours, digits=0)
        table.row(f"grpclib {what}", burst.raw, digits=0)
        table.ratio(
            f"  ratio aiosdk / grpclib, {what}",
            burst.ours.median / burst.raw.median,
            GOAL_RATIO,
            at_least=True,
        )
    table.header("us of CPU per message, in the timed stretch")
    for burst in bursts:
        for whose, summary in burst.cpu_us.items():
            table.row(f"(info) {burst.size:,} B: {whose}", summary)
    table.header("calls/s, messages/s, ms")
    for burst in bursts:
        table.row(
            f"(info) queueing {burst.size:,} B: broadcast calls/s",
            burst.queueing,
            digits=0,
            note=f"(to {plan.runs} ids, {plan.senders} callers)",
        )
    table.row(
        f"(info) live: received/s, {plan.senders} x {plan.live_messages // plan.senders} sends",
        live.received,
        digits=0,
    )
    table.row("(info) live: send_message calls/s meanwhile", live.sent, digits=0)
    table.row("(info) live: median send -> arrival, ms", live.latency_ms, digits=1)
    table.title(
        f"(b) fan-out of one {FANOUT_SIZE} B message to {plan.subscribers:,} subscribers"
        f" ({plan.subscribers:,} channels, over {plan.clients} client connections);"
        f" {plan.rounds} rounds"
    )
    table.text(
        "    aiosdk: client.channels.broadcast(client_ids, message);"
        " raw: a grpclib Broadcast that puts it on every open Listen stream"
    )
    table.header("ms from the send until a subscriber has it")
    ours, theirs = fanout["aiosdk"], fanout["grpclib"]
    table.row("aiosdk  p50", ours.p50_ms)
    table.row("grpclib p50", theirs.p50_ms)
    table.ratio(
        "  ratio grpclib / aiosdk, p50",
        theirs.p50_ms.median / ours.p50_ms.median,
        GOAL_RATIO,
        at_least=True,
    )
    table.row("aiosdk  p99", ours.p99_ms)
    table.row("grpclib p99", theirs.p99_ms)
    table.ratio(
        "  ratio grpclib / aiosdk, p99",
        theirs.p99_ms.median / ours.p99_ms.median,
        GOAL_RATIO,
        at_least=True,
    )
    table.row("(info) aiosdk  broadcast call returned", ours.call_ms)
    table.row("(info) grpclib broadcast call returned", theirs.call_ms)
    table.header("ms of CPU per round, until all have it")
    table.row("(info) aiosdk  server", ours.server_cpu_ms)
    table.row("(info) aiosdk  client (this process)", ours.client_cpu_ms)
    table.row("(info) grpclib server", theirs.server_cpu_ms)
    table.row("(info) grpclib client (this process)", theirs.client_cpu_ms)


async def run_all(
    server: ServerProcess, raw: RawServerProcess, pinning: Pinning, plan: Plan, quick: bool
) -> Table:
    table = Table(label_width=56)
    server_header(
        table,
        "aiosdk channels benchmark",
        server,
        pinning,
        runs=plan.runs,
        quick=quick,
        versions=f", aiosdk {aiosdk.__version__}, grpclib {grpclib.__version__}",
        figures_note=f" ({plan.live_runs} in the live rows, {plan.rounds} rounds in (b))",
    )
    table.text(f"raw:    {shlex.join(raw.argv)} (pid {raw.pid}), gRPC {raw.host}:{raw.port}")
    ours = await make_owner(server)
    if ours.holder_token is not None:
        table.text(
            "NOTE: a client without credentials could not connect (GET /api/v1/ wants them):"
            " the holders' clients carry the owner's API token"
        )
    progress("(a) messages per second to one subscriber")
    bursts = await bench_bursts(server, raw, plan, ours)
    progress("(a) live rate")
    live = await bench_live(plan, ours)
    progress("(b) fan-out")
    fanout = await bench_fanout(server, raw, plan, ours)
    report(table, plan, bursts, live, fanout)
    return table


def bursts_arg(text: str) -> tuple[tuple[int, int], ...]:
    """``5000x100,1000x4096`` -> ((5000, 100), (1000, 4096))."""
    try:
        pairs = tuple(
            (int(n), int(size)) for n, size in (item.split("x") for item in text.split(","))
        )
    except ValueError:
        raise argparse.ArgumentTypeError(f"not NxSIZE,...: {text!r}") from None
    if any(n < 1 or not 8 <= size <= 32 * 1024 for n, size in pairs):
        raise argparse.ArgumentTypeError("N at least 1, SIZE from 8 to 32768 bytes")
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument(
        "--server-command",
        help="the server command, before its options (default: aiosdk serve)",
    )
    parser.add_argument(
        "--bursts",
        type=bursts_arg,
        metavar="NxSIZE,...",
        help="(a)'s messages and their size in bytes (default: 5000x100,1000x4096)",
    )
    parser.add_argument("--raw-server", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.raw_server:
        asyncio.run(serve_raw())
        return 0
    plan = QUICK if args.quick else FULL
    if args.bursts:
        plan = replace(plan, bursts=args.bursts)
    pinning = plan_pinning()
    command = shlex.split(args.server_command) if args.server_command else default_server_command()
    queue_size = max(n for n, _ in plan.bursts) + 1000
    extra = ["--log-level", "warning", "--channel-queue-size", str(queue_size)]
    started = time.perf_counter()
    pinning.pin_client()  # before any thread starts: every client thread inherits the core
    with ServerProcess(command, pinning, extra) as server, RawServerProcess(pinning) as raw:
        progress(
            f"server up at {server.url} (pid {server.pid}), raw at {raw.host}:{raw.port}"
            f" (pid {raw.pid}); {pinning.describe()}"
        )
        table = asyncio.run(run_all(server, raw, pinning, plan, args.quick))
    table.text("")
    table.text(f"total time {time.perf_counter() - started:.0f} s")
    print(table.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
