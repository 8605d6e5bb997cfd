"""SyncSession, the sans-I/O protocol state machine of one socket (spec §4-9).

Frames go in as JSON text; the effects that come out are inspected. No sockets.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reactive.sync.messages import decode_ts, encode_ts
from reactive.sync.session import (
    MAX_QUEUED_MUTATIONS,
    AuthFailure,
    Close,
    ComputeTransition,
    QueryResult,
    QuerySpec,
    RunAction,
    RunMutation,
    Send,
    SyncSession,
)

ZERO_TS = "AAAAAAAAAAA="
CONNECT = {
    "type": "Connect",
    "sessionId": "3b9c6f1e-8a4d-4c5e-9f7a-2d1b0c9e8f70",
    "connectionCount": 0,
    "lastCloseReason": "InitialConnect",
    "clientTs": 0,
}


# -- helpers -----------------------------------------------------------------------------------


def frame(obj: Any) -> str:
    return json.dumps(obj)


def sent(effects: list[Any]) -> list[dict[str, Any]]:
    """The JSON messages among ``effects``, in order."""
    return [json.loads(e.text) for e in effects if isinstance(e, Send)]


def only(effects: list[Any], kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


def result(value: Any, logs: tuple[str, ...] = (), journal: str | None = None) -> QueryResult:
    value_json = json.dumps(value)
    fp = hashlib.blake2b(f"{value_json}|{logs}|{journal}".encode(), digest_size=16).digest()
    return QueryResult(fp, value_json=value_json, log_lines=logs, journal=journal)


def failed(message: str, data: Any = None, logs: tuple[str, ...] = ()) -> QueryResult:
    data_json = None if data is None else json.dumps(data)
    fp = hashlib.blake2b(f"err|{message}|{data_json}|{logs}".encode(), digest_size=16).digest()
    return QueryResult(fp, error_message=message, error_data_json=data_json, log_lines=logs)


def add(qid: int, path: str = "messages:list", args: Any = None, **extra: Any) -> dict[str, Any]:
    return {"type": "Add", "queryId": qid, "udfPath": path, "args": [args or {}], **extra}


def remove(qid: int) -> dict[str, Any]:
    return {"type": "Remove", "queryId": qid}


def modify(base: int, new: int, *mods: dict[str, Any]) -> str:
    return frame(
        {
            "type": "ModifyQuerySet",
            "baseVersion": base,
            "newVersion": new,
            "modifications": list(mods),
        }
    )


def mutation(request_id: int, path: str = "messages:send", args: Any = None) -> str:
    return frame(
        {"type": "Mutation", "requestId": request_id, "udfPath": path, "args": [args or {}]}
    )


def authenticate(base: int, token_type: str = "User", value: str | None = "tok") -> str:
    msg: dict[str, Any] = {"type": "Authenticate", "baseVersion": base, "tokenType": token_type}
    if value is not None:
        msg["value"] = value
    return frame(msg)


def connected(**kwargs: Any) -> SyncSession:
    s = SyncSession(**kwargs)
    assert s.receive(frame(CONNECT)) == []
    return s


def version(qs: int, ident: int, ts: int) -> dict[str, Any]:
    return {"querySet": qs, "identity": ident, "ts": encode_ts(ts)}


def assert_fatal(effects: list[Any]) -> str:
    """A FatalError with a message, then a Close, and nothing after it."""
    assert len(effects) == 2, effects
    msgs = sent(effects[:1])
    assert msgs and msgs[0]["type"] == "FatalError", effects
    assert set(msgs[0]) == {"type", "error"}
    assert isinstance(msgs[0]["error"], str) and msgs[0]["error"].strip()
    assert isinstance(effects[1], Close)
    return str(msgs[0]["error"])


def transition_of(effects: list[Any]) -> dict[str, Any]:
    msgs = [m for m in sent(effects) if m["type"] == "Transition"]
    assert len(msgs) == 1, effects
    return msgs[0]


def compute_of(effects: list[Any]) -> ComputeTransition:
    computes = only(effects, ComputeTransition)
    assert len(computes) == 1, effects
    compute: ComputeTransition = computes[0]
    return compute


def closed_with(effects: list[Any]) -> Close:
    """The effects are exactly one Close (no frame sent before it)."""
    assert [type(e) for e in effects] == [Close], effects
    close: Close = effects[0]
    return close


# -- Connect ---------------------------------------------------------------------------------


def test_connect_produces_nothing_and_records_the_session() -> None:
    s = SyncSession()
    assert s.receive(frame(CONNECT)) == []
    assert s.session_id == CONNECT["sessionId"]


@pytest.mark.parametrize(
    "first",
    [
        modify(0, 1),
        mutation(0),
        authenticate(0, "None", None),
        frame({"type": "Action", "requestId": 0, "udfPath": "a:b", "args": [{}]}),
    ],
)
def test_connect_must_come_first(first: str) -> None:
    s = SyncSession()
    error = assert_fatal(s.receive(first))
    assert "Connect" in error
    assert s.receive(frame(CONNECT)) == []  # closed: nothing more happens


def test_connect_twice_is_fatal() -> None:
    s = connected()
    assert_fatal(s.receive(frame(CONNECT)))


def test_modify_query_set_with_no_changes_answers_a_transition() -> None:
    """The JS client sends ModifyQuerySet 0->1 with no modifications on every open."""
    s = connected()
    compute = compute_of(s.receive(modify(0, 1)))
    assert compute.added == {} and compute.removed == frozenset() and compute.min_ts == 0
    t = transition_of(s.transition_computed(1700000000000000000, {}, 123))
    assert t["startVersion"] == version(0, 0, 0)
    assert t["startVersion"]["ts"] == ZERO_TS
    assert t["endVersion"] == {"querySet": 1, "identity": 0, "ts": "AAAqNv6clxc="}
    assert t["modifications"] == []
    assert t["serverTs"] == 123


# -- query set -------------------------------------------------------------------------------


def test_add_computes_and_sends_the_result() -> None:
    s = connected()
    compute = compute_of(s.receive(modify(0, 1, add(7, "messages:list", {"channel": "g"}))))
    assert compute.added == {7: QuerySpec("messages:list", {"channel": "g"}, None)}
    assert compute.identity is None
    t = transition_of(s.transition_computed(5, {7: result(["hello"], ("[LOG] ran",))}, 0))
    assert t["endVersion"] == version(1, 0, 5)
    assert t["modifications"] == [
        {
            "type": "QueryUpdated",
            "queryId": 7,
            "value": ["hello"],
            "logLines": ["[LOG] ran"],
            "journal": None,
        }
    ]


def test_journal_is_passed_in_and_out() -> None:
    s = connected()
    compute = compute_of(s.receive(modify(0, 1, add(0, journal="j0"))))
    assert compute.added[0].journal == "j0"
    t = transition_of(s.transition_computed(5, {0: result([], journal="j1")}, 0))
    assert t["modifications"][0]["journal"] == "j1"


@pytest.mark.parametrize("base", [1, 2, 100])
def test_modify_base_version_mismatch_is_fatal(base: int) -> None:
    s = connected()
    error = assert_fatal(s.receive(modify(base, base + 1)))
    assert str(base) in error


def test_modify_base_version_must_follow_the_received_version() -> None:
    s = connected()
    s.receive(modify(0, 1))
    s.receive(modify(1, 3))  # any larger newVersion is fine
    assert s.received_query_set == 3
    assert_fatal(s.receive(modify(1, 2)))


@pytest.mark.parametrize(("base", "new"), [(0, 0), (3, 2), (3, 3)])
def test_new_version_must_exceed_base(base: int, new: int) -> None:
    s = connected()
    if base:
        s.receive(modify(0, base))
    assert_fatal(s.receive(modify(base, new)))


def test_duplicate_add_closes_1011() -> None:
    s = connected()
    s.receive(modify(0, 1, add(1)))
    effects = s.receive(modify(1, 2, add(1)))
    assert len(effects) == 1 and isinstance(effects[0], Close)
    assert effects[0].code == 1011
    assert effects[0].reason.startswith("InternalServerError")
    assert s.closed


def test_duplicate_add_in_one_message_closes_1011() -> None:
    s = connected()
    assert closed_with(s.receive(modify(0, 1, add(1), add(1)))).code == 1011


@pytest.mark.parametrize("mods", [[remove(5)], [add(1), remove(1), remove(1)]])
def test_unknown_remove_closes_1011(mods: list[dict[str, Any]]) -> None:
    s = connected()
    assert closed_with(s.receive(modify(0, 1, *mods))).code == 1011
    assert s.receive(modify(1, 2)) == []


def test_removed_query_is_confirmed_and_never_resent() -> None:
    s = connected()
    s.receive(modify(0, 1, add(0), add(1)))
    s.transition_computed(10, {0: result("a"), 1: result("b")}, 0)
    compute = compute_of(s.receive(modify(1, 2, remove(0))))
    # Only what changed is named: query 1 stays held, query 0 is released.
    assert compute.added == {} and compute.removed == {0}
    # A result for the removed query arriving late is dropped.
    t = transition_of(s.transition_computed(11, {0: result("z"), 1: result("b2")}, 0))
    assert t["endVersion"] == version(2, 0, 11)
    assert {"type": "QueryRemoved", "queryId": 0} in t["modifications"]
    assert [m["queryId"] for m in t["modifications"] if m["type"] == "QueryUpdated"] == [1]
    # Removed once: not repeated in later transitions.
    compute_of(s.watched_changed())
    t2 = transition_of(s.transition_computed(12, {1: result("b3")}, 0))
    assert all(m["type"] == "QueryUpdated" for m in t2["modifications"])


def test_unchanged_results_are_not_resent() -> None:
    s = connected()
    s.receive(modify(0, 1, add(0), add(1)))
    s.transition_computed(10, {0: result("a"), 1: result("b")}, 0)
    compute_of(s.watched_changed())
    t = transition_of(s.transition_computed(20, {0: result("a"), 1: result("B")}, 0))
    assert t["startVersion"] == version(1, 0, 10)
    assert t["endVersion"] == version(1, 0, 20)
    assert [(m["queryId"], m["value"]) for m in t["modifications"]] == [(1, "B")]
    # Changed log lines count as a change.
    s.watched_changed()
    t = transition_of(s.transition_computed(30, {0: result("a", ("[LOG] x",)), 1: result("B")}, 0))
    assert [m["queryId"] for m in t["modifications"]] == [0]


def test_nothing_changed_sends_nothing() -> None:
    s = connected()
    s.receive(modify(0, 1, add(0)))
    s.transition_computed(10, {0: result("a")}, 0)
    s.watched_changed()
    assert sent(s.transition_computed(10, {0: result("a")}, 0)) == []


def test_readded_query_is_sent_again() -> None:
    s = connected()
    s.receive(modify(0, 1, add(0)))
    s.transition_computed(10, {0: result("a")}, 0)
    s.receive(modify(1, 2, remove(0)))
    s.transition_computed(10, {}, 0)
    s.receive(modify(2, 3, add(0)))
    t = transition_of(s.transition_computed(10, {0: result("a")}, 0))
    assert t["modifications"][0]["type"] == "QueryUpdated"


def test_query_failed_carries_error_data_only_when_given() -> None:
    s = connected()
    s.receive(modify(0, 1, add(0), add(1)))
    t = transition_of(
        s.transition_computed(
            1,
            {0: failed("boom", logs=("[ERROR] x",)), 1: failed("app", data={"code": "TAKEN"})},
            0,
        )
    )
    mods = {m["queryId"]: m for m in t["modifications"]}
    assert mods[0] == {
        "type": "QueryFailed",
        "queryId": 0,
        "errorMessage": "boom",
        "logLines": ["[ERROR] x"],
        "journal": None,
    }
    assert "errorData" not in mods[0]
    assert mods[1]["errorData"] == {"code": "TAKEN"}
    assert mods[1]["errorMessage"] == "app"


def test_at_most_one_transition_is_computed_at_a_time() -> None:
    s = connected()
    compute_of(s.receive(modify(0, 1, add(0))))
    # Triggers while computing fold into one later computation.
    assert only(s.receive(modify(1, 2, add(1))), ComputeTransition) == []
    assert only(s.watched_changed(), ComputeTransition) == []
    assert only(s.receive(modify(2, 3, add(2))), ComputeTransition) == []
    effects = s.transition_computed(5, {0: result(0)}, 0)
    t = transition_of(effects)
    assert t["endVersion"]["querySet"] == 1  # what the computation covered
    nxt = compute_of(effects)
    assert set(nxt.added) == {1, 2}  # 0 was added by the computation before
    t = transition_of(s.transition_computed(6, {0: result(0), 1: result(1), 2: result(2)}, 0))
    assert t["startVersion"] == version(1, 0, 5)
    assert t["endVersion"] == version(3, 0, 6)
    assert sorted(m["queryId"] for m in t["modifications"]) == [1, 2]


def test_ts_never_goes_back() -> None:
    s = connected()
    s.receive(modify(0, 1, add(0)))
    s.transition_computed(100, {0: result("a")}, 0)
    s.watched_changed()
    t = transition_of(s.transition_computed(50, {0: result("b")}, 0))
    assert decode_ts(t["endVersion"]["ts"]) == 100


# -- identity --------------------------------------------------------------------------------


def test_authenticate_none_bumps_the_identity_version() -> None:
    s = connected()
    compute = compute_of(s.receive(authenticate(0, "None", None)))
    assert compute.identity is None
    t = transition_of(s.transition_computed(1, {}, 0))
    assert t["startVersion"] == version(0, 0, 0)
    assert t["endVersion"] == version(0, 1, 1)


def test_accepted_token_reruns_every_query_under_the_identity() -> None:
    seen: list[tuple[str, str | None]] = []

    def auth(token_type: str, value: str | None) -> dict[str, Any]:
        seen.append((token_type, value))
        return {"subject": value}

    s = connected(authenticate=auth)
    s.receive(modify(0, 1, add(0)))
    s.transition_computed(10, {0: result("anon")}, 0)
    compute = compute_of(s.receive(authenticate(0, "User", "alice")))
    assert seen == [("User", "alice")]
    assert compute.identity == {"subject": "alice"} and compute.reset
    assert set(compute.added) == {0}  # every query re-runs under the new identity
    # Even a result equal to the previous one is sent again under the new identity.
    t = transition_of(s.transition_computed(10, {0: result("anon")}, 0))
    assert t["endVersion"] == version(1, 1, 10)
    assert [m["queryId"] for m in t["modifications"]] == [0]
    # Mutations run under the identity.
    runs = only(s.receive(mutation(0)), RunMutation)
    assert runs and runs[0].identity == {"subject": "alice"}


def test_refused_token_gets_auth_error_then_close() -> None:
    s = connected()  # no authenticator: every token is refused
    s.receive(modify(0, 1))
    s.transition_computed(1, {}, 0)
    effects = s.receive(authenticate(0, "User", "jwt"))
    assert len(effects) == 2 and isinstance(effects[1], Close)
    (err,) = sent(effects)
    assert err["type"] == "AuthError"
    assert isinstance(err["error"], str) and err["error"]
    assert err["baseVersion"] == 0 and type(err["baseVersion"]) is int
    assert err["authUpdateAttempted"] is True
    assert s.receive(modify(1, 2)) == []


def test_auth_error_base_version_is_the_last_sent_identity() -> None:
    def auth(token_type: str, value: str | None) -> dict[str, Any]:
        if value == "bad":
            raise AuthFailure("token expired")
        return {"subject": value}

    s = connected(authenticate=auth)
    s.receive(authenticate(0, "User", "good"))
    s.transition_computed(1, {}, 0)  # identity 1 confirmed
    effects = s.receive(authenticate(1, "User", "bad"))
    (err,) = sent(effects)
    assert err == {
        "type": "AuthError",
        "error": "token expired",
        "baseVersion": 1,
        "authUpdateAttempted": True,
    }
    assert isinstance(effects[-1], Close)


def test_authenticate_base_version_mismatch_closes() -> None:
    s = connected(authenticate=lambda t, v: {"subject": v})
    effects = s.receive(authenticate(1, "User", "x"))
    assert [type(e) for e in effects] == [Close]
    assert s.closed


def test_admin_token_goes_to_the_authenticator() -> None:
    s = connected(authenticate=lambda t, v: {"tokenType": t, "key": v})
    compute = compute_of(s.receive(authenticate(0, "Admin", "k")))
    assert compute.identity == {"tokenType": "Admin", "key": "k"}


# -- mutations and actions ------------------------------------------------------------------------


def test_mutation_success_response_then_transition() -> None:
    s = connected()
    s.receive(modify(0, 1))
    s.transition_computed(10, {}, 0)
    (run,) = s.receive(mutation(3, "messages:send", {"body": "hi"}))
    assert run == RunMutation(3, "messages:send", {"body": "hi"}, None)
    ts = 1700000000200000000
    effects = s.mutation_finished(3, ts=ts, value_json='"id1"', log_lines=["[LOG] 'inserted'"])
    (resp,) = sent(effects)
    assert resp == {
        "type": "MutationResponse",
        "requestId": 3,
        "success": True,
        "result": "id1",
        "ts": "AMIVQv6clxc=",
        "logLines": ["[LOG] 'inserted'"],
    }
    compute = compute_of(effects)
    assert compute.min_ts >= ts
    t = transition_of(s.transition_computed(ts, {}, 0))
    assert decode_ts(t["endVersion"]["ts"]) >= ts
    assert t["startVersion"] == version(1, 0, 10)


def test_transition_holding_a_running_mutations_write_waits_for_its_response() -> None:
    """A snapshot at or past the running mutation's commit is sent only after that
    mutation's response (else a client shows its optimistic update and the real row)."""
    s = connected()
    s.receive(modify(0, 1, add(0)))
    s.transition_computed(10, {0: result("before")}, 0)
    s.receive(mutation(7))
    s.mutation_committed(20)
    compute_of(s.watched_changed())
    assert s.transition_computed(25, {0: result("after")}, 0) == []  # held
    effects = s.mutation_finished(7, ts=20, value_json="null")
    kinds = [json.loads(e.text)["type"] for e in effects if isinstance(e, Send)]
    assert kinds == ["MutationResponse", "Transition"], kinds
    t = transition_of(effects)
    assert decode_ts(t["endVersion"]["ts"]) == 25
    assert [m["value"] for m in t["modifications"]] == ["after"]


