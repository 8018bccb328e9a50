"""Accounts: logging in, users, organizations and their members, API tokens."""

from .admin import AsyncAdmin
from .organizations import Member, Organization
from .tokens import AsyncTokens, NewToken, TokenInfo
from .users import OrganizationMembership, User

__all__ = [
    "AsyncAdmin",
    "AsyncTokens",
    "Member",
    "NewToken",
    "Organization",
    "OrganizationMembership",
    "TokenInfo",
    "User",
]
