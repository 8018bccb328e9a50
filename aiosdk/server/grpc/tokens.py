"""The token service: ``/api/v1/tokens``'s create and revoke over gRPC, by the same rules."""

from __future__ import annotations

from grpclib import GRPCError, Status
from pydantic import ValidationError

from ... import proto
from .. import tokens
from ..state import ServerState
from ..storage import Token
from ..unit_of_work import UnitOfWork
from .auth import current_call
from .work import mutating

__all__ = ["TokenService"]


class TokenService(proto.TokenServiceBase):
    """Creates and revokes API tokens; both calls are mutating and honour ``idempotency-key``."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    @mutating(proto.CreateTokenResponse)
    async def create_token(
        self, message: proto.CreateTokenRequest, work: UnitOfWork
    ) -> proto.CreateTokenResponse:
        """Mint a token (shown once) for the caller, or for ``owner`` if an admin asks."""
        try:
            request = tokens.TokenCreate(
                label=message.label,
                expires_in=message.expires_in,
                owner=message.owner,
                scope=message.scope,  # type: ignore[arg-type]  # validated: "read" or None
            )
        except ValidationError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, _describe(exc)) from None
        principal = current_call.get().principal
        token, secret = await tokens.create_token(work.session, principal, request)
        return proto.CreateTokenResponse(token=_message(token), secret=secret)

    @mutating(proto.RevokeTokenResponse)
    async def revoke_token(
        self, message: proto.RevokeTokenRequest, work: UnitOfWork
    ) -> proto.RevokeTokenResponse:
        """Revoke a token the caller may see: it stops authenticating at once."""
        principal = current_call.get().principal
        await tokens.revoke_token(work, self.state.authenticator, principal, message.id)
        return proto.RevokeTokenResponse()


def _message(token: Token) -> proto.Token:
    return proto.Token(
        id=token.id,
        label=token.label,
        owner=token.owner,
        created_at=token.created_at,
        expires_at=token.expires_at,
        scope=token.scope,
    )


def _describe(exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return "Invalid request: " + "; ".join(parts)
