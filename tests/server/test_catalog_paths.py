"""Catalog keys and paths (aiosdk/_core/keys.py, server/catalog/paths.py): the rules, and the
server refusing keys that look like another key or hide characters, over loopback, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
import unicodedata

import pytest

from aiosdk._core.keys import key_problem
from aiosdk.server.catalog import paths
from aiosdk.server.errors import InvalidRequestError

from .conftest import Users, all_keys, assert_error, create, get, url

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")

REFUSED = {
    "nfd": NFD,
    "nfd-hangul": unicodedata.normalize("NFD", "한국"),
    "zero-width-space": "a\u200bb",
    "zero-width-joiner": "a\u200db",
    "bidi-override": "abc\u202etxt.exe",
    "bidi-isolate": "a\u2066b",
    "byte-order-mark": "\ufeffkey",
    "soft-hyphen": "soft\u00adhyphen",
    "line-separator": "a\u2028b",
    "paragraph-separator": "a\u2029b",
    "unassigned": "a\u0378b",
    "noncharacter": "a\uffffb",
    "control": "a\x7fb",
}
ACCEPTED = [NFC, "日本", "ünïcødé", "emoji 🙂", "private \ue000 use", "Ω", "a b"]


def test_nfc_and_nfd_differ() -> None:
    assert NFC != NFD
    assert unicodedata.normalize("NFC", NFD) == NFC


@pytest.mark.parametrize("key", REFUSED.values(), ids=REFUSED.keys())
def test_the_rules_refuse_lookalike_and_invisible_keys(key: str) -> None:
    problem = key_problem(key)
    assert problem is not None
    with pytest.raises(InvalidRequestError, match="Invalid key"):
        paths.check_key(key)
    with pytest.raises(InvalidRequestError, match="Invalid path"):
        paths.parse_path(f"alice/{key}/x")


def test_the_messages_say_what_to_do() -> None:
    assert "NFC" in (key_problem(NFD) or "")
    assert "U+200B" in (key_problem("a\u200bb") or "")
    assert "U+202E" in (key_problem("a\u202eb") or "")
    assert "surrogates" in (key_problem("a\ud800") or "")


@pytest.mark.parametrize("key", ACCEPTED)
def test_the_rules_accept_visible_nfc_keys(key: str) -> None:
    assert key_problem(key) is None
    assert paths.parse_path(f"alice/{key}") == ["alice", key]


def test_the_rules_load_without_the_server() -> None:
    """The client uses the same module: it must not pull in the server's code."""
    code = (
        "import sys, aiosdk._core.keys\n"
        "loaded = [m for m in sys.modules if m.startswith('aiosdk.server')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.anyio
@pytest.mark.parametrize("key", REFUSED.values(), ids=REFUSED.keys())
async def test_the_server_refuses_such_keys(users: Users, key: str) -> None:
    name, http = await users.new()
    response = await http.post(f"/catalog/children/{name}", json={"key": key})
    error = assert_error(response, response.status_code, "invalid_request")
    assert response.status_code in (400, 422), response.text  # 422: the body's validation
    assert key_problem(key) in error["message"]
    response = await http.get(f"/catalog/nodes/{name}/{url(key)}")
    assert 400 <= response.status_code < 500, response.text
    assert await all_keys(http, name) == []


@pytest.mark.anyio
async def test_nfc_and_nfd_spellings_cannot_be_siblings(users: Users) -> None:
    name, http = await users.new()
    made = await create(http, name, NFC)
    assert made["key"] == NFC
    assert (await get(http, f"{name}/{NFC}"))["key"] == NFC
    response = await http.post(f"/catalog/children/{name}", json={"key": NFD})
    error = assert_error(response, response.status_code, "invalid_request")
    assert response.status_code in (400, 422), response.text
    assert "NFC" in error["message"]
    # Nor can a node be moved (renamed) to the other spelling.
    response = await http.post(f"/catalog/move/{name}/{url(NFC)}", json={"to": f"{name}/{NFD}"})
    assert 400 <= response.status_code < 500, response.text
    assert await all_keys(http, name) == [NFC]


@pytest.mark.anyio
async def test_the_server_accepts_visible_nfc_keys(users: Users) -> None:
    name, http = await users.new()
    for key in ACCEPTED:
        assert (await create(http, name, key))["key"] == key
        assert (await get(http, f"{name}/{key}"))["key"] == key
    assert sorted(await all_keys(http, name)) == sorted(ACCEPTED)
