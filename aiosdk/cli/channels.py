"""``aiosdk channel create``, ``send`` and ``listen``: try a channel from a terminal.

``create CLIENT_ID`` prints the channel's token (a secret: whoever holds it receives the
channel's messages); ``send CLIENT_ID MESSAGE`` sends one message (``-`` reads it from standard
input) and prints its position; ``listen TOKEN`` prints the channel's messages as they arrive,
one a line, until Ctrl-C (which closes the connection cleanly) or ``--count`` messages.
``listen`` needs no login: the token is its credential (``-`` reads it from standard input, and
keeps it out of the shell's history and the process list).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ._common import fail
from ._connect import UsageError, bounded, command, connection_arguments

if TYPE_CHECKING:
    from .. import AsyncClient, ChannelMessage
    from ._common import Subparsers

__all__ = ["register"]


def register(commands: Subparsers) -> None:
    """Add ``channel`` (``create``, ``send``, ``listen``) to ``commands``."""
    channel = commands.add_parser(
        "channel",
        help="create a channel, send to it, listen to it",
        description="Channels: messages from an application (your user) to the holder of a"
        " channel's token.",
    )
    actions = channel.add_subparsers(title="actions", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="create a channel for a client id and print its token",
        description="Create the channel of CLIENT_ID (or replace its token) and print the token,"
        " a secret: whoever holds it receives the channel's messages.",
    )
    create.add_argument("client_id", metavar="CLIENT_ID", help="1 to 64 bytes, your name space")
    create.add_argument(
        "--minutes",
        type=bounded(1, 1440),
        default=None,
        help="how long the token is valid, 1 to 1440 (default: 120)",
    )
    connection_arguments(create)
    create.set_defaults(run=command("channel create", _create, _check_client_id))
    send = actions.add_parser(
        "send",
        help="send a message to a client id's channel",
        description="Send MESSAGE (text; - reads it from standard input) to the channel of"
        " CLIENT_ID, and print its position as JSON.",
    )
    send.add_argument("client_id", metavar="CLIENT_ID")
    send.add_argument("message", metavar="MESSAGE", help="the text to send (- : standard input)")
    connection_arguments(send)
    send.set_defaults(run=command("channel send", _send, _read_message))
    listen = actions.add_parser(
        "listen",
        help="print a channel's messages as they arrive (no login needed)",
        description="Connect to the channel of TOKEN and print its messages as they arrive, one"
        " a line, until Ctrl-C. Needs no login: the token is the credential.",
    )
    listen.add_argument("token", metavar="TOKEN", help="the channel's token (- : standard input)")
    listen.add_argument(
        "--json",
        action="store_true",
        help="one JSON object a line: offset, epoch, sent_at, and text or data (base64)",
    )
    listen.add_argument(
        "--count",
        type=bounded(1, None),
        default=None,
        metavar="N",
        help="stop after N messages",
    )
    connection_arguments(listen)
    listen.set_defaults(run=command("channel listen", _listen, _read_token))


def _check_client_id(args: argparse.Namespace) -> None:
    from ..channels.types import check_client_id

    try:
        check_client_id(args.client_id)
    except ValueError as exc:  # (InvalidChannelIdError)
        raise UsageError(exc) from None


def _read_message(args: argparse.Namespace) -> None:
    from .._core.errors import MessageTooLargeError
    from ..channels.types import encode_message

    _check_client_id(args)
    if args.message == "-":
        args.message = sys.stdin.read()
    try:
        encode_message(args.message)
    except (ValueError, MessageTooLargeError) as exc:
        raise UsageError(exc) from None


def _read_token(args: argparse.Namespace) -> None:
    if args.token == "-":
        args.token = sys.stdin.readline().strip()
    if not args.token:
        raise UsageError("no token given")


async def _create(client: AsyncClient, args: argparse.Namespace) -> int:
    print(await client.channels.create_channel(args.client_id, args.minutes))
    return 0


async def _send(client: AsyncClient, args: argparse.Namespace) -> int:
    position = await client.channels.send_message(args.client_id, args.message)
    print(json.dumps({"epoch": position.epoch, "offset": position.offset}))
    return 0


async def _listen(client: AsyncClient, args: argparse.Namespace) -> int:
    import aiosdk

    left = args.count
    try:
        async with client.channels.connect(args.token) as channel:
            async for message in channel:
                print(_shown(message, args.json), flush=True)
                if left is not None:
                    left -= 1
                    if not left:
                        break
    except aiosdk.InvalidTokenError as exc:  # the channel's token: no login would help
        return fail("channel listen", f"{exc.message} (not a token of this server's channels)", 1)
    return 0


def _shown(message: ChannelMessage, as_json: bool) -> str:
    data = message.data
    if not as_json:
        return data if isinstance(data, str) else repr(data)
    import base64

    shown: dict[str, object] = {
        "offset": message.position.offset,
        "epoch": message.position.epoch,
        "sent_at": message.sent_at.isoformat(),
    }
    if isinstance(data, str):
        shown["text"] = data
    else:
        shown["data"] = base64.b64encode(data).decode()
    return json.dumps(shown, ensure_ascii=False)
