"""Accounts on the server: users, organizations and their members, namespaces, login sessions."""