def test_transition_before_the_running_mutations_commit_is_not_held() -> None:
    s = connected()
    s.receive(modify(0, 1, add(0)))
    s.transition_computed(10, {0: result("a")}, 0)
    s.receive(mutation(1))
    compute_of(s.watched_changed())
    # Not committed when the snapshot was fixed: its commit will come after it.
    assert transition_of(s.transition_computed(12, {0: result("b")}, 0))
    s.mutation_committed(30)
    compute_of(s.watched_changed())
    # Committed, but after this snapshot: nothing of it is in there.
    assert transition_of(s.transition_computed(25, {0: result("c")}, 0))


def test_mutation_result_null_and_empty_logs() -> None:
    s = connected()
    s.receive(mutation(0))
    (resp,) = sent(s.mutation_finished(0, ts=1, value_json="null"))
    assert resp["result"] is None and resp["logLines"] == [] and resp["ts"] == encode_ts(1)


def test_mutation_failure_response() -> None:
    s = connected()
    s.receive(mutation(0))
    effects = s.mutation_finished(
        0, error_message="Uncaught ValueError: boom", log_lines=["[LOG] a"]
    )
    (resp,) = sent(effects)
    assert resp == {
        "type": "MutationResponse",
        "requestId": 0,
        "success": False,
        "result": "Uncaught ValueError: boom",
        "ts": None,
        "logLines": ["[LOG] a"],
    }
    # A transition follows a failure as well (the Python client waits for it for
    # ConvexErrors).
    compute_of(effects)
    assert sent(s.transition_computed(0, {}, 0))[0]["type"] == "Transition"


