"""The catalog: containers, metadata, views, search, sharing, watching, listings.

Run: python examples/catalog.py
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import aiosdk
from aiosdk import DESCENDING, Key


async def main() -> None:
    async with aiosdk.embedded() as admin:  # the embedded server, with its admin token
        password = secrets.token_urlsafe(16)  # a real program would prompt for it (getpass)
        await admin.admin.create_user("alice", password=password)
        await admin.admin.create_user("bob", password=password)
        async with aiosdk.AsyncClient(admin.url) as alice, aiosdk.AsyncClient(admin.url) as bob:
            await alice.login(username="alice", password=password)
            await bob.login(username="bob", password=password)
            root = alice.catalog  # the root container: namespaces at the top
            print(f"alice sees: {[key async for key in root]}")
            grp = await root.create_container(
                "alice/experiments", metadata={"pi": "alice"}, specs=["run"]
            )

            # Watch the container while it fills: a gRPC stream of its children's changes.
            events: list[str] = []
            seen_all = asyncio.Event()

            async def watch() -> None:
                async for event in grp.watch(after=0):  # from its first event
                    events.append(f"{event.kind} {event.key}")
                    if len(events) == 6:  # five runs created, one updated
                        seen_all.set()

            watcher = asyncio.create_task(watch())

            for i, color in enumerate(["red", "blue", "red", "green", "red"]):
                await grp.create_container(
                    f"run{i}", metadata={"color": color, "temperature": 20 + i}
                )
            print(f"{await grp.count()} runs; the last: {(await grp.values()[-1]).key}")
            print(f"first two keys: {await grp.keys().head(2)}")

            reds = grp.search(Key("color") == "red").sort(("temperature", DESCENDING))
            print(f"red runs, hottest first: {[key async for key in reds]}")
            print(f"colors: {await grp.distinct('color', counts=True)}")

            run = await root.get("alice/experiments/run1")
            stale = await root.get("alice/experiments/run1")
            await run.update_metadata({"color": "purple"})  # revision 1 -> 2
            try:
                await stale.update_metadata({"color": "orange"})  # still at revision 1
            except aiosdk.ConflictError:
                print("a write based on a stale read is a ConflictError")

            try:
                await bob.catalog.get("alice/experiments")
            except aiosdk.NotFoundError:
                print("bob cannot see alice's experiments")
            await grp.share("bob", actions=["read"])
            shared = [node.path async for node in bob.list_shared_groups()]
            print(f"shared with bob: {shared}")

            await asyncio.wait_for(seen_all.wait(), timeout=30)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            print(f"watched: {events}")


if __name__ == "__main__":
    asyncio.run(main())
