"""Channels: messages from an application to its clients, live or queued (see
:mod:`aiosdk.channels.service`)."""

from .connection import AsyncChannelConnection
from .service import AsyncChannels
from .types import ChannelMessage, ChannelPosition, PresenceEvent

__all__ = [
    "AsyncChannelConnection",
    "AsyncChannels",
    "ChannelMessage",
    "ChannelPosition",
    "PresenceEvent",
]
