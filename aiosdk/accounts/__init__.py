"""Accounts: API tokens now; users, organizations and namespaces build here."""

from .tokens import AsyncTokens, NewToken, TokenInfo

__all__ = ["AsyncTokens", "NewToken", "TokenInfo"]
