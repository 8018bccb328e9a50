"""The blocking facade, for scripts and notebooks: the same API without ``await``.

Run: python examples/blocking.py
"""

from __future__ import annotations

import aiosdk


def main() -> None:
    with aiosdk.Client.embedded(retry_mode="forceful") as client:
        info = client.server_info()
        print(f"connected to {info.name} {info.version} at {client.url}")
        for label in ("alpha", "beta", "gamma"):
            client.tokens.create(label)
        pager = client.tokens.list(page_size=2)
        first = pager.first_page()
        print(f"first page: {[t.label for t in first.items]}, more: {first.has_next}")
        print(f"all labels: {sorted(t.label for t in pager)}")
        status = client.get_status()
        print(f"server up {status.uptime_seconds:.2f} s, {status.requests_served} requests served")


if __name__ == "__main__":
    main()
