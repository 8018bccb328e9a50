"""A constant another module uses as a default: the twin must import it from here."""

REMOTE_PAGE_SIZE = 3
