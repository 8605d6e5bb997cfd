"""The Elle-style checker (``elle.py``) on hand-written histories, one per anomaly, and on
histories of random transactions executed serially (which are always valid).

Source: Kingsbury & Alvaro, "Elle: Inferring Isolation Anomalies from Experimental
Observations", VLDB 2020 (§4: list-append inference; §5: the anomalies); Adya, "Weak
Consistency", 1999 (G0, G1a, G1b, G1c, G-single, G2).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from elle import Anomaly, Report, Txn, check
from hypothesis import given, settings
from hypothesis import strategies as st


def T(
    id: int,
    status: str,
    *ops: tuple[str, Any, Any],
    invoke: float | None = None,
    complete: float | None = None,
) -> Txn:
    return Txn(id, status, list(ops), invoke, complete)


def r(key: str, values: list[int] | None) -> tuple[str, Any, Any]:
    return ("r", key, values)


def a(key: str, value: int) -> tuple[str, Any, Any]:
    return ("append", key, value)


def only(report: Report, kind: str) -> Anomaly:
    """The report's single anomaly, of ``kind``."""
    assert report.kinds() == {kind: 1}, report.format()
    (anomaly,) = report.anomalies
    return anomaly


# -- valid histories ----------------------------------------------------------------------


def test_a_serializable_history_has_no_anomalies() -> None:
    history = [
        T(1, "ok", a("x", 1), a("y", 1)),
        T(2, "ok", r("x", [1]), a("x", 2), r("x", [1, 2])),
        T(3, "ok", r("y", [1]), r("x", [1, 2]), a("y", 2)),
        T(4, "fail", a("x", 3)),  # never visible: fine
        T(5, "info", a("y", 3)),  # visible: it committed after all
        T(6, "info", a("x", 4)),  # not visible: it did not commit
        T(7, "ok", r("x", []), r("z", [])),  # before everything (an empty read is fine)
        T(8, "ok", r("x", [1, 2]), r("y", [1, 2, 3]), r("z", [])),
    ]
    report = check(history)
    assert report.valid, report.format()
    assert report.anomalies == []
    assert report.txn_count == 8
    assert report.status_counts == {"ok": 5, "fail": 1, "info": 2}
    assert report.key_count == 3
    assert report.edge_counts["ww"] >= 2 and report.edge_counts["wr"] >= 2
    assert report.edge_counts["rw"] >= 1
    assert "no anomalies" in str(report)
    assert check(history, realtime=True).valid


def test_real_time_order_consistent_with_the_history_is_valid() -> None:
    history = [
        T(1, "ok", a("x", 1), invoke=0, complete=1),
        T(2, "ok", r("x", [1]), a("x", 2), invoke=2, complete=3),
        # Concurrent with 2 (invoked before 2 completed): may serialize before it.
        T(3, "ok", r("x", [1]), invoke=2.5, complete=4),
        T(4, "info", a("x", 3), invoke=5),
        T(5, "ok", r("x", [1, 2, 3]), invoke=6, complete=7),
    ]
    report = check(history, realtime=True)
    assert report.valid, report.format()
    assert report.edge_counts["rt"] >= 3


# -- cycles --------------------------------------------------------------------------------


def test_g0_write_cycle() -> None:
    history = [
        T(1, "ok", a("x", 1), a("y", 1)),
        T(2, "ok", a("x", 2), a("y", 2)),
        T(3, "ok", r("x", [1, 2]), r("y", [2, 1])),
    ]
    anomaly = only(check(history), "G0")
    assert set(anomaly.txns) == {1, 2}
    assert {s.kind for s in anomaly.cycle} == {"ww"}
    assert "G0" in str(anomaly) and "T1 -ww" in str(anomaly)


def test_g1c_circular_information_flow() -> None:
    history = [
        T(1, "ok", a("x", 1), r("y", [1])),
        T(2, "ok", a("y", 1), r("x", [1])),
        T(3, "ok", r("x", [1]), r("y", [1])),
    ]
    anomaly = only(check(history), "G1c")
    assert set(anomaly.txns) == {1, 2}
    assert {s.kind for s in anomaly.cycle} == {"wr"}


def test_g1c_mixing_ww_and_wr() -> None:
    history = [
        T(1, "ok", a("x", 1), r("y", [1])),  # saw 2's append to y ...
        T(2, "ok", a("y", 1), a("x", 2)),  # ... but 2's x append comes after 1's
        T(3, "ok", r("x", [1, 2]), r("y", [1])),
    ]
    anomaly = only(check(history), "G1c")
    assert sorted(s.kind for s in anomaly.cycle) == ["wr", "ww"]


def test_g_single_lost_update() -> None:
    # Both read x empty, both append: 2 did not see 1's append, yet comes after it.
    history = [
        T(1, "ok", r("x", []), a("x", 1)),
        T(2, "ok", r("x", []), a("x", 2)),
        T(3, "ok", r("x", [1, 2])),
    ]
    anomaly = only(check(history), "G2")
    assert "G-single" in anomaly.message
    assert sorted(s.kind for s in anomaly.cycle) == ["rw", "ww"]