def test_mutation_failure_with_error_data() -> None:
    s = connected()
    s.receive(mutation(0))
    (resp,) = sent(
        s.mutation_finished(0, error_message="taken", error_data_json='{"code":"TAKEN"}')
    )
    assert resp["success"] is False and resp["result"] == "taken"
    assert resp["errorData"] == {"code": "TAKEN"}


def test_log_lines_pass_through_unchanged() -> None:
    lines = [
        "[LOG] hello world",
        "[INFO] x",
        "[WARN] 'quoted' \"double\"",
        "[ERROR] é ✓",
        "[DEBUG] ",
    ]
    s = connected()
    s.receive(mutation(0))
    (resp,) = sent(s.mutation_finished(0, ts=1, value_json="1", log_lines=lines))
    assert resp["logLines"] == lines
    (act,) = only(
        s.receive(frame({"type": "Action", "requestId": 1, "udfPath": "a:b", "args": [{}]})),
        RunAction,
    )
    (aresp,) = sent(s.action_finished(act.request_id, value_json="2", log_lines=lines))
    assert aresp["logLines"] == lines


def test_mutations_run_one_at_a_time_in_order() -> None:
    s = connected()
    runs = only(s.receive(mutation(0)), RunMutation)
    assert [r.request_id for r in runs] == [0]
    for rid in (1, 2, 3):
        assert only(s.receive(mutation(rid)), RunMutation) == []
    order = [0]
    for rid in (0, 1, 2):
        nxt = only(s.mutation_finished(rid, ts=rid + 1, value_json="null"), RunMutation)
        assert len(nxt) == 1
        order.append(nxt[0].request_id)
    assert order == [0, 1, 2, 3]
    assert only(s.mutation_finished(3, ts=9, value_json="null"), RunMutation) == []


