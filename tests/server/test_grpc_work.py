"""``@mutating``, the unit of work of a mutating RPC, driven directly on a real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from grpclib import GRPCError, Status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiosdk.proto import RevokeTokenRequest, RevokeTokenResponse
from aiosdk.server.auth import Principal
from aiosdk.server.grpc.auth import Call, current_call
from aiosdk.server.grpc.work import mutating
from aiosdk.server.keyring import Keyring
from aiosdk.server.storage import (
    Token,
    create_engine,
    default_database_url,
    session_factory,
    utcnow,
)
from aiosdk.server.storage.migrations import upgrade_database
from aiosdk.server.unit_of_work import UnitOfWork

pytestmark = pytest.mark.anyio


@dataclass
class _State:
    sessions: async_sessionmaker[AsyncSession]
    keyring: Keyring = field(default_factory=Keyring.generate)


class Flaky:
    """A mutating RPC that writes, then fails ``failures`` times with ``status``, then succeeds."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], status: Status) -> None:
        self.state = _State(sessions)
        self.status = status
        self.failures = 1
        self.runs = 0

    @mutating(RevokeTokenResponse)
    async def run(self, message: RevokeTokenRequest, work: UnitOfWork) -> RevokeTokenResponse:
        self.runs += 1
        work.session.add(
            Token(label=message.id, secret_hash=uuid.uuid4().hex, owner="p", created_at=utcnow())
        )
        await work.session.flush()
        if self.failures:
            self.failures -= 1
            raise GRPCError(self.status, "not now")
        return RevokeTokenResponse()


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = await anyio.to_thread.run_sync(create_engine, default_database_url(tmp_path))
    try:
        await upgrade_database(engine)
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def labels(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return list(await session.scalars(select(Token.label)))


async def _always() -> bool:
    return True


@pytest.mark.parametrize(
    ("status", "replayed"),
    [
        (Status.UNAVAILABLE, False),  # transient: the key is released, a retry runs again
        (Status.INTERNAL, False),
        (Status.INVALID_ARGUMENT, True),  # the client's mistake: stored, replayed
        (Status.NOT_FOUND, True),
    ],
)
async def test_transient_failures_are_retried_and_refusals_replayed(
    sessions: async_sessionmaker[AsyncSession], status: Status, replayed: bool
) -> None:
    service = Flaky(sessions, status)
    principal = Principal("p", is_admin=False, token_id="t")
    current_call.set(
        Call(principal, "/test.Flaky/Run", idempotency_key="key-1", still_valid=_always)
    )
    request = RevokeTokenRequest(id="written")
    with pytest.raises(GRPCError) as first:
        await service.run(request)
    assert first.value.status is status
    if replayed:
        with pytest.raises(GRPCError) as again:
            await service.run(request)
        assert (again.value.status, service.runs) == (status, 1)  # the stored refusal
        assert await labels(sessions) == []  # and the refused run kept nothing
    else:
        assert isinstance(await service.run(request), RevokeTokenResponse)  # it ran again
        assert service.runs == 2
        assert await labels(sessions) == ["written"]  # once: the failed run kept nothing
