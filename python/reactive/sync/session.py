"""The sync protocol of one socket as a sans-I/O state machine.

Events go in (a client frame, a mutation or action finished, the query results of a
transition, a watched query changed, the clock); effects come out (:class:`Send` a frame,
:class:`Close`, :class:`RunMutation`, :class:`RunAction`, :class:`ComputeTransition`). The
machine never does I/O and imports no asyncio: the server's connection task drives it.

Rules kept (the Convex sync protocol's versions, transitions and requests):

* Versions start at ``{querySet: 0, identity: 0, ts: 0}``; every ``Transition`` starts at
  the previous one's end, so a client never sees a start-version mismatch.
* ``ModifyQuerySet`` must start at the last received version (else ``FatalError``);
  ``Authenticate`` likewise for identities (else close).
* At most one transition is computed at a time; triggers meanwhile fold into the next.
  Its results are all taken at one snapshot (the driver's job), and only queries whose
  result or log lines changed are sent (fingerprints).
* Mutations run one at a time in arrival order; each ``MutationResponse`` is followed by a
  transition whose end timestamp is at least the commit's (the clients release the
  mutation only then), and no transition that holds a mutation's write goes out before
  that mutation's response. Actions run concurrently.
* Something is sent at least every ``ping_interval_s`` (``{"type": "Ping"}``).
* Work per event is proportional to what changed, never to the size of the query set:
  a :class:`ComputeTransition` names only the queries added or removed since the previous
  one (the driver knows which of its held results went stale), except after an identity
  change, when every query re-runs.
* Limits (each a clear error to this socket only): at most ``max_queries`` queries in the
  set (past it: ``FatalError``), ``max_queued_mutations`` queued mutations (past it: close
  1013, the clients reconnect and resend), ``max_inflight_actions`` running actions (past
  it: that action fails with ``TooManyRequestsError``).
* An accepted token that expires (its ``exp``) is answered with ``AuthError``
  (``authUpdateAttempted: false``); the socket goes on unauthenticated and every query
  re-runs without the identity.
"""

from __future__ import annotations

import base64
import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reactive.sync.messages import (
    Action,
    Add,
    Authenticate,
    Connect,
    Event,
    ModifyQuerySet,
    Mutation,
    ProtocolError,
    Remove,
    dumps,
    encode_ts,
    parse_client_message,
)

__all__ = [
    "AuthFailure",
    "Close",
    "ComputeTransition",
    "Effect",
    "QueryResult",
    "QuerySpec",
    "RunAction",
    "RunMutation",
    "Send",
    "SyncSession",
]

PING_INTERVAL_S = 15.0
"""Idle time after which a ``Ping`` is sent (Convex's backend uses 15 s)."""
MAX_QUEUED_MUTATIONS = 1000
"""Mutations queued per socket before the socket is closed (Convex's limit)."""
MAX_INFLIGHT_ACTIONS = 64
"""Actions running per socket; more fail with ``TooManyRequestsError``."""
MAX_QUERIES = 10_000
"""Queries in one socket's set; more end the socket with a ``FatalError``."""


class AuthFailure(Exception):
    """A token that the authenticator refuses (its message goes to the client)."""


@dataclass(frozen=True)
class Send:
    """Send this text frame."""

    text: str


@dataclass(frozen=True)
class Close:
    """Close the socket with this code and reason (after sending what came before)."""

    code: int
    reason: str


@dataclass(frozen=True)
class RunMutation:
    """Run a mutation; report with :meth:`SyncSession.mutation_finished`."""

    request_id: int
    udf_path: str
    args: Any
    identity: dict[str, Any] | None


@dataclass(frozen=True)
class RunAction:
    """Run an action; report with :meth:`SyncSession.action_finished`."""

    request_id: int
    udf_path: str
    args: Any
    identity: dict[str, Any] | None


@dataclass(frozen=True)
class QuerySpec:
    """One query of the set, as the client asked for it (args still Convex JSON)."""

    udf_path: str
    args: Any
    journal: str | None


@dataclass(frozen=True)
class ComputeTransition:
    """Compute the next transition at one snapshot ``>= min_ts``.

    ``added`` holds the queries to start watching (added since the previous transition;
    every query of the set when ``reset``, after an identity change), ``removed`` the ids
    to stop watching. The driver reports, with :meth:`SyncSession.transition_computed`,
    the results of the added queries and of every held query whose result changed, all
    at that one snapshot; a query it does not report keeps its last result.
    """

    added: dict[int, QuerySpec]
    removed: frozenset[int]
    identity: dict[str, Any] | None
    min_ts: int
    reset: bool = False


