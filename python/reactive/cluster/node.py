"""One server process of a cluster: many processes on one PostgreSQL or MySQL database.

Every process started with ``--cluster-key`` on the same database campaigns for the
database's writer lease. The one holding it, the **leader**, is the writer: it commits
(mutations, schema changes, scheduled functions, crons, retention). The others are
**followers**: read replicas (:mod:`reactive.db.follower`) that serve queries,
subscriptions, HTTP and actions from their own copy of the state, tailing the log the
leader commits, and run mutations too: a mutation that reaches a follower runs there at
the follower's snapshot, and its transaction (begin timestamp, read set, written
documents: :mod:`reactive_core`'s ``forward`` module) goes to the leader, which validates
it against every commit since its snapshot and commits it, or refuses it with a conflict
(the follower runs it again, as for any conflict). The follower answers once it has
applied the commit (so the client's next read, on the same process, sees it). A mutation
that does what only the writer does (it creates a table) is forwarded whole instead, as a
call that runs on the leader.

Failover: a follower tries to take the lease every ``campaign_s``; the lease is a lock
held by the leader's database session, so the database frees it when the leader's process
dies. The follower that takes it raises the lease epoch (every commit checks it: a deposed
leader cannot commit), applies what remains of the log and becomes the leader in place
(:meth:`reactive.db.database.Database.promote`); the others forward to it. A follower's
mutation carries a request id recorded with its commit (``_session_requests``): a
transaction resent after a lost answer conflicts with its own commit (the leader adds the
key of every written document to the read set), and the mutation, run again, is answered
from the record: exactly once.

Transport: ``POST /_cluster/commit`` (a transaction, binary) and ``POST /_cluster/call`` (a
whole call, JSON) on the leader, over HTTP (aiohttp's client: an httpx client cost the
follower about 3-4 ms of CPU per call, mostly its connection pool's bookkeeping),
authenticated with an HMAC of the cluster key (:mod:`reactive.cluster.protocol`); where to
reach the leader is the ``cluster_leader`` global it writes when it takes the lease.
Chosen over a persistent WebSocket: each commit is one request and one answer,
kept-alive connections are reused, a leader that dies fails its requests at once, and a
load balancer or proxy between processes needs nothing special.

Source: Convex separates function runners from its single committer
(``crates/database/src/committer.rs`` in get-convex/convex-backend); here every process is
a replica that runs functions, and the shared database is the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reactive import _core
from reactive.cluster.protocol import (
    HEADER,
    REPLY_HEADER,
    NonceCache,
    decode_error,
    encode_error,
    sign_reply,
    sign_request,
    verify_reply,
    verify_request,
)
from reactive.errors import (
    IncompatibleDatabaseError,
    InvalidQueryError,
    PersistenceError,
    TransactionTooOldError,
)
from reactive.persistence import open_persistence

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from reactive.db.database import Database
    from reactive.db.runner import MutationOutcome
    from reactive.functions import Function

log = logging.getLogger("reactive.cluster")

__all__ = ["LEADER_GLOBAL", "ClusterNode", "ClusterUnavailableError", "commit_forwarded"]

LEADER_GLOBAL = "cluster_leader"
"""The global the leader writes when it takes the lease: ``{"url", "node", "epoch"}``."""

CALL_PATH = "/_cluster/call"
COMMIT_PATH = "/_cluster/commit"
MAX_BODY_BYTES = 64 << 20
"""The largest request between processes (a transaction's writes are at most 16 MiB)."""
COMMIT_WAIT_S = 5.0
"""How long the leader waits to publish a forwarded transaction's snapshot (seconds)."""
FORWARD_CONNECTIONS = 128
"""Most connections a follower keeps open to the leader (forwarded calls queue beyond).

Each forwarded transaction holds one for its commit's round trip (the leader's group commit
included): with 32, 64 clients through one follower were capped at about 1,300 mutations/s
(p50 48 ms); with 128, 1,500-1,750/s (p50 33-40 ms), the follower then short of CPU."""


class ClusterUnavailableError(PersistenceError):
    """No leader answered a forwarded mutation in time (the cluster is failing over)."""


async def commit_forwarded(db: Database, transaction: bytes, wake_scheduler: bool) -> int | None:
    """Validate and commit a transaction a follower ran, on the writer ``db``.

    ``transaction`` is ``Transaction.forwarded()``'s bytes. Waits (up to
    :data:`COMMIT_WAIT_S`) until its snapshot is published here: a follower may have applied
    a commit this process has made durable but not yet published. Returns the commit
    timestamp once durable, or ``None`` if it wrote nothing; ``wake_scheduler`` wakes the
    scheduler after the commit (it scheduled a function).

    Raises:
        WriteConflict, TransactionTooOldError: refused (the follower runs it again).
        InvalidQueryError: malformed bytes.
        CommitOutcomeUnknownError: commits stopped here.
    """
    stopped = db._flusher.stopped_error()
    if stopped is not None:
        raise stopped
    begin_ts = _core.forwarded_begin_ts(transaction)
    if db._engine.visible_ts < begin_ts:
        try:
            async with asyncio.timeout(COMMIT_WAIT_S):
                await db._flusher.wait(begin_ts)
        except TimeoutError:
            raise TransactionTooOldError(
                f"the leader did not reach the follower's snapshot {begin_ts} within "
                f"{COMMIT_WAIT_S:g} s; retry"
            ) from None
    ts = db._engine.commit_forwarded(transaction)
    if ts is not None:
        await db._flusher.wait(ts)
        if wake_scheduler:
            db._wake_scheduler()
    return ts


class ClusterNode:
    """This process's role in a cluster, its campaign for the lease and its forwarding.

    Args:
        db_url: The shared database (``postgresql://`` or ``mysql://``).
        key: The cluster key (bytes, :func:`reactive.cluster.protocol.check_key`).
        advertise_url: Where the other processes reach this one (``http://host:port``).
        campaign_s: How often a follower tries to take the lease (seconds).
        lease_check_s: How often the leader checks that it still holds the lease
            (seconds); losing it calls ``on_must_restart``.
        forward_timeout_s: How long a forwarded mutation waits for a leader across a
            failover before failing with ``ClusterUnavailableError`` (seconds).
        node_id: This process's name in the cluster (default ``host:pid:random``).
    """

    def __init__(
        self,
        db_url: str,
        key: bytes,
        advertise_url: str,
        *,
        campaign_s: float = 0.5,
        lease_check_s: float = 1.0,
        forward_timeout_s: float = 30.0,
        node_id: str | None = None,
    ) -> None:
        self.db_url = db_url
        self.key = key
        self.advertise_url = advertise_url.rstrip("/")
        self.campaign_s = campaign_s
        self.lease_check_s = lease_check_s
        self._holding: asyncio.Task[None] | None = None
        # Called once, with the reason, when this process can no longer serve its role and
        # must start over (the server exits for its supervisor to restart it): the leader
        # found its lease gone (it cannot commit), or a follower stopped following (the
        # log has a gap: retention pruned past it while it was cut off).
        self.on_must_restart: Callable[[str], None] | None = None
        self.forward_timeout_s = forward_timeout_s
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.db: Database | None = None
        self._nonces = NonceCache()
        self._campaign: asyncio.Task[None] | None = None
        self._client: Any = None
        self._leader_url: str | None = None
        # Called after a promotion (the server starts its writer-only work).
        self.on_promoted: Any = None
        self.promotions = 0
        self.forwarded = 0
        self.became_leader_at: float | None = None

    # -- roles ---------------------------------------------------------------------------

    @property
    def role(self) -> str:
        """``"leader"`` or ``"follower"``."""
        if self.db is None or self.db.following:
            return "follower"
        return "leader"

    async def open(self, open_db: Any) -> Database:
        """Open the database as its leader if the lease is free, else as a follower.

        ``open_db(follow: bool)`` opens it (``reactive.open`` with the server's options).
        """
        try:
            db: Database = await open_db(False)
        except IncompatibleDatabaseError as exc:
            if "writer lease" not in str(exc):
                raise
            db = await open_db(True)
        self.db = db
        db._strict_reads = True
        if db.following:
            db._forward = self.forward
            db._forward_commit = self.commit
            assert db._follower is not None
            db._follower.on_stopped = lambda exc: self._must_restart(
                f"this process stopped following the log: {exc}"
            )
            self._campaign = asyncio.get_running_loop().create_task(
                self._run_campaign(), name="reactive-cluster-campaign"
            )
        else:
            await self._announce()
        return db

    async def close(self) -> None:
        """Stop campaigning, checking the lease and forwarding (not the database)."""
        if self._holding is not None:
            self._holding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._holding
            self._holding = None
        if self._campaign is not None:
            self._campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._campaign
            self._campaign = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _announce(self) -> None:
        """Write where the leader is (the followers forward there)."""
        assert self.db is not None
        epoch = getattr(self.db._persistence, "_epoch", None)
        record = {"url": self.advertise_url, "node": self.node_id, "epoch": epoch}
        await self.db._persistence.set_global(LEADER_GLOBAL, json.dumps(record).encode())
        self.became_leader_at = time.time()
        log.info("cluster: %s leads (epoch %s) at %s", self.node_id, epoch, self.advertise_url)
        if self._holding is None:
            self._holding = asyncio.get_running_loop().create_task(
                self._hold_lease(), name="reactive-cluster-lease"
            )

    async def _hold_lease(self) -> None:
        """Check the lease every ``lease_check_s``; report it lost (``on_must_restart``).

        The lease is the database session's lock: when the session ends (the connection
        dropped, the database server gave up on this process), another process may take
        it and lead. The epoch check of every commit keeps this one from committing after
        that; this check makes it notice within seconds, not at its next commit.
        """
        assert self.db is not None
        db = self.db
        while not db._closed:
            await asyncio.sleep(self.lease_check_s)
            check = getattr(db._persistence, "check_lease", None)
            if check is None or db._closed:
                return
            try:
                await check()
            except Exception as exc:
                if db._closed:
                    return
                self._must_restart(f"this process lost the writer lease: {exc}")
                return

    def _must_restart(self, reason: str) -> None:
        log.critical("cluster: %s must restart: %s", self.node_id, reason)
        if self.on_must_restart is not None:
            self.on_must_restart(reason)

    async def _run_campaign(self) -> None:
        """Try to take the lease until this process holds it, then promote."""
        assert self.db is not None
        db = self.db
        while db.following and not db._closed:
            try:
                writer = await open_persistence(db.url, **db._persistence_options)
            except IncompatibleDatabaseError:
                await asyncio.sleep(self.campaign_s)
                continue
            except (PersistenceError, OSError) as exc:
                log.warning("cluster: campaigning for the lease failed: %s", exc)
                await asyncio.sleep(self.campaign_s)
                continue
            started = time.perf_counter()
            try:
                await db.promote(writer)
            except Exception as exc:
                log.error("cluster: promotion failed, following on: %s", exc, exc_info=exc)
                await asyncio.sleep(self.campaign_s)
                continue
            self.promotions += 1
            await self._announce()
            if self.on_promoted is not None:
                await self.on_promoted()
            log.info(
                "cluster: %s took over as leader in %.3f s",
                self.node_id,
                time.perf_counter() - started,
            )
            return

    # -- forwarding (a follower) -----------------------------------------------------------

    async def _leader(self, refresh: bool) -> str | None:
        if self._leader_url is not None and not refresh:
            return self._leader_url
        assert self.db is not None
        raw = await self.db._persistence.get_global(LEADER_GLOBAL)
        if raw is None:
            return None
        try:
            url = str(json.loads(raw)["url"])
        except (ValueError, KeyError, TypeError):
            return None
        self._leader_url = None if url == self.advertise_url else url
        return self._leader_url

    async def _exchange(self, path: str, body: bytes, content_type: str) -> Any | None:
        """POST ``body`` to the leader's ``path`` until a leader answers; its reply (JSON).

        Resent (re-signed) across transport failures and failovers, to whichever process
        leads, for up to ``forward_timeout_s``. ``None`` once this process leads.

        Raises:
            ClusterUnavailableError: no leader answered within ``forward_timeout_s``.
            PersistenceError: the leader refused this process's key, answered without it,
                or refused the request as malformed or too large (400, 413).
        """
        assert self.db is not None
        db = self.db
        deadline = time.monotonic() + self.forward_timeout_s
        refresh = False
        delay = 0.02
        last: str = "no leader is known yet"
        while True:
            if not db.following:
                return None
            url = await self._leader(refresh)
            refresh = True
            if url is not None:
                header, nonce = sign_request(self.key, "POST", path, body)
                status, reply_header, content, failure = await self._post(
                    url + path, body, header, content_type
                )
                if failure is not None:
                    last = f"{url}: {failure}"
                elif status == 200:
                    if not verify_reply(self.key, nonce, reply_header, content):
                        raise PersistenceError(
                            f"the cluster leader at {url} answered without the cluster "
                            "key's signature; check that every process has the same key"
                        )
                    self.forwarded += 1
                    return json.loads(content)
                elif status == 403:
                    raise PersistenceError(
                        f"the cluster leader at {url} refused this process's cluster key; "
                        "every process needs the same --cluster-key"
                    )
                elif status in (400, 413):
                    # Sent again it would be refused again: say so now.
                    raise PersistenceError(
                        f"the cluster leader at {url} refused the request (HTTP {status}: "
                        f"{content[:200].decode(errors='replace')}); do all the cluster's "
                        "processes run the same version?"
                    )
                else:
                    last = f"{url}: HTTP {status}"
            if time.monotonic() >= deadline:
                raise ClusterUnavailableError(
                    f"no cluster leader took the mutation within {self.forward_timeout_s:g} s "
                    f"({last}); retry"
                )
            await asyncio.sleep(delay)
            # Short: a new leader announces itself soon after the old one's death.
            delay = min(delay * 2, 0.1)

    async def forward(
        self,
        fn: Function[Any],
        args: Any,
        identity: dict[str, Any] | None,
        request: tuple[str, int],
        on_commit: Any,
    ) -> MutationOutcome | None:
        """Run a mutation on the leader; ``None`` once this process leads (run it here).

        For a mutation that does what only the writer does (it creates a table): others
        run here and only their transactions go to the leader (:meth:`commit`). The call
        carries its request id, recorded with its commit, so a call resent after a lost
        answer or a failover runs once, here or on the leader.

        Raises:
            ClusterUnavailableError: no leader answered within ``forward_timeout_s``.
            Exception: what the mutation raised on the leader (the same class).
        """
        from reactive.db.runner import MutationOutcome

        assert self.db is not None
        body = json.dumps(
            {
                "path": fn.path,
                "args": _core.convex_json(args),
                "identity": identity,
                "request": list(request),
            }
        ).encode()
        reply = await self._exchange(CALL_PATH, body, "application/json")
        if reply is None:
            return None
        if not reply.get("ok"):
            raise decode_error(reply.get("error") or {})
        ts = int(reply["ts"])
        if on_commit is not None:
            on_commit(ts)
        # Read your writes: answer once this process has applied it.
        if self.db._follower is not None:
            self.db._follower.heard_of(ts)
        await self.db.wait_for_timestamp(ts)
        value = _core.from_convex_json(json.loads(reply["value"]), "result")
        return MutationOutcome(value, list(reply.get("logLines") or []), ts)

    async def commit(self, transaction: bytes, wake_scheduler: bool) -> int | None:
        """Have the leader validate and commit a transaction run here.

        ``transaction`` is ``Transaction.forwarded()``'s bytes (begin timestamp, read set,
        written documents); ``wake_scheduler``: it scheduled a function (the leader's
        scheduler looks at once). Returns the commit timestamp once it is durable (the
        caller waits until this process applied it), or ``None`` when it wrote nothing or
        this process leads now (the caller commits it here).

        Resent across failures as it is: if an earlier send committed, the resend conflicts
        with it (the writer adds every written document's key to the read set) and the
        mutation runs again, answered from its request record.

        Raises:
            WriteConflict, TransactionTooOldError: refused; run the mutation again.
            ClusterUnavailableError: no leader answered within ``forward_timeout_s``.
        """
        body = (b"\x01" if wake_scheduler else b"\x00") + transaction
        reply = await self._exchange(COMMIT_PATH, body, "application/octet-stream")
        if reply is None:
            return None
        if not reply.get("ok"):
            raise decode_error(reply.get("error") or {})
        ts = reply.get("ts")
        return None if ts is None else int(ts)

    async def _post(
        self, url: str, body: bytes, header: str, content_type: str
    ) -> tuple[int, str | None, bytes, str | None]:
        """POST ``body`` to the leader: ``(status, reply signature, content, failure)``.

        ``failure`` names a transport error (nothing answered), else it is ``None``.
        """
        import aiohttp

        if self._client is None:
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=60.0, sock_connect=2.0),
                connector=aiohttp.TCPConnector(limit=FORWARD_CONNECTIONS),
            )
        try:
            async with self._client.post(
                url, data=body, headers={HEADER: header, "Content-Type": content_type}
            ) as response:
                content = await response.read()
                return response.status, response.headers.get(REPLY_HEADER), content, None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, None, b"", f"{type(exc).__name__}: {exc}"

    # -- the leader's endpoint ---------------------------------------------------------------

    async def _authenticated_body(
        self, request: Request, path: str
    ) -> tuple[bytes, str] | Response:
        """The body and nonce of a cluster request, or the error response to send."""
        from starlette.responses import JSONResponse

        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return JSONResponse({"code": "TooLarge"}, status_code=413)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return JSONResponse({"code": "TooLarge"}, status_code=413)
            chunks.append(chunk)
        body = b"".join(chunks)
        nonce = verify_request(
            self.key, request.headers.get(HEADER), "POST", path, body, self._nonces
        )
        if nonce is None:
            return JSONResponse({"code": "Forbidden"}, status_code=403)
        db = self.db
        if db is None or db.following or db._closed:
            return JSONResponse({"code": "NotLeader"}, status_code=503)
        return body, nonce

    def _signed(self, nonce: str, reply: dict[str, Any]) -> Response:
        from starlette.responses import Response

        text = json.dumps(reply).encode()
        return Response(
            text,
            media_type="application/json",
            headers={REPLY_HEADER: sign_reply(self.key, nonce, text)},
        )

    async def handle_commit(self, request: Request) -> Response:
        """``POST /_cluster/commit``: validate and commit a follower's transaction (leader).

        The body is a flags byte (1: it scheduled a function) and the transaction's bytes.
        The answer, once the commit is durable: ``{"ok": true, "ts": <commit ts or null>}``
        or ``{"ok": false, "error": …}`` (a conflict: the follower runs it again).
        """
        from starlette.responses import JSONResponse

        got = await self._authenticated_body(request, COMMIT_PATH)
        if not isinstance(got, tuple):
            return got
        body, nonce = got
        db = self.db
        assert db is not None
        if len(body) < 1 or body[0] > 1:
            return JSONResponse({"code": "BadRequest"}, status_code=400)
        reply: dict[str, Any]
        try:
            ts = await commit_forwarded(db, body[1:], body[0] == 1)
            reply = {"ok": True, "ts": ts}
        except InvalidQueryError:
            return JSONResponse({"code": "BadRequest"}, status_code=400)
        except Exception as exc:
            reply = {"ok": False, "error": encode_error(exc)}
        return self._signed(nonce, reply)

    async def handle_call(self, request: Request) -> Response:
        """``POST /_cluster/call``: run a follower's mutation here (the leader)."""
        from starlette.responses import JSONResponse

        got = await self._authenticated_body(request, CALL_PATH)
        if not isinstance(got, tuple):
            return got
        body, nonce = got
        db = self.db
        assert db is not None
        try:
            payload = json.loads(body)
            path = str(payload["path"])
            identity = payload.get("identity")
            session, request_id = payload["request"]
            call = (str(session), int(request_id))
            args_text = payload["args"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"code": "BadRequest"}, status_code=400)
        reply: dict[str, Any]
        try:
            fn = db._runner.resolve(path, "mutation", internal_ok=True)
            args = _core.from_convex_json(json.loads(args_text), "args")
            outcome = await db._runner.run_mutation(fn, args, identity, call)
            reply = {
                "ok": True,
                "value": _core.convex_json(outcome.value, result=True),
                "logLines": outcome.log_lines,
                "ts": outcome.ts,
            }
        except Exception as exc:
            reply = {"ok": False, "error": encode_error(exc)}
        return self._signed(nonce, reply)
