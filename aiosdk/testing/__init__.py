"""Testing helpers for aiosdk users: a pytest plugin with an embedded server and test accounts."""