@dataclass(frozen=True)
class QueryResult:
    """A query's result as the driver computed it.

    ``value_json`` (success) or ``error_message`` (failure, with ``error_data_json`` for a
    ConvexError); ``fingerprint`` is equal for equal results (value, error, log lines,
    journal).
    """

    fingerprint: bytes
    value_json: str | None = None
    error_message: str | None = None
    error_data_json: str | None = None
    log_lines: tuple[str, ...] = ()
    journal: str | None = None
    _tail: str | None = field(default=None, compare=False, repr=False)

    def modification_tail(self) -> str:
        """The JSON of the modification after its ``queryId``.

        Computed once per result: a result shared by many sockets is serialized once.
        """
        tail = self._tail
        if tail is None:
            logs = dumps(list(self.log_lines))
            journal = dumps(self.journal)
            if self.error_message is None:
                tail = (
                    f'"value":{self.value_json or "null"},"logLines":{logs},"journal":{journal}}}'
                )

            else:
                data = (
                    f',"errorData":{self.error_data_json}'
                    if self.error_data_json is not None
                    else ""
                )
                tail = (
                    f'"errorMessage":{dumps(self.error_message)},"logLines":{logs},'
                    f'"journal":{journal}{data}}}'
                )
            object.__setattr__(self, "_tail", tail)  # frozen: a cache, not a field
        return tail


Effect = Send | Close | RunMutation | RunAction | ComputeTransition


@dataclass(slots=True)
class _Pending:
    """Triggers received while a transition was computing."""

    needed: bool = False
    min_ts: int = 0


