"""The object store over HTTP and through ``client.objects``, against the real server (SQLite,
and PostgreSQL when it answers): round trips, Range, listing, checksums, key validation,
atomic concurrent writes, permissions, bucket removal."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import anyio
import anyio.lowlevel
import httpx
import pytest

import aiosdk
from aiosdk.server import Server

from .conftest import Users, add_member, assert_error, new_org, unique

pytestmark = pytest.mark.anyio


@pytest.fixture
async def users(server: Server, client: httpx.AsyncClient) -> AsyncIterator[Users]:
    made = Users(server, client)
    try:
        yield made
    finally:
        await made.aclose()


async def _sdk(server: Server, admin: httpx.AsyncClient, owner: str) -> aiosdk.AsyncClient:
    token = (await admin.post("/tokens", json={"label": "t", "owner": owner})).json()["token"]
    return aiosdk.AsyncClient(server.http_url, token=token)


async def _bucket(http: httpx.AsyncClient, namespace: str) -> str:
    name = unique("b")
    response = await http.post(f"/buckets/{namespace}", json={"name": name})
    assert response.status_code == 201, response.text
    return f"{namespace}/{name}"


def _objects_dir(server: Server) -> Path:
    return server.data_dir / "objects"


def _files(server: Server) -> list[Path]:
    return [p for p in _objects_dir(server).rglob("*") if p.is_file()]


# --- HTTP ------------------------------------------------------------------------------------


async def test_put_get_head_range_etag_and_delete(users: Users) -> None:
    alice, http = await users.new()
    bucket = await _bucket(http, alice)
    body = os.urandom(300_000)
    digest = hashlib.sha256(body).hexdigest()
    put = await http.put(
        f"/buckets/{bucket}/objects/dir/a.bin",
        content=body,
        headers={"Content-Type": "application/x-test", "X-Aiosdk-Sha256": digest},
    )
    assert put.status_code == 201, put.text
    assert put.json()["sha256"] == digest
    assert put.json()["size"] == len(body)
    again = await http.put(f"/buckets/{bucket}/objects/dir/a.bin", content=body)
    assert again.status_code == 200

    got = await http.get(f"/buckets/{bucket}/objects/dir/a.bin")
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["etag"] == f'"{digest}"'
    assert got.headers["content-type"] == "application/octet-stream"  # (the last write's)
    head = await http.head(f"/buckets/{bucket}/objects/dir/a.bin")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(body))
    assert head.content == b""

    part = await http.get(f"/buckets/{bucket}/objects/dir/a.bin", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == body[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(body)}"
    tail = await http.get(f"/buckets/{bucket}/objects/dir/a.bin", headers={"Range": "bytes=-5"})
    assert tail.status_code == 206
    assert tail.content == body[-5:]
    beyond = await http.get(
        f"/buckets/{bucket}/objects/dir/a.bin", headers={"Range": f"bytes={len(body)}-"}
    )
    assert_error(beyond, 416, "invalid_request")
    cached = await http.get(
        f"/buckets/{bucket}/objects/dir/a.bin", headers={"If-None-Match": f'"{digest}"'}
    )
    assert cached.status_code == 304
    assert cached.content == b""

    assert (await http.delete(f"/buckets/{bucket}/objects/dir/a.bin")).status_code == 204
    assert_error(await http.get(f"/buckets/{bucket}/objects/dir/a.bin"), 404, "not_found")
    assert_error(await http.delete(f"/buckets/{bucket}/objects/dir/a.bin"), 404, "not_found")


async def test_a_checksum_mismatch_is_refused_and_nothing_is_written(
    server: Server, users: Users
) -> None:
    alice, http = await users.new()
    bucket = await _bucket(http, alice)
    before = set(_files(server))
    response = await http.put(
        f"/buckets/{bucket}/objects/k",
        content=b"hello",
        headers={"X-Aiosdk-Sha256": hashlib.sha256(b"other").hexdigest()},
    )
    assert_error(response, 422, "invalid_request")
    assert_error(await http.get(f"/buckets/{bucket}/objects/k"), 404, "not_found")
    assert set(_files(server)) == before
    bad = await http.put(
        f"/buckets/{bucket}/objects/k", content=b"x", headers={"X-Aiosdk-Sha256": "nothex"}
    )
    assert_error(bad, 400, "invalid_request")


async def test_a_broken_upload_leaves_nothing(server: Server, users: Users) -> None:
    alice, http = await users.new()
    bucket = await _bucket(http, alice)
    before = set(_files(server))

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 2_000_000
        raise OSError("the sender gave up")

    with pytest.raises(OSError, match="gave up"):
        await http.put(f"/buckets/{bucket}/objects/half", content=broken())
    assert_error(await http.get(f"/buckets/{bucket}/objects/half"), 404, "not_found")
    with anyio.fail_after(10):  # (the server sees the disconnect, and removes its temporary)
        while True:
            if set(_files(server)) == before:
                break
            await anyio.sleep(0.05)


@pytest.mark.parametrize(
    "key",
    ["%2E%2E/etc/passwd", "a/%2E%2E/b", "a/%2E", "%2Fabs", "a//b", "a/", "bell%07", "tab%09x", ""],
)
async def test_bad_keys_are_refused_with_400(users: Users, key: str) -> None:
    alice, http = await users.new()
    bucket = await _bucket(http, alice)
    response = await http.put(f"/buckets/{bucket}/objects/{key}", content=b"x")
    assert_error(response, 400, "invalid_request")
    if key:
        assert_error(await http.get(f"/buckets/{bucket}/objects/{key}"), 400, "invalid_request")


async def test_a_newline_in_a_key_matches_no_route(users: Users) -> None:
    alice, http = await users.new()
    bucket = await _bucket(http, alice)
    # (no route's path matches a line break: refused before any handler, never a 500)
    assert_error(await http.put(f"/buckets/{bucket}/objects/a%0Ab", content=b"x"), 404, "not_found")


async def test_too_long_key_and_bad_bucket_names(users: Users) -> None:
    alice, http = await users.new()
    bucket = await _bucket(http, alice)
    long_key = "é" * 513  # 1026 bytes of UTF-8
    response = await http.put(f"/buckets/{bucket}/objects/{quote(long_key)}", content=b"x")
    assert_error(response, 400, "invalid_request")
    assert_error(await http.post(f"/buckets/{alice}", json={"name": " x"}), 400, "invalid_request")
    assert_error(await http.post(f"/buckets/{alice}", json={"name": ".."}), 400, "invalid_request")


async def test_listing_by_prefix_pages(users: Users) -> None:
    alice, http = await users.new()
    bucket = await _bucket(http, alice)
    keys = [f"logs/{i:02d}" for i in range(7)] + ["other/x", "logs_not/y", "logs%/z"]
    for key in keys:
        assert (
            await http.put(f"/buckets/{bucket}/objects/{quote(key)}", content=key.encode())
        ).status_code == 201
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"prefix": "logs/", "page_size": 3}
        if token:
            params["page_token"] = token
        page = (await http.get(f"/buckets/{bucket}/objects", params=params)).json()
        seen += [item["key"] for item in page["items"]]
        pages += 1
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == [f"logs/{i:02d}" for i in range(7)]
    assert pages == 3
    percent = (await http.get(f"/buckets/{bucket}/objects", params={"prefix": "logs%"})).json()
    assert [item["key"] for item in percent["items"]] == ["logs%/z"]
    bad = await http.get(f"/buckets/{bucket}/objects", params={"page_token": "!!"})
    assert_error(bad, 400, "invalid_request")


async def test_permissions_follow_the_namespace(
    server: Server, client: httpx.AsyncClient, users: Users, anonymous: httpx.AsyncClient
) -> None:
    alice, http = await users.new()
    bob, bob_http = await users.new()
    bucket = await _bucket(http, alice)
    assert (await http.put(f"/buckets/{bucket}/objects/k", content=b"v")).status_code == 201
    # Another user: the namespace is hidden, for reads and writes alike.
    assert_error(await bob_http.get(f"/buckets/{bucket}/objects/k"), 404, "not_found")
    assert_error(await bob_http.put(f"/buckets/{bucket}/objects/k", content=b"w"), 404, "not_found")
    assert_error(await bob_http.get(f"/buckets/{alice}"), 404, "not_found")
    # Anonymous: refused.
    assert_error(await anonymous.get(f"/buckets/{bucket}/objects/k"), 401, "unauthenticated")
    assert_error(await anonymous.put(f"/buckets/{bucket}/objects/k", content=b"w"), 401,
                 "unauthenticated")  # fmt: skip
    # An organization: a member writes, a read-only member reads only.
    org = await new_org(client, alice)
    await add_member(client, org, bob, "read_only")
    org_bucket = await _bucket(http, org)
    assert (await http.put(f"/buckets/{org_bucket}/objects/k", content=b"v")).status_code == 201
    assert (await bob_http.get(f"/buckets/{org_bucket}/objects/k")).content == b"v"
    denied = await bob_http.put(f"/buckets/{org_bucket}/objects/k", content=b"w")
    assert_error(denied, 403, "permission_denied")
    assert_error(await bob_http.post(f"/buckets/{org}", json={"name": "x"}), 403,
                 "permission_denied")  # fmt: skip
    # A read-only token of the owner reads only.
    reader = await users.client(alice, scope="read")
    assert (await reader.get(f"/buckets/{bucket}/objects/k")).content == b"v"
    assert_error(await reader.delete(f"/buckets/{bucket}/objects/k"), 403, "permission_denied")


async def test_bucket_delete_only_when_empty(server: Server, users: Users) -> None:
    alice, http = await users.new()
    bucket = await _bucket(http, alice)
    name = bucket.split("/")[1]
    conflict = await http.post(f"/buckets/{alice}", json={"name": name})
    assert_error(conflict, 409, "conflict")
    assert (await http.put(f"/buckets/{bucket}/objects/k", content=b"v")).status_code == 201
    assert_error(await http.delete(f"/buckets/{bucket}"), 409, "conflict")
    assert (await http.delete(f"/buckets/{bucket}/objects/k")).status_code == 204
    assert (await http.delete(f"/buckets/{bucket}")).status_code == 204
    assert_error(await http.get(f"/buckets/{bucket}"), 404, "not_found")
    assert_error(await http.put(f"/buckets/{bucket}/objects/k", content=b"v"), 404, "not_found")


async def test_idempotent_bucket_creation(users: Users) -> None:
    alice, http = await users.new()
    headers = {"Idempotency-Key": unique("k")}
    first = await http.post(f"/buckets/{alice}", json={"name": "same"}, headers=headers)
    second = await http.post(f"/buckets/{alice}", json={"name": "same"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    listed = (await http.get(f"/buckets/{alice}")).json()
    assert [b["name"] for b in listed["items"]] == ["same"]


async def test_concurrent_writers_leave_one_whole_object(server: Server, users: Users) -> None:
    alice, http = await users.new()
    bucket = await _bucket(http, alice)
    size = 4 * 1024 * 1024
    payloads = [bytes([n]) * size for n in (1, 2, 3, 4)]

    async def chunks(payload: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 256 * 1024):
            yield payload[start : start + 256 * 1024]
            await anyio.lowlevel.checkpoint()

    async def write(payload: bytes) -> None:
        response = await http.put(f"/buckets/{bucket}/objects/same", content=chunks(payload))
        assert response.status_code in (200, 201), response.text

    async with anyio.create_task_group() as group:
        for payload in payloads:
            group.start_soon(write, payload)
    got = (await http.get(f"/buckets/{bucket}/objects/same")).content
    assert got in payloads
    info = (await http.head(f"/buckets/{bucket}/objects/same")).headers
    assert info["x-aiosdk-sha256"] == hashlib.sha256(got).hexdigest()
    with anyio.fail_after(10):  # the replaced files go (in the background), one stays
        while True:
            bucket_id_dirs = [p for p in _objects_dir(server).iterdir() if p.is_dir()]
            files = [f for d in bucket_id_dirs for f in d.iterdir() if f.stat().st_size == size]
            if len(files) == 1:
                break
            await anyio.sleep(0.05)


# --- the client ------------------------------------------------------------------------------


async def test_client_round_trips(
    server: Server, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    alice = unique("u")
    assert (await client.post("/admin/users", json={"username": alice})).status_code == 201
    async with await _sdk(server, client, alice) as sdk:
        bucket = f"{alice}/uploads"
        made = await sdk.objects.create_bucket(bucket)
        assert made.full_name == bucket
        assert made.owner == alice
        assert [b.full_name async for b in sdk.objects.list_buckets(alice)] == [bucket]

        data = os.urandom(1_000_000)
        info = await sdk.objects.put(bucket, "bytes.bin", data, content_type="application/x-a")
        assert info.size == len(data)
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert await sdk.objects.get(bucket, "bytes.bin") == data

        source = tmp_path / "source.bin"
        source.write_bytes(data[::-1])
        await sdk.objects.put(bucket, "dir/file.bin", source)
        assert await sdk.objects.get(bucket, "dir/file.bin") == data[::-1]
        with source.open("rb") as file:
            file.seek(10)
            await sdk.objects.put(bucket, "dir/from-offset", file)
        assert await sdk.objects.get(bucket, "dir/from-offset") == data[::-1][10:]
        await sdk.objects.put(bucket, "dir/bytesio", io.BytesIO(b"abc"))
        assert await sdk.objects.get(bucket, "dir/bytesio") == b"abc"

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 100_000):
                yield data[start : start + 100_000]

        await sdk.objects.put(bucket, "dir/iter.bin", pieces())
        assert await sdk.objects.get(bucket, "dir/iter.bin") == data
        await sdk.objects.put(bucket, "empty", b"")
        assert await sdk.objects.get(bucket, "empty") == b""
        assert [p async for p in sdk.objects.stream(bucket, "empty")] == []

        streamed = [p async for p in sdk.objects.stream(bucket, "bytes.bin", chunk_size=300_000)]
        assert [len(p) for p in streamed] == [300_000, 300_000, 300_000, 100_000]
        assert b"".join(streamed) == data
        assert await sdk.objects.get_range(bucket, "bytes.bin", 5, 15) == data[5:15]
        assert await sdk.objects.get_range(bucket, "bytes.bin", 999_990) == data[999_990:]

        target = tmp_path / "out.bin"
        await sdk.objects.get_to_file(bucket, "bytes.bin", target)
        assert target.read_bytes() == data

        stat = await sdk.objects.stat(bucket, "bytes.bin")
        assert (stat.size, stat.sha256, stat.content_type) == (
            len(data),
            info.sha256,
            "application/x-a",
        )
        assert (await sdk.objects.head(bucket, "bytes.bin")).sha256 == info.sha256

        listed = [o.key async for o in sdk.objects.list(bucket, prefix="dir/", page_size=2)]
        assert listed == ["dir/bytesio", "dir/file.bin", "dir/from-offset", "dir/iter.bin"]
        first = await sdk.objects.list(bucket, page_size=2)
        assert len(first.items) == 2
        assert first.has_next

        with pytest.raises(aiosdk.ConflictError):
            await sdk.objects.delete_bucket(bucket)
        for key in [*listed, "bytes.bin", "empty"]:
            await sdk.objects.delete(bucket, key)
        with pytest.raises(aiosdk.NotFoundError):
            await sdk.objects.get(bucket, "bytes.bin")
        with pytest.raises(aiosdk.NotFoundError):
            await sdk.objects.stat(bucket, "bytes.bin")
        await sdk.objects.delete_bucket(bucket)
        with pytest.raises(aiosdk.NotFoundError):
            await sdk.objects.get_bucket(bucket)


async def test_client_refuses_bad_keys_before_sending(
    server: Server, client: httpx.AsyncClient
) -> None:
    alice = unique("u")
    assert (await client.post("/admin/users", json={"username": alice})).status_code == 201
    async with await _sdk(server, client, alice) as sdk:
        await sdk.objects.create_bucket(f"{alice}/b")
        for key in ["../x", "a/../b", "/abs", "a//b", "a/", "", "bell\x07", "a/./b", "é" * 513]:
            with pytest.raises(aiosdk.ConfigurationError):
                await sdk.objects.put(f"{alice}/b", key, b"x")
        for bucket in ["nobucket", "a/b/c", "a/..", "/x"]:
            with pytest.raises(aiosdk.ConfigurationError):
                await sdk.objects.get(bucket, "k")
        with pytest.raises(aiosdk.ConfigurationError):
            await sdk.objects.put(f"{alice}/b", "k", 42)  # type: ignore[arg-type]
        # An odd but valid key goes through (percent-encoded on the way).
        await sdk.objects.put(f"{alice}/b", "a b/%41?#é", b"odd")
        assert await sdk.objects.get(f"{alice}/b", "a b/%41?#é") == b"odd"
        assert [o.key async for o in sdk.objects.list(f"{alice}/b")] == ["a b/%41?#é"]


async def test_client_permission_errors(server: Server, client: httpx.AsyncClient) -> None:
    alice, bob = unique("u"), unique("u")
    for name in (alice, bob):
        assert (await client.post("/admin/users", json={"username": name})).status_code == 201
    async with (
        await _sdk(server, client, alice) as owner,
        await _sdk(server, client, bob) as other,
        aiosdk.AsyncClient(server.http_url, token=None) as nobody,
    ):
        await owner.objects.create_bucket(f"{alice}/private")
        await owner.objects.put(f"{alice}/private", "k", b"secret")
        with pytest.raises(aiosdk.NotFoundError):
            await other.objects.get(f"{alice}/private", "k")
        with pytest.raises(aiosdk.NotFoundError):
            await other.objects.put(f"{alice}/private", "k", b"mine now")
        with pytest.raises(aiosdk.AuthenticationError):
            await nobody.objects.get(f"{alice}/private", "k")
        assert await owner.objects.get(f"{alice}/private", "k") == b"secret"


def test_the_blocking_facade(sync_client: aiosdk.Client) -> None:
    sdk = sync_client
    if True:
        namespace = unique("u")
        sdk.admin.create_user(namespace, password="a-long-password")
        bucket = f"{namespace}/sync"
        sdk.objects.create_bucket(bucket)
        sdk.objects.put(bucket, "a/b", b"blocking")
        assert sdk.objects.get(bucket, "a/b") == b"blocking"
        assert list(sdk.objects.stream(bucket, "a/b", chunk_size=3)) == [b"blo", b"cki", b"ng"]
        assert [o.key for o in sdk.objects.list(bucket)] == ["a/b"]
        assert sdk.objects.stat(bucket, "a/b").size == 8
        sdk.objects.delete(bucket, "a/b")
        sdk.objects.delete_bucket(bucket)
