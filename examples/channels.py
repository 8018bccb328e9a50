"""Channels: an application creates a channel for a client id, hands its token to the client and
sends it messages; the client, with the token alone (no login), receives them live, in order,
and the application sees it connect and disconnect. Then the seed's token operations, the
typed refusals, and the same through the blocking facade.

Run: python examples/channels.py
"""

from __future__ import annotations

import asyncio
import secrets

import aiosdk


async def main() -> None:
    async with aiosdk.embedded() as admin:
        password = secrets.token_urlsafe(16)  # a real program would prompt for it (getpass)
        await admin.admin.create_user("alice", password=password)
        async with aiosdk.AsyncClient(admin.url) as app:
            await app.login(username="alice", password=password)
            channels = app.channels
            token = await channels.create_channel("device-17", duration_minutes=30)
            # Sent while nobody listens: stored by the server until the token's holder takes them.
            for text in ("hello", "how are you?"):
                await channels.send_message("device-17", text)
            await channels.send_message("device-17", b"\x00\x01 raw bytes")

            # The client: no login, the token is its credential.
            async with aiosdk.AsyncClient(admin.url) as device:
                got: list[str | bytes] = []
                async with device.channels.connect(token) as ch:
                    print(f"connected to {ch.client_id!r}")
                    async for message in ch:
                        got.append(message.data)
                        if len(got) == 3:
                            await channels.send_message("device-17", "live!")
                        if len(got) == 4:
                            break
                resume_at = ch.position  # left without an exception: the last one counts too
                print(f"received in order: {got}")
                assert resume_at is not None
                print(f"resumable after offset {resume_at.offset}")
                # The application saw it connect, and leave cleanly (presence of every event the
                # server keeps, after=0; presence() alone: from now on).
                events: list[str] = []
                async for event in channels.presence(after=0):
                    events.append(f"{event.client_id} {event.kind}" + " (clean)" * event.clean)
                    if event.kind == "disconnected":
                        break
                print(f"presence: {events}")

                # The seed's operations, each taking the token.
                await channels.send_message("device-17", "one")
                await channels.send_message("device-17", "two")
                ops = device.channels
                print(f"client id: {await ops.validate_token_and_extract_client_id(token)}")
                print(f"pending: {await ops.get_channel_messages(token)}")
                print(f"popped: {await ops.pop_first_message(token)!r}")
                print(f"connect and pop: {await ops.connect_and_pop_first_message(token)!r}")
                print(f"has messages: {await ops.has_channel_messages(token)}")
                await ops.disconnect_channel_event(token)

                # Refusals are typed.
                forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
                print(f"a forged token's client id: {await ops.client_id_from_token(forged)}")
                try:
                    await ops.validate_token_and_extract_client_id(forged)
                except aiosdk.InvalidTokenError:
                    print("a forged token is an InvalidTokenError")
                await channels.create_channel("device-17")  # replaces the token
                try:
                    await ops.get_channel_messages(token)
                except aiosdk.TokenTimedOutError:
                    print("a replaced token is a TokenTimedOutError")
                try:
                    await channels.send_message("device-17", b"x" * (32 * 1024 + 1))
                except aiosdk.MessageTooLargeError:
                    print("over 32 KiB is a MessageTooLargeError, before any request")
                try:
                    await channels.send_message("nobody", "hi")
                except aiosdk.NotFoundError:
                    print("a client id without a channel is a NotFoundError: nothing is dropped")


def blocking() -> None:
    with aiosdk.Client.embedded() as client:
        token = client.channels.create_channel("kiosk")
        for text in ("a", "b", "c"):
            client.channels.send_message("kiosk", text)
        with client.channels.connect(token) as ch:
            seen = []
            for message in ch:
                seen.append(message.data)
                if len(seen) == 3:
                    break
        print(f"blocking: {seen} {type(ch).__name__}")


if __name__ == "__main__":
    asyncio.run(main())
    blocking()
