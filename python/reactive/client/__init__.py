"""``reactive.client``: an async Python client of the Convex sync protocol.

``Client(url)`` talks to ``python -m reactive.server`` (or Convex): ``query``, ``mutation``,
``action``, and ``subscribe`` as an async iterator; it reconnects and resubscribes by itself.
"""

from reactive.client.client import Client, ClientSubscription

__all__ = ["Client", "ClientSubscription"]
