"""Channels: messages from an application (a user) to the holders of its channel tokens.

- :mod:`.models`: the tables (channels, their pending messages, presence events);
- :mod:`.tokens`: the channel token codec, signed by the server's keyring;
- :mod:`.queues`: sending, reading, popping, clearing and acknowledging messages;
- :mod:`.presence`: connected and disconnected marks, their events, the sweep;
- :mod:`.hub`: this process's Listen and Presence streams and their wake-ups;
- :mod:`.listen`: one Listen stream.
"""