@dataclass(slots=True)
class SyncSession:
    """The protocol state of one socket.

    Args:
        authenticate: ``(token_type, value) -> identity`` for ``User``/``Admin`` tokens;
            raises :class:`AuthFailure` to refuse. ``None`` refuses every token.
        server_ts: Returns the server's clock in ns (for ``serverTs``); injected so tests
            are deterministic.
    """

    authenticate: Any = None
    max_queries: int = MAX_QUERIES
    max_queued_mutations: int = MAX_QUEUED_MUTATIONS
    max_inflight_actions: int = MAX_INFLIGHT_ACTIONS
    session_id: str | None = None
    connected: bool = False
    received_query_set: int = 0
    received_identity: int = 0
    version_query_set: int = 0
    version_identity: int = 0
    version_ts: int = 0
    identity: dict[str, Any] | None = None
    # The socket authenticated with the admin key (system and internal functions).
    admin: bool = False
    queries: dict[int, QuerySpec] = field(default_factory=dict)
    sent: dict[int, bytes] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    mutations: deque[Mutation] = field(default_factory=deque)
    mutation_running: bool = False
    actions_running: int = 0
    computing: bool = False
    pending: _Pending = field(default_factory=_Pending)
    closed: bool = False
    last_send_s: float = 0.0
    client_clock_skew_ms: float | None = None
    # A mutation responded since the last transition: the next one must be sent even if
    # empty (it is what releases the mutation in the clients).
    must_send: bool = False
    # The identity and query-set version requested by the transition being computed.
    _computing_versions: tuple[int, int] = (0, 0)
    # What changed in the set since the last ComputeTransition (see its docstring).
    # Bytes of the frames whose mutations or actions are queued or running (the driver
    # stops reading the socket while they pass its budget).
    inflight_bytes: int = 0
    _mutation_sizes: deque[int] = field(default_factory=deque)
    _action_sizes: dict[int, int] = field(default_factory=dict)
    _last_size: int = 0
    # A computed transition waiting for the running mutation's response (see
    # transition_computed).
    _held: tuple[int, dict[int, QueryResult], int] | None = None
    _running_commit_ts: int | None = None
    _added: dict[int, QuerySpec] = field(default_factory=dict)
    _dropped: set[int] = field(default_factory=set)
    _reset: bool = False
    # client_clock_skew_ms as JSON (computed once: every transition carries it).
    _skew_json: str | None = None
    # The JSON of the last version sent (the next transition's startVersion).
    _start_version: str | None = None
    # Calls that may have changed the session's state, other than transitions made by
    # transition_now / transition_fast (the fan-out's validity check; see transition_fast).
    changes: int = 0

    # -- helpers ---------------------------------------------------------------------------

    def _fatal(self, message: str) -> list[Effect]:
        self.closed = True
        return [
            Send(dumps({"type": "FatalError", "error": message[:4096]})),
            Close(1000, "BadRequest"),
        ]

    def _need_transition(self, min_ts: int = 0) -> list[Effect]:
        self.pending.needed = True
        self.pending.min_ts = max(self.pending.min_ts, min_ts)
        return self._maybe_compute()

    def _maybe_compute(self) -> list[Effect]:
        if self.closed or self.computing or not self.pending.needed or not self.connected:
            return []
        self.computing = True
        min_ts = self.pending.min_ts
        self.pending = _Pending()
        self._computing_versions = (self.received_query_set, self.received_identity)
        reset = self._reset
        added = dict(self.queries) if reset else self._added
        removed = frozenset(self._dropped)
        self._added, self._dropped, self._reset = {}, set(), False
        return [ComputeTransition(added, removed, self.identity, min_ts, reset)]

    def _next_mutation(self) -> list[Effect]:
        if self.mutation_running or not self.mutations or self.closed:
            return []
        m = self.mutations.popleft()
        self.mutation_running = True
        return [RunMutation(m.request_id, m.udf_path, m.args, self.identity)]

    # -- events ------------------------------------------------------------------------------

    def receive(self, text: str | bytes, now_ms: float | None = None) -> list[Effect]:
        """A frame from the client (``now_ms``: the server clock, for the clock skew)."""
        if self.closed:
            return []
        try:
            msg = parse_client_message(text)
        except ProtocolError as exc:
            return self._fatal(f"Invalid message: {exc}")
        return self.receive_message(msg, now_ms, len(text))

    def receive_message(self, msg: Any, now_ms: float | None = None, size: int = 0) -> list[Effect]:
        """A frame the driver parsed itself (with ``parse_client_message``).

        The driver parses a large frame off the event loop; a :class:`ProtocolError` in
        its place ends the socket. ``size`` (the frame's length) is counted in
        :attr:`inflight_bytes` while the mutation or action it asks for is queued or runs.
        """
        self.changes += 1
        if self.closed:
            return []
        self._last_size = size
        if isinstance(msg, ProtocolError):
            return self._fatal(f"Invalid message: {msg}")
        if isinstance(msg, Connect):
            if self.connected:
                return self._fatal("Connect was sent twice on one socket")
            self.connected = True
            self.session_id = msg.session_id
            if msg.client_ts and now_ms is not None:
                self.client_clock_skew_ms = msg.client_ts - now_ms
                self._skew_json = None
            return self._maybe_compute()
        if not self.connected:
            return self._fatal("the first message on a socket must be Connect")
        if isinstance(msg, ModifyQuerySet):
            return self._modify(msg)
        if isinstance(msg, Mutation):
            if len(self.mutations) >= self.max_queued_mutations:
                self.closed = True
                return [Close(1013, "TooManyConcurrentRequests: mutation queue full")]
            self.mutations.append(msg)
            self._mutation_sizes.append(self._last_size)
            self.inflight_bytes += self._last_size
            return self._next_mutation()
        if isinstance(msg, Action):
            if self.actions_running >= self.max_inflight_actions:
                return [
                    Send(
                        _action_failure(
                            msg.request_id,
                            f"TooManyRequestsError: this socket already has "
                            f"{self.actions_running} actions running (the limit is "
                            f"{self.max_inflight_actions}); wait for one to finish",
                        )
                    )
                ]
            self.actions_running += 1
            self._action_sizes[msg.request_id] = (
                self._action_sizes.get(msg.request_id, 0) + self._last_size
            )
            self.inflight_bytes += self._last_size
            return [RunAction(msg.request_id, msg.udf_path, msg.args, self.identity)]
        if isinstance(msg, Authenticate):
            return self._authenticate(msg)
        if isinstance(msg, Event):
            return []
        return self._fatal("unhandled message")  # pragma: no cover - parse covers all types

    def _modify(self, msg: ModifyQuerySet) -> list[Effect]:
        if msg.base_version != self.received_query_set:
            return self._fatal(
                f"Base version {msg.base_version} passed up doesn't match the current "
                f"version {self.received_query_set}"
            )
        if msg.new_version <= msg.base_version:
            return self._fatal("ModifyQuerySet.newVersion must be greater than baseVersion")
        adds = sum(isinstance(mod, Add) for mod in msg.modifications)
        if len(self.queries) + adds - (len(msg.modifications) - adds) > self.max_queries:
            return self._fatal(
                f"TooManyRequestsError: a socket may hold at most {self.max_queries} queries; "
                f"this ModifyQuerySet would make {len(self.queries)} + {adds} added"
            )
        for mod in msg.modifications:
            if isinstance(mod, Add):
                if mod.query_id in self.queries:
                    self.closed = True
                    return [Close(1011, f"InternalServerError: query {mod.query_id} added twice")]
                spec = QuerySpec(mod.udf_path, mod.args, mod.journal)
                self.queries[mod.query_id] = spec
                self._added[mod.query_id] = spec
                self.removed.discard(mod.query_id)
                self.sent.pop(mod.query_id, None)
            elif isinstance(mod, Remove):
                if mod.query_id not in self.queries:
                    self.closed = True
                    return [
                        Close(1011, f"InternalServerError: query {mod.query_id} is not in the set")
                    ]
                del self.queries[mod.query_id]
                self._added.pop(mod.query_id, None)
                self._dropped.add(mod.query_id)
                self.removed.add(mod.query_id)
        self.received_query_set = msg.new_version
        return self._need_transition()

    def _authenticate(self, msg: Authenticate) -> list[Effect]:
        if msg.base_version != self.received_identity:
            self.closed = True
            return [Close(1011, "InternalServerError: identity version mismatch")]
        if msg.token_type == "None":
            identity = None
        else:
            try:
                if self.authenticate is None:
                    raise AuthFailure("this server accepts no authentication tokens")
                value = msg.value
                if msg.impersonating is not None:
                    # An admin key acting as a user: the same form as over HTTP.
                    acting_as = base64.b64encode(dumps(msg.impersonating).encode()).decode()
                    value = f"{value or ''}:{acting_as}"
                identity = self.authenticate(msg.token_type, value)
            except AuthFailure as exc:
                self.closed = True
                error = {
                    "type": "AuthError",
                    "error": str(exc),
                    "baseVersion": self.version_identity,
                    "authUpdateAttempted": True,
                }
                return [Send(dumps(error)), Close(1000, "AuthError")]
        self.identity = identity
        self.admin = msg.token_type == "Admin"
        self.received_identity += 1
        # Every query re-runs under the new identity and is sent again.
        self.sent.clear()
        self._reset = True
        return self._need_transition()

    def auth_expires_at(self) -> float | None:
        """When the current identity's token expires (its ``exp``, seconds since the epoch)."""
        exp = self.identity.get("exp") if self.identity else None
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            return float(exp)
        return None

    def check_auth_expiry(self, now_s: float) -> list[Effect]:
        """Drop the identity if its token has expired by ``now_s`` (epoch seconds).

        The client is told with ``AuthError{authUpdateAttempted: false}`` (it fetches a
        fresh token); the socket goes on unauthenticated, every query re-running.
        """
        expires = self.auth_expires_at()
        if self.closed or expires is None or now_s < expires:
            return []
        self.changes += 1
        self.identity = None
        self.sent.clear()
        self._reset = True
        error = {
            "type": "AuthError",
            "error": "the authentication token expired; continuing unauthenticated",
            "baseVersion": self.version_identity,
            "authUpdateAttempted": False,
        }
        return [Send(dumps(error)), *self._need_transition()]

    def reject_binary(self) -> list[Effect]:
        """A binary frame arrived: not part of the protocol (ends the socket)."""
        self.changes += 1
        return self._fatal("binary frames are not part of the protocol; send JSON text frames")

    def watched_changed(self) -> list[Effect]:
        """A query of this socket got a new result (a commit touched what it read)."""
        self.changes += 1
        return self._need_transition()

    def mutation_finished(
        self,
        request_id: int,
        *,
        ts: int | None = None,
        value_json: str | None = None,
        error_message: str | None = None,
        error_data_json: str | None = None,
        log_lines: list[str] | tuple[str, ...] = (),
    ) -> list[Effect]:
        """The running mutation finished.

        It committed at ``ts`` with ``value_json``, or failed with ``error_message`` (and
        ``error_data_json`` for a ConvexError).
        """
        self.changes += 1
        self.mutation_running = False
        if self._mutation_sizes:
            self.inflight_bytes -= self._mutation_sizes.popleft()
        if self.closed:
            return []
        logs = dumps(list(log_lines))
        if error_message is None:
            text = (
                f'{{"type":"MutationResponse","requestId":{request_id},"success":true,'
                f'"result":{value_json or "null"},"ts":"{encode_ts(ts or 0)}","logLines":{logs}}}'
            )
        else:
            data = f',"errorData":{error_data_json}' if error_data_json is not None else ""
            text = (
                f'{{"type":"MutationResponse","requestId":{request_id},"success":false,'
                f'"result":{dumps(error_message)},"ts":null,"logLines":{logs}{data}}}'
            )
        self.must_send = True
        self._running_commit_ts = None
        effects: list[Effect] = [Send(text)]
        # The next transition must reach this commit (set before a held transition is
        # finished: finishing it asks for the next one).
        self.pending.needed = True
        self.pending.min_ts = max(self.pending.min_ts, ts or 0)
        held, self._held = self._held, None
        if held is not None:
            effects += self._finish_transition(*held)
        effects += self._maybe_compute()
        effects += self._next_mutation()
        return effects

    def mutation_committed(self, ts: int) -> None:
        """The running mutation committed at ``ts`` (not yet durable or answered)."""
        self.changes += 1
        if self.mutation_running:
            self._running_commit_ts = ts

    def action_finished(
        self,
        request_id: int,
        *,
        value_json: str | None = None,
        error_message: str | None = None,
        error_data_json: str | None = None,
        log_lines: list[str] | tuple[str, ...] = (),
    ) -> list[Effect]:
        """An action finished (successfully with ``value_json``, or with an error)."""
        self.changes += 1
        self.actions_running = max(0, self.actions_running - 1)
        self.inflight_bytes -= self._action_sizes.pop(request_id, 0)
        if self.closed:
            return []
        logs = dumps(list(log_lines))
        if error_message is None:
            text = (
                f'{{"type":"ActionResponse","requestId":{request_id},"success":true,'
                f'"result":{value_json or "null"},"logLines":{logs}}}'
            )
        else:
            data = f',"errorData":{error_data_json}' if error_data_json is not None else ""
            text = (
                f'{{"type":"ActionResponse","requestId":{request_id},"success":false,'
                f'"result":{dumps(error_message)},"logLines":{logs}{data}}}'
            )
        # The action's mutations may have changed what this socket watches.
        return [Send(text), *self._need_transition()]

    def transition_computed(
        self, ts: int, results: dict[int, QueryResult], server_ts_ns: int
    ) -> list[Effect]:
        """The results of the requested :class:`ComputeTransition`, all at snapshot ``ts``.

        A snapshot that holds the running mutation's commit (see
        :meth:`mutation_committed`) is held until that mutation's ``MutationResponse`` has
        gone out: a client that saw the write before the response would show its
        optimistic update and the real row together (Convex's sync worker never
        transitions past a pending mutation). A mutation that commits after the snapshot
        was fixed commits past it, so nothing else waits.
        """
        self.changes += 1
        if self.closed:
            self.computing = False
            return []
        commit_ts = self._running_commit_ts
        if self.mutation_running and commit_ts is not None and commit_ts <= ts:
            self._held = (ts, results, server_ts_ns)
            return []
        return self._finish_transition(ts, results, server_ts_ns)

    def transition_now(
        self,
        ts: int,
        query_ids: Iterable[int],
        result: QueryResult,
        server_ts_ns: int,
        texts: dict[Any, tuple[str, str]],
    ) -> str | None:
        """The frame of a transition to snapshot ``ts`` where ``query_ids`` hold ``result``.

        The fan-out path: when one shared result changed for a socket with nothing else
        under way (no transition computing or wanted, no query added or removed, no
        identity change, no mutation whose commit the snapshot holds), the driver skips
        :class:`ComputeTransition` and :meth:`transition_computed` and sends this text
        (the frame the general path would send; ``""`` when there is nothing to send).
        ``None`` when something is under way: the driver then takes the general path
        (:meth:`watched_changed`).

        ``texts`` is a memo shared by the sockets handed the same ``result`` at the same
        ``ts`` and ``server_ts_ns``: sessions at the same start version, with the same
        versions, clock skew and changed query ids, get the same text object (built
        once), and share their next start version.
        """
        if (
            self.computing
            or self.pending.needed
            or self.closed
            or not self.connected
            or self._reset
            or self._added
            or self._dropped
            or self.removed
            or self._held is not None
        ):
            return None
        commit_ts = self._running_commit_ts
        if self.mutation_running and commit_ts is not None and commit_ts <= ts:
            return None
        fingerprint = result.fingerprint
        queries, sent = self.queries, self.sent
        changed: list[int] = []
        for query_id in query_ids:
            if query_id in queries and sent.get(query_id) != fingerprint:
                sent[query_id] = fingerprint
                changed.append(query_id)
        query_set, identity = self.received_query_set, self.received_identity
        ts = max(ts, self.version_ts)
        if not changed and self._unchanged(query_set, identity, ts):
            return ""
        start, skew = self._start_and_skew()
        key = (start, query_set, identity, ts, skew, *changed)
        memo = texts.get(key)
        if memo is None:
            memo = texts[key] = _transition_memo(key, changed, result, server_ts_ns)
        self._advance(query_set, identity, ts, memo[1])
        return memo[0]

    def steady_ids(self, query_ids: Iterable[int]) -> tuple[int, ...] | None:
        """The ids :meth:`transition_fast` may take in place of ``query_ids`` from now on.

        Call it right after :meth:`transition_now` returned a text (not ``None``) for
        ``query_ids``: ``None`` when the fast path may not follow (a mutation is running,
        whose commit a later snapshot could hold). The ids are those of the set, in
        ``query_ids``' order (the order of the modifications, and of the memo's key).
        """
        if self.mutation_running:
            return None
        queries = self.queries
        return tuple(query_id for query_id in query_ids if query_id in queries)

    def transition_fast(
        self,
        ts: int,
        query_ids: tuple[int, ...],
        result: QueryResult,
        server_ts_ns: int,
        texts: dict[Any, tuple[str, str]],
    ) -> str:
        """:meth:`transition_now` for a session nothing happened to since its last one.

        The fan-out path of a socket that watches a result in lockstep: valid only while
        :attr:`changes` is what it was when :meth:`transition_now` last returned a text
        and :meth:`steady_ids` gave ``query_ids`` (the driver keeps both). Then every
        condition :meth:`transition_now` checks still holds and the versions received
        are the versions sent, so it skips those checks: the text (shared through
        ``texts`` with :meth:`transition_now`, same key) and the state after it are the
        ones :meth:`transition_now` would give.
        """
        fingerprint = result.fingerprint
        sent = self.sent
        changed: list[int] = []
        for query_id in query_ids:
            if sent.get(query_id) != fingerprint:
                sent[query_id] = fingerprint
                changed.append(query_id)
        version_ts = self.version_ts
        if ts < version_ts:
            ts = version_ts
        if not changed and ts == version_ts and not self.must_send:
            return ""
        start, skew = self._start_version, self._skew_json
        if start is None or skew is None:
            start, skew = self._start_and_skew()
        key = (start, self.version_query_set, self.version_identity, ts, skew, *changed)
        memo = texts.get(key)
        if memo is None:
            memo = texts[key] = _transition_memo(key, changed, result, server_ts_ns)
        self.must_send = False
        self.version_ts = ts
        self._start_version = memo[1]
        return memo[0]

    def _finish_transition(
        self, ts: int, results: dict[int, QueryResult], server_ts_ns: int
    ) -> list[Effect]:
        self.computing = False
        if self.closed:
            return []
        query_set, identity = self._computing_versions
        mods: list[str] = []
        for query_id, result in results.items():
            if query_id not in self.queries or self.sent.get(query_id) == result.fingerprint:
                continue
            self.sent[query_id] = result.fingerprint
            mods.append(_modification(query_id, result))
        for query_id in sorted(self.removed):
            mods.append(f'{{"type":"QueryRemoved","queryId":{query_id}}}')
            self.sent.pop(query_id, None)
        self.removed.clear()
        text = self._transition_text(query_set, identity, ts, mods, server_ts_ns)
        effects: list[Effect] = [Send(text)] if text else []
        effects += self._maybe_compute()
        return effects

    def _transition_text(
        self, query_set: int, identity: int, ts: int, mods: list[str], server_ts_ns: int
    ) -> str:
        """The ``Transition`` from the last version sent to ``(query_set, identity, ts)``.

        Moves the version on; ``""`` (nothing sent) when the transition would tell the
        client nothing: no modification, no version change, and no mutation response
        waiting for it.
        """
        ts = max(ts, self.version_ts)
        if not mods and self._unchanged(query_set, identity, ts):
            return ""
        start, skew = self._start_and_skew()
        end = _version_json(query_set, identity, ts)
        self._advance(query_set, identity, ts, end)
        return _transition_json(start, end, mods, skew, server_ts_ns)

    def _unchanged(self, query_set: int, identity: int, ts: int) -> bool:
        """A transition to these versions, with no modification, tells the client nothing."""
        return (
            not self.must_send
            and query_set == self.version_query_set
            and identity == self.version_identity
            and ts == self.version_ts
        )

    def _start_and_skew(self) -> tuple[str, str]:
        """The JSON of the last version sent and of the client's clock skew (both kept)."""
        start = self._start_version
        if start is None:
            start = _version_json(self.version_query_set, self.version_identity, self.version_ts)
        skew = self._skew_json
        if skew is None:
            skew = self._skew_json = dumps(self.client_clock_skew_ms)
        return start, skew

    def _advance(self, query_set: int, identity: int, ts: int, end: str) -> None:
        """A transition to ``end`` (its JSON) is sent: the client's version is now that."""
        self.must_send = False
        self.version_query_set, self.version_identity, self.version_ts = query_set, identity, ts
        self._start_version = end

    def ping_due(self, now_s: float, interval_s: float = PING_INTERVAL_S) -> list[Effect]:
        """A ``Ping`` if nothing was sent for ``interval_s`` (call it from a timer)."""
        if self.closed or now_s - self.last_send_s < interval_s:
            return []
        return [Send('{"type":"Ping"}')]

    def sent_at(self, now_s: float) -> None:
        """Record that a frame was sent at ``now_s``."""
        self.last_send_s = now_s