def test_g2_write_skew() -> None:
    history = [
        T(1, "ok", r("x", []), r("y", []), a("x", 1)),
        T(2, "ok", r("x", []), r("y", []), a("y", 1)),
        T(3, "ok", r("x", [1]), r("y", [1])),
    ]
    anomaly = only(check(history), "G2")
    assert "G2-item" in anomaly.message
    assert [s.kind for s in anomaly.cycle] == ["rw", "rw"]
    assert set(anomaly.txns) == {1, 2}


def test_g_single_read_skew() -> None:
    # 3 sees 2's y but not 1's x, while 2 saw 1's x.
    history = [
        T(1, "ok", a("x", 1)),
        T(2, "ok", r("x", [1]), a("y", 1)),
        T(3, "ok", r("x", []), r("y", [1])),
        T(4, "ok", r("x", [1]), r("y", [1])),
    ]
    anomaly = only(check(history), "G2")
    assert "G-single" in anomaly.message
    assert set(anomaly.txns) == {1, 2, 3}


def test_realtime_cycle_only_with_realtime_checks() -> None:
    # 2 began after 1 was acknowledged yet did not see 1's append: a stale read.
    history = [
        T(1, "ok", a("x", 1), invoke=0, complete=1),
        T(2, "ok", r("x", []), invoke=2, complete=3),
        T(3, "ok", r("x", [1]), invoke=4, complete=5),
    ]
    assert check(history).valid
    anomaly = only(check(history, realtime=True), "G2-realtime")
    assert sorted(s.kind for s in anomaly.cycle) == ["rt", "rw"]


def test_failed_transactions_are_not_in_the_graph_but_info_ones_are() -> None:
    lost_update = [
        T(1, "info", r("x", None), a("x", 1)),
        T(2, "ok", r("x", []), a("x", 2)),
        T(3, "ok", r("x", [2, 1])),
    ]
    assert check(lost_update).valid  # 1's read is unknown: 2 -> 1 is fine
    cycle = [
        T(1, "info", a("x", 1), a("y", 1)),
        T(2, "ok", a("x", 2), a("y", 2)),
        T(3, "ok", r("x", [1, 2]), r("y", [2, 1])),
    ]
    assert check(cycle).kinds() == {"G0": 1}


# -- anomalies that are not cycles ----------------------------------------------------------


def test_g1a_aborted_read() -> None:
    history = [
        T(1, "fail", a("x", 1)),
        T(2, "ok", r("x", [1])),
    ]
    anomaly = only(check(history), "G1a")
    assert anomaly.txns == (2, 1) and anomaly.key == "x"


def test_g1b_intermediate_read() -> None:
    history = [
        T(1, "ok", a("x", 1), a("x", 2)),
        T(2, "ok", r("x", [1])),
        T(3, "ok", r("x", [1, 2])),
    ]
    anomaly = only(check(history), "G1b")
    assert anomaly.txns == (2, 1)


def test_lost_append() -> None:
    history = [
        T(1, "ok", a("x", 1)),
        T(2, "ok", a("x", 2)),
        T(3, "info", a("x", 3)),  # unknown: missing is fine
        T(4, "ok", r("x", [2])),
    ]
    anomaly = only(check(history), "lost-append")
    assert anomaly.txns == (1,) and anomaly.key == "x"


def test_duplicated_append() -> None:
    history = [
        T(1, "ok", a("x", 1)),
        T(2, "ok", r("x", [1, 1])),
    ]
    only(check(history), "duplicate-elements")


def test_garbage_read() -> None:
    history = [
        T(1, "ok", a("x", 1)),
        T(2, "ok", r("x", [1, 9])),
    ]
    anomaly = only(check(history), "garbage-read")
    assert "9" in anomaly.message


def test_incompatible_orders() -> None:
    history = [
        T(1, "ok", a("x", 1)),
        T(2, "ok", a("x", 2)),
        T(3, "ok", r("x", [1, 2])),
        T(4, "ok", r("x", [2, 1])),
    ]
    kinds = check(history).kinds()
    assert kinds["incompatible-order"] == 1, kinds


def test_internal_inconsistencies() -> None:
    non_repeatable = [T(1, "ok", a("x", 1)), T(2, "ok", r("x", []), r("x", [1]))]
    own_write_missing = [T(1, "ok", a("x", 1)), T(2, "ok", a("x", 2), r("x", [1]))]
    for history in (non_repeatable, own_write_missing):
        report = check(history)
        assert report.kinds()["internal"] == 1, report.format()


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="unique per key"):
        check([T(1, "ok", a("x", 1)), T(2, "ok", a("x", 1))])
    with pytest.raises(ValueError, match="duplicate transaction id"):
        check([T(1, "ok"), T(1, "ok")])
    with pytest.raises(ValueError, match="status"):
        T(1, "committed")
    with pytest.raises(ValueError, match="micro-op"):
        T(1, "ok", ("w", "x", 1))