def test_mutation_queue_limit_closes() -> None:
    s = connected()
    assert only(s.receive(mutation(0)), RunMutation)  # running
    for rid in range(1, MAX_QUEUED_MUTATIONS + 1):  # queued
        assert s.receive(mutation(rid)) == []
    close = closed_with(s.receive(mutation(MAX_QUEUED_MUTATIONS + 1)))
    assert close.code in (1011, 1013)
    assert close.reason.startswith("TooManyConcurrentRequests")
    assert s.closed


def test_actions_run_concurrently() -> None:
    s = connected()
    act = {"type": "Action", "udfPath": "jobs:run", "args": [{"n": 1.0}]}
    a = only(s.receive(frame({**act, "requestId": 0})), RunAction)
    b = only(s.receive(frame({**act, "requestId": 1})), RunAction)
    assert [x.request_id for x in a + b] == [0, 1]
    assert a[0].args == {"n": 1.0}
    effects = s.action_finished(1, error_message="nope", error_data_json='"d"')
    (resp,) = sent(effects)
    assert resp == {
        "type": "ActionResponse",
        "requestId": 1,
        "success": False,
        "result": "nope",
        "logLines": [],
        "errorData": "d",
    }
    (ok,) = sent(s.action_finished(0, value_json='{"x":1}'))
    assert ok == {
        "type": "ActionResponse",
        "requestId": 0,
        "success": True,
        "result": {"x": 1},
        "logLines": [],
    }
    assert "ts" not in ok


