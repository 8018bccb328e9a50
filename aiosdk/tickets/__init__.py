"""Tickets and sessions: objects kept on the server, referred to by ticket (see
:mod:`aiosdk.tickets.session`)."""

from .session import (
    Application,
    ApplicationField,
    AsyncPluginObject,
    AsyncSession,
    ExportChange,
    ExportInfo,
)
from .ticket import (
    ApplicationTicket,
    ExportTicket,
    ScopeTicket,
    ServerObject,
    SharedTicket,
    Ticket,
)

__all__ = [
    "Application",
    "ApplicationField",
    "ApplicationTicket",
    "AsyncPluginObject",
    "AsyncSession",
    "ExportChange",
    "ExportInfo",
    "ExportTicket",
    "ScopeTicket",
    "ServerObject",
    "SharedTicket",
    "Ticket",
]