def test_the_report_prints_every_kind() -> None:
    history = [
        T(1, "ok", a("x", 1), a("y", 1)),
        T(2, "ok", a("x", 2), a("y", 2)),
        T(3, "fail", a("z", 1)),
        T(4, "ok", r("x", [1, 2]), r("y", [2, 1]), r("z", [1, 7])),
    ]
    text = check(history).format(per_kind=1)
    for kind in ("G0", "G1a", "garbage-read"):
        assert kind in text, text
    assert text.splitlines()[0].startswith("4 transactions (3 ok, 1 fail, 0 info)")


def test_many_anomalies_of_a_kind_are_summarized() -> None:
    history = [T(i, "ok", a("x", i)) for i in range(10)] + [T(99, "ok", r("x", []))]
    report = check(history)
    assert report.kinds() == {"lost-append": 10}
    assert "... and 7 more lost-append" in report.format(per_kind=3)


def test_large_components_do_not_recurse() -> None:
    """Tarjan's algorithm is iterative: a 3,000-transaction component is fine."""
    n = 3_000
    history = [T(i, "ok", a("x", i), a("y", i)) for i in range(n)]
    history.append(T(n, "ok", r("x", list(range(n))), r("y", list(reversed(range(n))))))
    report = check(history)
    assert report.kinds() == {"G0": 1}, report.summary()
    assert len(report.anomalies[0].txns) == 2  # a shortest cycle


# -- random serial executions are always valid -------------------------------------------------

KEYS = ["a", "b", "c", "d"]
op_strategy = st.tuples(st.sampled_from(["r", "append"]), st.sampled_from(KEYS))
txn_strategy = st.tuples(
    st.sampled_from(["ok", "ok", "ok", "fail", "info"]),
    st.booleans(),  # for info: did it commit?
    st.lists(op_strategy, min_size=1, max_size=5),
)


def execute_serially(
    programs: list[tuple[str, bool, list[tuple[str, str]]]], seed: int
) -> list[Txn]:
    """Run the programs one at a time on a dict; fail and info ones report no reads."""
    state: dict[str, list[int]] = {}
    counter = 0
    history = []
    clock = 0.0
    for i, (status, info_committed, program) in enumerate(programs):
        applies = status == "ok" or (status == "info" and info_committed)
        local = {k: list(v) for k, v in state.items()}
        ops: list[tuple[str, Any, Any]] = []
        for f, key in program:
            if f == "r":
                ops.append(("r", key, list(local.get(key, [])) if status == "ok" else None))
            else:
                counter += 1
                local.setdefault(key, []).append(counter)
                ops.append(("append", key, counter))
        if applies:
            state = local
        complete = clock + 1 if status == "ok" else None
        history.append(Txn(i, status, ops, invoke=clock, complete=complete))
        clock += 2
    final = [("r", k, list(state.get(k, []))) for k in KEYS]
    history.append(Txn("final", "ok", final, invoke=clock, complete=clock + 1))
    random.Random(seed).shuffle(history)  # the checker must not depend on history order
    return history


@settings(max_examples=300, deadline=None)
@given(st.lists(txn_strategy, max_size=40), st.integers(0, 2**32))
def test_serial_executions_are_valid(
    programs: list[tuple[str, bool, list[tuple[str, str]]]], seed: int
) -> None:
    history = execute_serially(programs, seed)
    report = check(history, realtime=True)
    assert report.valid, report.format()


@settings(max_examples=200, deadline=None)
@given(st.lists(txn_strategy, min_size=1, max_size=30), st.integers(0, 2**32))
def test_a_dropped_acknowledged_append_is_detected(
    programs: list[tuple[str, bool, list[tuple[str, str]]]], seed: int
) -> None:
    """Remove an ok append from the final read: an anomaly is reported."""
    history = execute_serially(programs, seed)
    final = next(t for t in history if t.id == "final")
    ok_appends = {
        (op[1], op[2]) for t in history if t.status == "ok" for op in t.ops if op[0] == "append"
    }
    candidates = [(op[1], x) for op in final.ops for x in op[2] if (op[1], x) in ok_appends]
    if not candidates:
        return
    key, value = random.Random(seed).choice(candidates)
    final.ops = [
        (f, k, [x for x in vs if x != value] if k == key else vs) for f, k, vs in final.ops
    ]
    # Without real time, a final read that lost the last append looks like an earlier read;
    # what is reported depends on where the value was: lost-append, incompatible-order, G1b
    # (the read now ends in an intermediate append), G2-realtime (a stale final read).
    report = check(history, realtime=True)
    assert not report.valid
