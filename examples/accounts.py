"""Accounts: users, an organization, a login session, default namespaces, a read-only token.

Run: python examples/accounts.py
"""

from __future__ import annotations

import asyncio
import secrets

import aiosdk


async def main() -> None:
    password = secrets.token_urlsafe(16)  # a real program would prompt for it (getpass)
    async with aiosdk.embedded() as admin:  # the embedded server, with its admin token
        await admin.admin.create_user("alice", password=password, email="alice@example.org")
        await admin.admin.create_user("bob")  # no password: bob can use API tokens only
        await admin.admin.create_organization("lab", owner="alice", display_name="The Lab")
        await admin.admin.add_member("lab", "bob", role="read_only")

        # A second client of the same server, logged in as alice: a session (a short-lived
        # access token, renewed through a rotating refresh token when due, for HTTP and gRPC).
        async with aiosdk.AsyncClient(admin.url) as alice:
            await alice.login(username="alice", password=password)
            me = await alice.user_profile()
            print(f"logged in as {me.username} ({me.email})")
            for membership in me.organizations:
                print(f"  {membership.name}: {membership.role}, may {membership.allowed_actions}")
            print(f"charges: {await alice.default_charged_namespace(required_action='write')}")
            print(f"organizations: {[o.name for o in await alice.organizations()]}")
            lab = await alice.organization("lab")
            print(f"members of {lab.name}: {[(m.username, m.role) for m in lab.members]}")

            # A read-only API token for a CI job; its secret prints as Secret('***').
            ci = await alice.tokens.create("ci", expires_in=3600, scope="read")
            print(f"token {ci.label!r} scope {ci.scope!r}: {ci.secret}")
            async with aiosdk.AsyncClient(admin.url, token=ci.secret.reveal()) as job:
                print(f"the CI token reads as {(await job.user_profile()).username}")
                try:
                    await job.tokens.create("wider")
                except aiosdk.PermissionDeniedError as exc:
                    print(f"and changes nothing: {type(exc).__name__}")

            try:
                await alice.admin.create_user("mallory")
            except aiosdk.PermissionDeniedError:
                print("only the admin token creates users")

            await alice.logout()  # the session's tokens stop working at once
            print("logged out")
            try:
                await alice.user_profile()
            except aiosdk.AuthenticationError as exc:
                print(f"after logout: {type(exc).__name__}")


if __name__ == "__main__":
    asyncio.run(main())
