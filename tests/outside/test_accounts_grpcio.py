"""The accounts' credentials on gRPC, with the official grpcio client built from our ``.proto``
files (not our grpclib-based client): a session's access token, Basic credentials, read-scoped
tokens, against StatusService and TokenService; logging out while a channel is open; and
authorization metadata that is no credential at all.
"""

from __future__ import annotations

import base64
import socket
import struct
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from aiosdk.server import ServerThread
from outside._tools import PASSWORD, load_grpcio_stubs, new_user

OK = grpc.StatusCode.OK


@pytest.fixture(scope="module")
def grpcio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    with load_grpcio_stubs()(tmp_path_factory.mktemp("grpcio"), "status", "tokens") as modules:
        yield modules


@pytest.fixture
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"{server.grpc_host}:{server.grpc_port}") as opened:
        yield opened


def log_in(server: ServerThread, **body: str) -> dict[str, str]:
    response = httpx.post(f"{server.http_url}/api/v1/auth/login", json=body, timeout=30)
    assert response.status_code == 200, response.text
    grant: dict[str, str] = response.json()
    return grant


def api_token(admin: httpx.Client, owner: str, **body: object) -> dict[str, str]:
    response = admin.post("/tokens", json={"label": "grpcio", "owner": owner, **body})
    assert response.status_code == 201, response.text
    made: dict[str, str] = response.json()
    return made


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class Stubs:
    """The grpcio stubs on one channel, each call with ``authorization`` metadata, returning
    ``(code, answer)``."""

    def __init__(self, grpcio: dict[str, ModuleType], channel: grpc.Channel) -> None:
        self.status_pb2, self.tokens_pb2 = grpcio["status_pb2"], grpcio["tokens_pb2"]
        self.status = grpcio["status_pb2_grpc"].StatusServiceStub(channel)
        self.tokens = grpcio["tokens_pb2_grpc"].TokenServiceStub(channel)

    @staticmethod
    def _call(method: Any, request: Any, authorization: str | None) -> tuple[grpc.StatusCode, Any]:
        metadata = [("authorization", authorization)] if authorization is not None else []
        try:
            return OK, method(request, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()

    def get_status(self, authorization: str | None) -> tuple[grpc.StatusCode, Any]:
        return self._call(self.status.GetStatus, self.status_pb2.GetStatusRequest(), authorization)

    def watch(self, authorization: str, updates: int = 2) -> tuple[grpc.StatusCode, Any]:
        request = self.status_pb2.WatchStatusRequest(interval_seconds=0.05, max_updates=updates)
        return self._call(
            lambda r, **kw: [u.sequence for u in self.status.WatchStatus(r, **kw)],
            request,
            authorization,
        )

    def create_token(self, authorization: str, **fields: Any) -> tuple[grpc.StatusCode, Any]:
        request = self.tokens_pb2.CreateTokenRequest(label="via grpcio", **fields)
        return self._call(self.tokens.CreateToken, request, authorization)

    def revoke_token(self, authorization: str, token_id: str) -> tuple[grpc.StatusCode, Any]:
        request = self.tokens_pb2.RevokeTokenRequest(id=token_id)
        return self._call(self.tokens.RevokeToken, request, authorization)


@pytest.fixture
def stubs(grpcio: dict[str, ModuleType], channel: grpc.Channel) -> Stubs:
    return Stubs(grpcio, channel)


@pytest.mark.parametrize("kind", ["session", "basic", "read-token", "session-of-read-token"])
def test_each_credential_on_each_service(
    server: ServerThread, admin: httpx.Client, stubs: Stubs, kind: str
) -> None:
    username = new_user(admin, "gr")
    other = new_user(admin, "gr")
    if kind == "session":
        grant = log_in(server, username=username, password=PASSWORD)
        authorization = f"Bearer {grant['access_token']}"
    elif kind == "basic":
        authorization = basic(username, PASSWORD)
    else:
        read = api_token(admin, username, scope="read")
        if kind == "read-token":
            authorization = f"Bearer {read['token']}"
        else:
            authorization = f"Bearer {log_in(server, token=read['token'])['access_token']}"
    read_only = "read" in kind
    for _ in range(2):  # the second time from the server's cache of credentials
        code, status = stubs.get_status(authorization)
        assert code == OK, status
        assert status.version
    assert stubs.watch(authorization) == (OK, [1, 2])
    theirs = api_token(admin, username)
    code, made = stubs.create_token(authorization)
    if read_only:
        assert code == grpc.StatusCode.PERMISSION_DENIED, made
        refused = stubs.revoke_token(authorization, theirs["id"])[0]
        assert refused == grpc.StatusCode.PERMISSION_DENIED
        assert admin.get(f"/tokens/{theirs['id']}").status_code == 200  # not revoked
        assert stubs.get_status(f"Bearer {theirs['token']}")[0] == OK
        return
    assert code == OK, made
    assert made.token.owner == username
    assert made.secret.startswith("aio_")
    assert stubs.get_status(f"Bearer {made.secret}")[0] == OK  # the new token works at once
    code, details = stubs.create_token(authorization, owner=other)
    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    assert stubs.revoke_token(authorization, theirs["id"])[0] == OK
    assert stubs.get_status(f"Bearer {theirs['token']}")[0] == grpc.StatusCode.UNAUTHENTICATED
    others = api_token(admin, other)
    assert stubs.revoke_token(authorization, others["id"])[0] == grpc.StatusCode.NOT_FOUND
    assert stubs.get_status(f"Bearer {others['token']}")[0] == OK


def test_after_logout_the_same_channel_is_refused_at_once(
    server: ServerThread, admin: httpx.Client, stubs: Stubs
) -> None:
    username = new_user(admin, "gr")
    grant = log_in(server, username=username, password=PASSWORD)
    bearer = f"Bearer {grant['access_token']}"
    for _ in range(3):  # cached by now
        assert stubs.get_status(bearer)[0] == OK
    assert stubs.create_token(bearer)[0] == OK
    response = httpx.post(
        f"{server.http_url}/api/v1/auth/logout", headers={"Authorization": bearer}, timeout=10
    )
    assert response.status_code == 204
    assert stubs.get_status(bearer)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert stubs.create_token(bearer)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert stubs.watch(bearer)[0] == grpc.StatusCode.UNAUTHENTICATED
    refreshed = httpx.post(
        f"{server.http_url}/api/v1/auth/refresh",
        json={"refresh_token": grant["refresh_token"]},
        timeout=10,
    )
    assert refreshed.status_code == 401


def test_a_token_revoked_over_grpc_is_refused_on_the_same_channel_at_once(
    server: ServerThread, admin: httpx.Client, stubs: Stubs
) -> None:
    username = new_user(admin, "gr")
    made = api_token(admin, username)
    bearer = f"Bearer {made['token']}"
    for _ in range(2):
        assert stubs.get_status(bearer)[0] == OK
    assert stubs.revoke_token(bearer, made["id"])[0] == OK  # revokes itself
    assert stubs.get_status(bearer)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_an_open_watch_ends_with_its_session(
    server: ServerThread, admin: httpx.Client, grpcio: dict[str, ModuleType], channel: grpc.Channel
) -> None:
    """Found: a WatchStatus stream opened before the logout went on streaming after it, for
    as long as the client cared to read (only new calls were refused): a logout did not end
    everything the session had opened."""
    username = new_user(admin, "gr")
    bearer = f"Bearer {log_in(server, username=username, password=PASSWORD)['access_token']}"
    stub = grpcio["status_pb2_grpc"].StatusServiceStub(channel)
    request = grpcio["status_pb2"].WatchStatusRequest(interval_seconds=0.1, max_updates=0)
    stream = stub.WatchStatus(request, metadata=[("authorization", bearer)], timeout=20)
    try:
        updates = iter(stream)
        assert next(updates).sequence == 1
        response = httpx.post(
            f"{server.http_url}/api/v1/auth/logout", headers={"Authorization": bearer}
        )
        assert response.status_code == 204
        logged_out = time.monotonic()
        code = None
        try:
            for _ in updates:
                assert time.monotonic() - logged_out < 3, "the stream outlived the logout"
        except grpc.RpcError as exc:
            code = exc.code()
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        stream.cancel()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


MALFORMED = [
    ("empty", ""),
    ("scheme-only-basic", "Basic"),
    ("scheme-only-bearer", "Bearer"),
    ("bearer-space", "Bearer "),
    ("not-base64", "Basic !!!not-base64!!!"),
    ("no-colon", "Basic " + b64(b"nobody-at-all")),
    ("no-username", "Basic " + b64(b":" + PASSWORD.encode())),
    ("invalid-utf8-inside", "Basic " + b64(b"\xff\xfe:\xfd")),
    ("nul-in-username", "Basic " + b64(b"nobody\x00x:pw")),
    ("10-KB-of-A", "Basic " + "A" * 10_240),
    ("10-KB-password", "Basic " + b64(b"nobody-y:" + b"p" * 7_000)),
    ("10-KB-bearer", "Bearer " + "x" * 10_240),
    ("unknown-token", "Bearer aio_" + "x" * 43),
    ("unknown-scheme", "Token aio_x"),
    ("wrong-password", "Basic " + b64(b"nobody-z:wrong")),
    ("admin-by-basic", "Basic " + b64(b"admin:whatever")),
]


@pytest.mark.parametrize("authorization", [pytest.param(v, id=i) for i, v in MALFORMED])
def test_malformed_authorization_metadata_is_unauthenticated(
    stubs: Stubs, authorization: str
) -> None:
    assert stubs.get_status(authorization)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert stubs.watch(authorization)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert stubs.create_token(authorization)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_no_authorization_metadata_is_unauthenticated(stubs: Stubs) -> None:
    assert stubs.get_status(None)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_a_non_ascii_authorization_header_costs_only_its_own_connection(
    server: ServerThread, stubs: Stubs
) -> None:
    """grpcio refuses to send one; a raw HTTP/2 client can. The server must not answer it OK,
    must not hang, and must go on serving every other connection."""
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, header_encoding=None
        )
    )
    connection.initiate_connection()
    stream_id = connection.get_next_available_stream_id()
    connection.send_headers(
        stream_id,
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/aiosdk.v1.StatusService/GetStatus"),
            (b":authority", b"127.0.0.1"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"authorization", b"Basic \xe9\xe9\xff"),
        ],
    )
    connection.send_data(stream_id, b"\x00" + struct.pack(">I", 0), end_stream=True)
    grpc_status = None
    with socket.create_connection((server.grpc_host, server.grpc_port), timeout=5) as sock:
        sock.sendall(connection.data_to_send())
        deadline = time.monotonic() + 5
        done = False
        while not done:
            assert time.monotonic() < deadline, "no answer and no close in 5 s"
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    grpc_status = dict(event.headers).get(b"grpc-status", grpc_status)
                if isinstance(
                    event,
                    h2.events.StreamEnded | h2.events.StreamReset | h2.events.ConnectionTerminated,
                ):
                    done = True
            outgoing = connection.data_to_send()
            if outgoing:
                sock.sendall(outgoing)
    assert grpc_status != b"0"
    assert stubs.get_status(f"Bearer {server.admin_token}")[0] == OK