_last_ts: tuple[int, str] = (0, encode_ts(0))


def _ts_text(ts: int) -> str:
    """``encode_ts(ts)``, remembered for the last timestamp.

    A fan-out encodes the same timestamp for every socket.
    """
    global _last_ts
    last = _last_ts
    if last[0] == ts:
        return last[1]
    text = encode_ts(ts)
    _last_ts = (ts, text)
    return text


def _version_json(query_set: int, identity: int, ts: int) -> str:
    """A ``StateVersion``'s JSON."""
    return f'{{"querySet":{query_set},"identity":{identity},"ts":"{_ts_text(ts)}"}}'


def _transition_memo(
    key: tuple[Any, ...], changed: list[int], result: QueryResult, server_ts_ns: int
) -> tuple[str, str]:
    """The text of a transition memo ``key`` names (see ``transition_now``) and its end.

    ``key`` is ``(start, query_set, identity, ts, skew, *changed)``: the versions it ends
    at, with ``result`` for every id in ``changed``.
    """
    start, query_set, identity, ts, skew = key[:5]
    mods = [_modification(query_id, result) for query_id in changed]
    end = _version_json(query_set, identity, ts)
    return _transition_json(start, end, mods, skew, server_ts_ns), end


def _transition_json(start: str, end: str, mods: list[str], skew: str, server_ts_ns: int) -> str:
    """A ``Transition`` frame's JSON from its parts (versions and modifications as JSON)."""
    return (
        f'{{"type":"Transition","startVersion":{start},"endVersion":{end},'
        f'"modifications":[{",".join(mods)}],"clientClockSkew":{skew},'
        f'"serverTs":{server_ts_ns}}}'
    )


_UPDATED = '{"type":"QueryUpdated","queryId":'
_FAILED = '{"type":"QueryFailed","queryId":'


def _modification(query_id: int, result: QueryResult) -> str:
    head = _UPDATED if result.error_message is None else _FAILED
    return f"{head}{query_id},{result.modification_tail()}"


def _action_failure(request_id: int, message: str) -> str:
    """An ``ActionResponse`` failing with ``message`` (a request id in Convex's form)."""
    text = f"[Request ID: {secrets.token_hex(8)}] Server Error\nUncaught {message}"
    return (
        f'{{"type":"ActionResponse","requestId":{request_id},"success":false,'
        f'"result":{dumps(text)},"logLines":[]}}'
    )
