"""``/api/v1/auth``: Login sessions: log in, refresh, log out."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(prefix="/auth", tags=["auth"])