def test_event_is_ignored() -> None:
    s = connected()
    evt = {"type": "Event", "eventType": "ClientConnect", "event": {"marks": [1, 2]}}
    assert s.receive(frame(evt)) == []
    assert s.receive(frame({"type": "Event"})) == []
    assert not s.closed
    compute_of(s.receive(modify(0, 1)))


def test_unknown_fields_are_ignored() -> None:
    s = connected()
    msg = json.loads(modify(0, 1, {**add(0), "componentPath": None, "future": 1}))
    msg["future"] = {"x": 1}
    compute = compute_of(s.receive(frame(msg)))
    assert not s.closed
    assert compute.added == {0: QuerySpec("messages:list", {}, None)}, compute


# -- pings -------------------------------------------------------------------------------------


def test_ping_after_the_interval() -> None:
    s = connected()
    s.sent_at(100.0)
    assert s.ping_due(105.0, interval_s=15.0) == []
    assert s.ping_due(114.9, interval_s=15.0) == []
    assert sent(s.ping_due(115.0, interval_s=15.0)) == [{"type": "Ping"}]
    s.sent_at(115.0)
    assert s.ping_due(120.0, interval_s=15.0) == []
    assert sent(s.ping_due(200.0)) == [{"type": "Ping"}]  # default interval


def test_no_ping_when_closed() -> None:
    s = connected()
    assert_fatal(s.receive("not json"))
    assert s.ping_due(10_000.0) == []


# -- malformed frames ------------------------------------------------------------------------

