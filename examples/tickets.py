"""Sessions and tickets: export a table, query it on the server, read the result by ticket,
share it with another user, bind a scope variable, use an application's fields, watch an
export change, release it; then the same through the blocking facade.

Needs the dataframe extra: pip install 'aiosdk[dataframe]'
Run: python examples/tickets.py
"""

from __future__ import annotations

import asyncio
import secrets

import numpy as np
import pandas as pd

import aiosdk
from aiosdk import ApplicationTicket, Key, ServerObject


async def main() -> None:
    async with aiosdk.embedded() as admin:
        password = secrets.token_urlsafe(16)  # a real program would prompt for it (getpass)
        for user in ("alice", "bob"):
            await admin.admin.create_user(user, password=password)
        async with aiosdk.AsyncClient(admin.url) as alice, aiosdk.AsyncClient(admin.url) as bob:
            await alice.login(username="alice", password=password)
            await bob.login(username="bob", password=password)
            grp = await alice.catalog.create_container("alice/experiments")
            events = pd.DataFrame({"t": np.arange(1000), "v": np.sin(np.arange(1000) / 50.0)})
            table = await grp.write_dataframe(events, key="events")

            async with alice.session() as s:  # kept alive in the background
                t = await s.export("alice/experiments/events")
                view = await s.query(t, where=Key("v") > 0.9, columns=["t", "v"], sort="-v", head=5)
                top = await s.open(view).read()  # by ticket, over the same data path
                expected = events[events.v > 0.9].sort_values("v", ascending=False).head(5)
                print(f"top rows computed on the server: {top.t.tolist()}")
                print(f"equal to pandas': {top.t.tolist() == expected.t.tolist()}")

                # Another user's session fetches a shared ticket only with read access.
                shared = await s.publish(view)
                async with bob.session() as other:
                    try:
                        await other.fetch(shared)
                    except aiosdk.PermissionDeniedError:
                        print("bob may not fetch it without read access")
                    await grp.share("bob", actions=["read"])
                    mine = await other.fetch(shared)
                    print(f"bob fetched {len(await other.open(mine).read())} rows")

                scope = await s.bind("latest_events", view)  # a global name, for those allowed
                print(f"bound {scope!r}; fetched again as {await s.fetch(scope)!r}")

                apps = await s.applications()
                print(f"applications: {[(a.id, [f.name for f in a.fields]) for a in apps]}")
                summary = await s.fetch(ApplicationTicket.app_ticket("stats", "summary"))
                print(f"stats summary: {(await s.open(summary).read()).to_dict('records')}")
                counter = await s.fetch_object(
                    ServerObject("Counter", ApplicationTicket.app_ticket("stats", "counter"))
                )
                print(f"counter: {await counter.invoke('increment', by=2)}")

                # Changes of an export (since it was made) are pushed; the subscription ends
                # once it is released.
                kinds: list[str] = []
                changed = asyncio.Event()

                async def watch() -> None:
                    async for change in s.subscribe(t):
                        kinds.append(change.kind)
                        changed.set()

                watcher = asyncio.create_task(watch())
                await table.append_partition(events.iloc[:10])
                await changed.wait()
                node = s.open(t)  # the export's node, read by ticket
                await s.release(t)
                await watcher
                print(f"changes of the export: {kinds}")
                try:
                    await node.read()
                except aiosdk.NotFoundError:
                    print("a released export is gone: NotFoundError")
            try:
                await s.export("alice/experiments/events")
            except aiosdk.SessionClosedError:
                print("the session is closed: everything it exported was released")


def blocking() -> None:
    with aiosdk.Client.embedded() as client:
        client.admin.create_user("carol")
        grp = client.catalog.create_container("carol/data")
        grp.write_array(np.arange(12.0).reshape(3, 4), key="a")
        with client.session() as s:
            t = s.export("carol/data/a")
            total = s.query(t, slice=np.s_[:, 1:], reduce="sum", axis=0)
            print(f"blocking: {s.open(total).read().tolist()} {type(s).__name__}")


if __name__ == "__main__":
    asyncio.run(main())
    blocking()
