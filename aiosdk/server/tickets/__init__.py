"""Sessions and tickets: objects kept on the server for a session and referenced by ticket.

- :mod:`.models`: the tables (sessions, exports, server objects, shared tickets, scope
  variables);
- :mod:`.registry`: sessions, exports and what they refer to, in a request's unit of work;
- :mod:`.resolve`: reads by ticket path (``~session/<session_id>/<number>``) over HTTP.
"""
