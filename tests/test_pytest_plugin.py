"""The pytest plugin aiosdk ships, used as our users use it: a separate pytest run."""

from __future__ import annotations

import textwrap

import pytest

USERS_SUITE = """
import pytest

import aiosdk

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_admin_and_accounts(aiosdk_server, aiosdk_admin, aiosdk_accounts):
    assert (await aiosdk_admin.server_info()).principal == "admin"
    alice = await aiosdk_accounts.user("alice")
    bob = await aiosdk_accounts.user("bob")
    lab = await aiosdk_accounts.organization("lab", owner=alice, members={bob: "read_only"})
    client = await aiosdk_accounts.client(bob)
    assert (await client.user_profile()).username == bob.username
    assert [o.name for o in await client.organizations()] == [lab]
    pytest.shared = (alice.username, lab)


async def test_the_next_test_gets_fresh_names(aiosdk_accounts):
    alice = await aiosdk_accounts.user("alice")
    assert (alice.username, ) != pytest.shared[:1]


async def test_users_of_a_finished_test_are_disabled(aiosdk_server):
    async with aiosdk.AsyncClient(aiosdk_server.http_url) as client:
        with pytest.raises(aiosdk.AuthenticationError):
            await client.login(username=pytest.shared[0], password="whatever-it-was")


def test_blocking_twins(aiosdk_admin_sync, aiosdk_accounts_sync):
    carol = aiosdk_accounts_sync.user("carol")
    client = aiosdk_accounts_sync.client(carol)
    assert client.user_profile().username == carol.username
    assert aiosdk_admin_sync.server_info().principal == "admin"
"""


def test_a_users_suite_gets_a_server_an_admin_and_accounts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_users_suite=textwrap.dedent(USERS_SUITE))
    # A subprocess, as a user's `pytest` would run: the plugin comes from the entry point alone.
    result = pytester.runpytest_subprocess("-p", "anyio", "-q", "-W", "error")
    result.assert_outcomes(passed=4)


def test_the_plugin_is_off_until_used(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="import sys\n\ndef test_no_server():\n"
        "    assert 'aiosdk.server' not in sys.modules\n"
    )
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)
    assert "--aiosdk-database" in pytester.runpytest_subprocess("--help").stdout.str()
