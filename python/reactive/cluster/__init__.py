"""Many server processes on one PostgreSQL or MySQL database (``--cluster-key``).

:mod:`reactive.cluster.node` holds a process's role (leader or follower), its campaign
for the writer lease and the forwarding of mutations; :mod:`reactive.cluster.protocol`
how processes authenticate each other and carry errors.
"""

from reactive.cluster.node import LEADER_GLOBAL, ClusterNode, ClusterUnavailableError

__all__ = ["LEADER_GLOBAL", "ClusterNode", "ClusterUnavailableError"]