MALFORMED = [
    "not json",
    "",
    "{",
    '{"type": "Connect", "sessionId": NaN}',
    "[]",
    '[{"type": "ModifyQuerySet"}]',
    "null",
    "42",
    '"Connect"',
    "{}",
    '{"type": 5}',
    '{"type": "Bogus"}',
    '{"type": "modifyquerySet", "baseVersion": 0, "newVersion": 1, "modifications": []}',
    '{"type": "ModifyQuerySet", "baseVersion": "0", "newVersion": 1, "modifications": []}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1.5, "modifications": []}',
    '{"type": "ModifyQuerySet", "baseVersion": -1, "newVersion": 1, "modifications": []}',
    '{"type": "ModifyQuerySet", "baseVersion": true, "newVersion": 1, "modifications": []}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 4294967296, "modifications": []}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1e400, "modifications": []}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": {}}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [1]}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": '
    '[{"type": "Upsert"}]}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": '
    '[{"type": "Add", "queryId": 0, "udfPath": "a:b", "args": {}}]}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": '
    '[{"type": "Add", "queryId": 0, "udfPath": 5, "args": [{}]}]}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": '
    '[{"type": "Add", "queryId": "0", "udfPath": "a:b", "args": [{}]}]}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": '
    '[{"type": "Add", "queryId": 0, "udfPath": "a:b", "args": [{}], "journal": 7}]}',
    '{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": '
    '[{"type": "Remove", "queryId": null}]}',
    '{"type": "Mutation", "requestId": 0, "udfPath": "a:b", "args": {}}',
    '{"type": "Mutation", "requestId": 0, "udfPath": "a:b", "args": []}',
    '{"type": "Mutation", "requestId": 0, "udfPath": "a:b", "args": [{}, {}]}',
    '{"type": "Mutation", "requestId": 0, "udfPath": "a:b", "args": [1]}',
    '{"type": "Mutation", "requestId": 0, "udfPath": "a:b", "args": [[]]}',
    '{"type": "Mutation", "requestId": 0, "udfPath": "a:b", "args": [null]}',
    '{"type": "Mutation", "requestId": 0, "udfPath": "a:b"}',
    '{"type": "Mutation", "requestId": 0, "udfPath": null, "args": [{}]}',
    '{"type": "Mutation", "requestId": -5, "udfPath": "a:b", "args": [{}]}',
    '{"type": "Mutation", "requestId": 1e20, "udfPath": "a:b", "args": [{}]}',
    '{"type": "Mutation", "requestId": 1' + "0" * 5000 + ', "udfPath": "a:b", "args": [{}]}',
    '{"type": "Action", "requestId": "x", "udfPath": "a:b", "args": [{}]}',
    '{"type": "Action", "requestId": 0, "udfPath": "a:b", "args": "[{}]"}',
    '{"type": "Authenticate", "baseVersion": 0, "tokenType": "Bearer", "value": "x"}',
    '{"type": "Authenticate", "baseVersion": 0, "tokenType": "User"}',
    '{"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": 5}',
    '{"type": "Authenticate", "baseVersion": null, "tokenType": "None"}',
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 50_000 + "1" + "}" * 50_000,
    b"\xff\xfe\x00garbage",
]


@pytest.mark.parametrize("text", MALFORMED, ids=lambda t: repr(t)[:50])
def test_malformed_frames_are_fatal(text: str | bytes) -> None:
    s = connected()
    assert_fatal(s.receive(text))
    assert s.closed
    assert s.receive(modify(0, 1)) == []


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "Connect", "sessionId": 5}',
        '{"type": "Connect"}',
        '{"type": "Connect", "sessionId": "s", "maxObservedTimestamp": "xyz"}',
        '{"type": "Connect", "sessionId": "s", "maxObservedTimestamp": 5}',
    ],
)
def test_malformed_connect_is_fatal(text: str) -> None:
    s = SyncSession()
    assert_fatal(s.receive(text))


@pytest.mark.parametrize(
    "text",
    [
        # Huge numbers in informational fields: refuse or ignore, never raise.
        '{"type": "Connect", "sessionId": "s", "connectionCount": 1e400}',
        '{"type": "Connect", "sessionId": "s", "connectionCount": -1e400}',
        '{"type": "Connect", "sessionId": "s", "connectionCount": 1e300}',
        '{"type": "Connect", "sessionId": "s", "clientTs": 1e400}',
        '{"type": "Connect", "sessionId": "s", "clientTs": -1e308, "connectionCount": 2.5}',
    ],
)
def test_huge_numbers_in_connect_never_raise(text: str) -> None:
    s = SyncSession()
    effects = s.receive(text)  # must not raise
    if effects:
        assert_fatal(effects)
    else:
        compute_of(s.receive(modify(0, 1)))


def test_fatal_error_message_is_bounded() -> None:
    s = connected()
    effects = s.receive('{"type": "' + "x" * 1_000_000 + '"}')
    error = assert_fatal(effects)
    assert len(error) < 10_000


# -- property: versions chain, ts monotone, one compute, mutations in order --------------------


