"""Sessions and tickets through the blocking facade, against the real server: the issue's
snippet with ``with client.session() as s``, one session used from many threads at once, a
subscription iterated and left, close releasing everything, and errors the same as async."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest

import aiosdk
from aiosdk._core import portal
from aiosdk._sync.testing import Accounts
from aiosdk.catalog.queries import Key
from aiosdk.tickets import ApplicationTicket, ExportTicket, ScopeTicket, ServerObject, SharedTicket

WITHIN = 15.0


def _frame(rows: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "t": rng.permutation(rows).astype(np.int64),
            "v": rng.uniform(0, 10, rows),
            "k": (np.arange(rows) % 5).astype(np.int64),
        }
    )


@pytest.fixture
def alice(aiosdk_accounts_sync: Accounts) -> tuple[aiosdk.Client, str, pd.DataFrame]:
    """alice's client, her ``<alice>/experiments/run42/events`` table and its frame."""
    user = aiosdk_accounts_sync.user("alice")
    client = aiosdk_accounts_sync.client(user)
    client.catalog.create_container(f"{user.username}/experiments")
    run = client.catalog.create_container(f"{user.username}/experiments/run42")
    frame = _frame()
    run.write_dataframe(frame, key="events")
    return client, f"{user.username}/experiments/run42/events", frame


def _ticket_node(client: aiosdk.Client, path: str) -> Any:
    """``GET /catalog/nodes/<path>`` through the facade's loop (a ticket path is no catalog
    path the client builds)."""
    request = client._async._ctx.request("GET", f"/catalog/nodes/{path}")
    return portal.finished(request).result().json()


def test_the_issue_snippet_through_the_facade(
    alice: tuple[aiosdk.Client, str, pd.DataFrame], aiosdk_accounts_sync: Accounts
) -> None:
    client, path, frame = alice
    name = aiosdk_accounts_sync.name("latest").replace("-", "_")
    with client.session() as s:
        t = s.export(path)
        assert isinstance(t, ExportTicket)
        view = s.query(t, where=Key("v") > 3, columns=["t", "v"], sort="-t", head=1000)
        df = s.open(view).read()
        expected = frame[frame.v > 3].sort_values("t", ascending=False)[["t", "v"]]
        pd.testing.assert_frame_equal(df, expected.reset_index(drop=True))
        shared = SharedTicket.random_ticket()
        s.publish(view, shared)
        s.bind(name, view)
        app = s.fetch(ApplicationTicket.app_ticket("stats", "summary"))
        assert list(s.open(app).read().columns) == ["namespace", "structure_family", "nodes"]
        obj = s.fetch_object(
            ServerObject(type="Counter", ticket=ApplicationTicket.app_ticket("stats", "counter"))
        )
        before = obj.get()["value"]
        assert obj.invoke("increment", by=3) == before + 3
        table = client.catalog.get(path)
        stop = threading.Event()

        def change() -> None:  # until the subscription, open by then, sees one
            n = 0
            while not stop.wait(0.2):
                table.update_metadata({"n": n})
                n += 1

        changer = threading.Thread(target=change)
        changer.start()
        try:
            for got in s.subscribe(t):
                assert got.kind == "updated"
                break
        finally:
            stop.set()
            changer.join(WITHIN)
        s.release(t)
        with pytest.raises(aiosdk.NotFoundError):
            s.query(t, head=1)
        view_path = s.info(view).path
        _ticket_node(client, view_path)
    assert s.closed
    with pytest.raises(aiosdk.NotFoundError):
        _ticket_node(client, view_path)
    with pytest.raises(aiosdk.SessionClosedError):
        s.export(path)
    with client.session() as other:
        with pytest.raises(aiosdk.NotFoundError):
            other.fetch(shared)
        bound = other.fetch(ScopeTicket.scope_ticket(name))
        pd.testing.assert_frame_equal(other.open(bound).read(), expected.reset_index(drop=True))


def test_one_session_from_many_threads(alice: tuple[aiosdk.Client, str, pd.DataFrame]) -> None:
    client, path, frame = alice
    with client.session() as s:

        def work(k: int) -> tuple[int, int, pd.DataFrame]:
            t = s.export(path)
            view = s.query(t, where=Key("k") == k % 5)
            got = s.open(view).read()
            s.release(t)
            return t.number, view.number, got

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(24)))
        numbers = [n for t, v, _ in results for n in (t, v)]
        assert len(set(numbers)) == len(numbers) == 48  # every thread's numbers its own
        for k, (_t, _v, got) in enumerate(results):
            want = frame[frame.k == k % 5].reset_index(drop=True)
            pd.testing.assert_frame_equal(got, want)


def test_a_short_ttl_session_kept_alive_while_a_thread_blocks(
    alice: tuple[aiosdk.Client, str, pd.DataFrame],
) -> None:
    """The keep-alive runs on the facade's loop: a caller busy elsewhere does not starve it."""
    client, path, _frame = alice
    with client.session(ttl=2) as s:
        t = s.export(path)
        time.sleep(3 * s.ttl)  # this thread blocks for three lifetimes (not in an event loop)
        assert len(s.open(s.query(t, head=4)).read()) == 4


def test_errors_are_the_async_ones(alice: tuple[aiosdk.Client, str, pd.DataFrame]) -> None:
    client, path, _frame = alice
    with client.session() as s:
        t = s.export(path)
        with pytest.raises(aiosdk.BadRequestError):
            s.query(t, columns=["nope"])
        with pytest.raises(aiosdk.NotFoundError):
            s.export(f"{path}-missing")
        with pytest.raises(aiosdk.NotFoundError):
            s.fetch(SharedTicket.random_ticket())
        with pytest.raises(aiosdk.MalformedTicketError):
            ExportTicket(b"nonsense")
        s.release(t)
        s.release(t)  # releasing again does nothing
        with pytest.raises(aiosdk.NotFoundError):  # a number never used
            s.release(ExportTicket.export_ticket(999_999))
