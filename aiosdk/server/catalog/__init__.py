"""The catalog: a tree of containers and assets per namespace, with metadata, search and
sharing.

- :mod:`.models`: the tables (nodes, shares, events);
- :mod:`.paths`: keys and paths;
- :mod:`.access`: who may do what on a node, for one node and in SQL;
- :mod:`.nodes`: one node at a time (read, create, change, move, delete, share);
- :mod:`.listings`: many at a time (children, count, distinct, listings of assets and groups);
- :mod:`.filters` and :mod:`.ordering`: queries, sorting and keyset cursors compiled to SQL;
- :mod:`.events` and :mod:`.state`: the changes among a container's children, for watchers.
"""
