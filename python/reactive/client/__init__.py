"""``reactive.client``: an async Python client of the Convex sync protocol.

``Client(url)`` talks to ``python -m reactive.server`` (or Convex): ``query``, ``mutation``,
``action``, and ``subscribe`` as an async iterator; it reconnects and resubscribes by itself.
``Client(url, fetch_token=fetch)`` (or ``set_auth(fetch)``) refreshes the user's token with a
:class:`TokenFetcher`.
"""

from reactive.client.client import Client, ClientSubscription, TokenFetcher

__all__ = ["Client", "ClientSubscription", "TokenFetcher"]