@dataclass
class Client:
    """What a client observes, checked against the rules of spec §6-7."""

    version: dict[str, Any] = field(default_factory=lambda: version(0, 0, 0))
    last_ts: int = 0
    transitions: int = 0
    values: dict[int, Any] = field(default_factory=dict)
    awaiting: list[tuple[int, int | None, int]] = field(default_factory=list)  # rid, ts, seen

    def on_message(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "Transition":
            assert msg["startVersion"] == self.version, (msg, self.version)
            end = msg["endVersion"]
            ts = decode_ts(end["ts"])
            assert ts >= self.last_ts
            assert end["querySet"] >= self.version["querySet"]
            assert end["identity"] >= self.version["identity"]
            self.version, self.last_ts = end, ts
            self.transitions += 1
            for m in msg["modifications"]:
                if m["type"] == "QueryUpdated":
                    self.values[m["queryId"]] = m["value"]
                elif m["type"] == "QueryRemoved":
                    self.values.pop(m["queryId"], None)
            # Released mutations: a transition after the response, reaching its ts.
            self.awaiting = [
                (rid, mts, seen)
                for rid, mts, seen in self.awaiting
                if not (mts is None or ts >= mts)
            ]
        elif kind == "MutationResponse":
            mts = decode_ts(msg["ts"]) if msg["success"] else None
            self.awaiting.append((msg["requestId"], mts, self.transitions))
        else:
            raise AssertionError(f"unexpected message {msg}")


@dataclass
class Driver:
    """Plays the server around a session: runs mutations and computes transitions."""

    session: SyncSession = field(default_factory=lambda: connected())
    client: Client = field(default_factory=Client)
    compute: ComputeTransition | None = None
    running: RunMutation | None = None
    db_ts: int = 1000  # the latest commit
    published: int = 1000  # the snapshot transitions read at: may lag the latest commit
    qs: int = 0
    next_qid: int = 0
    live: set[int] = field(default_factory=set)
    next_rid: int = 0
    queued: list[int] = field(default_factory=list)  # sent, not yet started
    responded: list[int] = field(default_factory=list)
    commits: list[int] = field(default_factory=list)  # commit ts of each mutation
    # The running mutation's commit ts once it committed, until its response is sent.
    unanswered_commit: int | None = None

    def apply(self, effects: list[Any]) -> None:
        for e in effects:
            if isinstance(e, Send):
                msg = json.loads(e.text)
                if msg["type"] == "MutationResponse":
                    assert self.running is None  # finished before its response went out
                    self.responded.append(msg["requestId"])
                    self.unanswered_commit = None
                elif msg["type"] == "Transition" and self.unanswered_commit is not None:
                    # Never the write of a mutation before that mutation's response.
                    end = decode_ts(msg["endVersion"]["ts"])
                    assert end < self.unanswered_commit, (end, self.unanswered_commit)
                self.client.on_message(msg)
            elif isinstance(e, ComputeTransition):
                assert self.compute is None, "two transitions computed at once"
                # Asked after a mutation response: it must reach the mutation's commit.
                waiting = [mts for _, mts, _ in self.client.awaiting if mts is not None]
                assert e.min_ts >= max(waiting, default=0), (e.min_ts, waiting)
                self.compute = e
            elif isinstance(e, RunMutation):
                assert self.running is None, "two mutations running at once"
                assert self.queued and e.request_id == self.queued[0], "mutations out of order"
                self.queued.pop(0)
                self.running = e
            else:
                raise AssertionError(f"unexpected effect {e}")

    def step(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        s = self.session
        if kind == "modify":
            mods: list[dict[str, Any]] = []
            for n_add, rm in zip(op[1], op[2], strict=False):
                for _ in range(n_add):
                    mods.append(add(self.next_qid, args={"q": self.next_qid}))
                    self.live.add(self.next_qid)
                    self.next_qid += 1
                if rm and self.live:
                    victim = sorted(self.live)[rm % len(self.live)]
                    self.live.discard(victim)
                    mods.append(remove(victim))
            new = self.qs + op[3]
            self.apply(s.receive(modify(self.qs, new, *mods)))
            self.qs = new
        elif kind == "mutation":
            self.queued.append(self.next_rid)
            self.next_rid += 1
            self.apply(s.receive(mutation(self.queued[-1])))
        elif kind == "commit" and self.running is not None and self.unanswered_commit is None:
            self.db_ts += op[1]  # commit timestamps strictly increase
            self.commits.append(self.db_ts)
            self.unanswered_commit = self.db_ts
            s.mutation_committed(self.db_ts)
        elif kind == "finish_mutation" and self.running is not None:
            run, self.running = self.running, None
            committed = self.unanswered_commit
            if committed is not None:
                self.apply(s.mutation_finished(run.request_id, ts=committed, value_json="null"))
            elif op[1]:
                self.db_ts += op[2]
                self.commits.append(self.db_ts)
                self.apply(s.mutation_finished(run.request_id, ts=self.db_ts, value_json="null"))
            else:
                self.apply(s.mutation_finished(run.request_id, error_message="failed"))
        elif kind == "compute" and self.compute is not None:
            c, self.compute = self.compute, None
            self.published = max(self.published, self.db_ts - op[1])
            ts = max(self.published, c.min_ts)  # what the server's driver does
            # A query's result is what the database held at the snapshot.
            seen = sum(1 for commit_ts in self.commits if commit_ts <= ts) // op[2]
            # A driver may report any held query; this one reports them all.
            results = {qid: result([qid, seen]) for qid in s.queries}
            self.apply(s.transition_computed(ts, results, 0))
        elif kind == "changed":
            self.apply(s.watched_changed())
        elif kind == "auth":
            self.apply(s.receive(authenticate(s.received_identity, "None", None)))

    def drain(self) -> None:
        for _ in range(10_000):
            if self.running is not None:
                self.step(("finish_mutation", True, 1))
            elif self.compute is not None:
                self.step(("compute", 0, 1))
            else:
                return
        raise AssertionError("the session never became idle")


_ops = st.one_of(
    st.tuples(
        st.just("modify"),
        st.lists(st.integers(0, 3), max_size=3),
        st.lists(st.integers(0, 5), max_size=3),
        st.integers(1, 3),
    ),
    st.tuples(st.just("mutation")),
    st.tuples(st.just("commit"), st.integers(1, 50)),
    st.tuples(st.just("finish_mutation"), st.booleans(), st.integers(1, 50)),
    st.tuples(st.just("compute"), st.sampled_from([0, 5, 60]), st.integers(1, 3)),
    st.tuples(st.just("changed")),
    st.tuples(st.just("auth")),
)


@settings(
    max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(_ops, max_size=60))
def test_protocol_invariants_hold_for_any_event_order(ops: list[tuple[Any, ...]]) -> None:
    d = Driver()
    for op in ops:
        d.step(op)
        assert not d.session.closed
        if d.compute is None and d.session._held is None:
            # Idle: every mutation response has been followed by its transition.
            assert d.client.awaiting == [], d.client.awaiting
    d.drain()
    c = d.client
    # Every mutation ran, in order, and got exactly one response.
    assert d.responded == list(range(d.next_rid))
    # Every response was followed by a transition reaching its ts.
    assert c.awaiting == [], c.awaiting
    # The client ends at the versions it asked for, with every live query's latest result.
    assert c.version["querySet"] == d.qs
    assert c.version["identity"] == d.session.received_identity
    assert set(c.values) == d.live
    # After one more change, every live query shows the latest data.
    d.apply(d.session.watched_changed())
    d.drain()
    for qid in d.live:
        assert c.values[qid] == [qid, len(d.commits)]


# -- the fan-out's fast path ------------------------------------------------------------------


def _watching(query_ids: tuple[int, ...]) -> SyncSession:
    s = connected()
    compute = compute_of(s.receive(modify(0, 1, *(add(q) for q in query_ids))))
    results = {q: result(["start"]) for q in compute.added}
    transition_of(s.transition_computed(5, results, 0))
    return s


def _state(s: SyncSession) -> tuple[Any, ...]:
    return (
        s.version_query_set,
        s.version_identity,
        s.version_ts,
        s._start_version,
        s.must_send,
        dict(s.sent),
    )


def test_transition_fast_gives_what_transition_now_gives() -> None:
    # Two sessions in the same state; one always takes transition_now, the other takes
    # transition_fast once transition_now gave it steady ids, and nothing happens to it
    # in between. Every text and the state after it are the same, including results that
    # did not change (the ts still moves on) and a snapshot older than the last one.
    ids = (3, 5)
    slow, fast = _watching(ids), _watching(ids)
    steps = [(6, ["a"]), (7, ["a"]), (9, ["b"]), (8, ["c"]), (12, ["c"]), (12, ["c"])]
    texts_slow: dict[Any, tuple[str, str]] = {}
    first = fast.transition_now(6, set(ids), result(["a"]), 100, {})
    steady = fast.steady_ids(set(ids))
    assert first is not None and steady == ids
    changes = fast.changes
    assert slow.transition_now(6, set(ids), result(["a"]), 100, texts_slow) == first
    for ts, value in steps[1:]:
        texts: dict[Any, tuple[str, str]] = {}
        expected = slow.transition_now(ts, set(ids), result(value), 100 + ts, texts)
        assert fast.changes == changes  # the driver's check: nothing happened
        got = fast.transition_fast(ts, steady, result(value), 100 + ts, texts)
        assert got == expected, (ts, value)
        assert _state(fast) == _state(slow)


def test_anything_that_changes_the_session_counts_as_a_change() -> None:
    # The driver keeps transition_fast's ids only while `changes` is what it was: every
    # call that can change what transition_now checks moves it.
    s = _watching((3,))
    calls = [
        lambda: s.receive(
            frame(
                {"type": "ModifyQuerySet", "baseVersion": 1, "newVersion": 2, "modifications": []}
            )
        ),
        lambda: s.watched_changed(),
        lambda: s.transition_computed(20, {}, 0),
        lambda: s.receive(mutation(1)),
        lambda: s.mutation_committed(21),
        lambda: s.mutation_finished(1, ts=21, value_json="null"),
        lambda: s.reject_binary(),
    ]
    for call in calls:
        before = s.changes
        call()
        assert s.changes > before, call
    # A mutation running: transition_now may send, but the fast path may not follow
    # (a later snapshot could hold its commit before its response goes out).
    t = _watching((3,))
    t.receive(mutation(1))
    assert t.mutation_running
    assert t.steady_ids({3}) is None
