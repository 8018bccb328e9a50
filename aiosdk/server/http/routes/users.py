"""``/api/v1/user``: The calling user's profile."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(prefix="/user", tags=["users"])
