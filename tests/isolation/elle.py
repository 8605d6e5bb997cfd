"""An Elle-style isolation checker for list-append histories.

After Kingsbury & Alvaro, "Elle: Inferring Isolation Anomalies from Experimental
Observations", PVLDB 14(3), 2020 (https://arxiv.org/abs/2003.10554). Elle's insight is that
when every write *appends a unique value* to a list and reads return the whole list, a read
reveals not just one version of a key but the entire order of the versions before it. From
the observed lists the checker recovers each key's version order, infers the direct
serialization graph of Adya's formalism (Adya, "Weak Consistency", MIT 1999) between the
committed transactions, and looks for cycles in it. A serializable history has an acyclic
dependency graph and none of the non-cyclic anomalies below.

Input: a history of :class:`Txn`, each with a unique ``id``, a ``status`` (``"ok"``:
committed and acknowledged; ``"fail"``: definitely not committed; ``"info"``: unknown, e.g.
a timeout) and micro-ops, in program order:

* ``("r", key, [values read])``: the whole list of ``key`` (``None`` when not known, which
  is the case for every read of a failed or indeterminate transaction);
* ``("append", key, value)``: append ``value`` to ``key``'s list; appended values must be
  unique per key (a ``ValueError`` otherwise: the inference relies on it).

Optionally ``invoke``/``complete`` times (any monotonic clock) for the real-time checks of
strict serializability (``check(history, realtime=True)``).

What :func:`check` infers (section 4 of the paper):

* the *version order* of each key: the longest list read from it (reads of ``ok``
  transactions); every other read must be a prefix of it, else ``incompatible-order``. For
  ``lost-append`` to mean "missing from the final state", the history should end with a
  read of every key once the workload has quiesced (the longest read is then the final one);
* ``ww`` edges: ``T1 -> T2`` when T2 appended the element right after T1's in a key's
  version order; ``wr`` edges: ``T1 -> T2`` when T2 read a list whose last element T1
  appended; ``rw`` edges (anti-dependencies): ``T1 -> T2`` when T1 read a list of a key and
  T2 appended the next element of its version order, the one T1 did not see. Only the
  *external* reads of a transaction (before it appended to that key itself) make ``wr`` and
  ``rw`` edges, as in Elle; committed means ``ok`` or ``info`` (an indeterminate transaction
  may have committed; failed ones are left out of the graph: seeing their writes is G1a);
* with ``realtime=True``, ``rt`` edges: ``T1 -> T2`` when T1 completed before T2 was
  invoked (a transitive reduction of real-time order, as Elle computes it).

Then the strongly connected components of the graph (Tarjan's algorithm, iterative) and in
each one a short cycle, classified by the edges it needs (Adya's phenomena):

* ``G0`` (write cycle): ``ww`` edges only;
* ``G1c`` (circular information flow): ``ww`` and ``wr`` edges, at least one ``wr``;
* ``G2`` (anti-dependency cycle): at least one ``rw`` edge; the message says ``G-single``
  when the cycle has exactly one (Adya's G-single: read skew, lost update), else
  ``G2-item``. The search tries to find a G-single cycle first;
* ``G0-realtime``, ``G1c-realtime``, ``G2-realtime``: the same with ``rt`` edges (only with
  ``realtime=True``): serializable, but not in an order compatible with real time.

One cycle is reported per strongly connected component and kind: a count of cycles is a
lower bound of the cycles in the graph. And the anomalies that are not cycles:

* ``G1a`` (aborted read): a committed transaction read a value appended by a failed one;
* ``G1b`` (intermediate read): a committed transaction read a list ending in a value that
  its writer followed with another append to the same key;
* ``lost-append``: an acknowledged (``ok``) append missing from the longest (final) read of
  its key;
* ``duplicate-elements``: a value appearing twice in one read list;
* ``garbage-read``: a read of a value no transaction appended;
* ``incompatible-order``: two reads of a key that are not prefixes of one another;
* ``internal``: a transaction's read disagrees with its own earlier reads and appends (a
  non-repeatable read, or its own append missing).

``check`` returns a :class:`Report`: ``report.valid``, ``report.kinds()`` (a ``Counter``),
``report.anomalies`` (each an :class:`Anomaly` naming its transactions) and ``str(report)``
for a readable summary.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "Anomaly", "Report", "Step", "Txn", "check"]

TxnId = Hashable
MicroOp = tuple[str, Any, Any]

OK, FAIL, INFO = "ok", "fail", "info"
STATUSES = (OK, FAIL, INFO)
READ, APPEND = "r", "append"

CYCLE_KINDS = ("G0", "G1c", "G2", "G0-realtime", "G1c-realtime", "G2-realtime")
OTHER_KINDS = (
    "G1a",
    "G1b",
    "lost-append",
    "duplicate-elements",
    "garbage-read",
    "incompatible-order",
    "internal",
)
KINDS = CYCLE_KINDS + OTHER_KINDS

# (a cycle search: the edge kinds it may use and the one it must contain; the cycle found is
# then classified by the edges it uses.)
_LEVELS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"ww"}), "ww"),
    (frozenset({"ww", "wr"}), "wr"),
    (frozenset({"ww", "wr", "rw"}), "rw"),
)
_RT_LEVELS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"ww", "rt"}), "rt"),
    (frozenset({"ww", "wr", "rt"}), "rt"),
    (frozenset({"ww", "wr", "rw", "rt"}), "rt"),
)
ALL_EDGES = frozenset({"ww", "wr", "rw", "rt"})
_EDGE_PREFERENCE = ("ww", "wr", "rt", "rw")  # naming a cycle's step: rw last (G-single)
_G_SINGLE_TRIES = 64  # rw edges of one component tried for a G-single cycle


@dataclass
class Txn:
    """One transaction of a history: its id, outcome and micro-ops in program order."""

    id: TxnId
    status: str
    ops: list[MicroOp]
    invoke: float | None = None
    complete: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"txn {self.id!r}: status must be one of {STATUSES}")
        for op in self.ops:
            if len(op) != 3 or op[0] not in (READ, APPEND):
                raise ValueError(f"txn {self.id!r}: bad micro-op {op!r}")


@dataclass(frozen=True)
class Step:
    """One edge of a cycle: ``src -kind-> dst`` and why the edge exists."""

    src: TxnId
    kind: str
    dst: TxnId
    why: str

    def __str__(self) -> str:
        return f"T{self.src} -{self.kind}[{self.why}]-> T{self.dst}"


@dataclass(frozen=True)
class Anomaly:
    """One anomaly: its kind, the transactions involved, the key, and an explanation."""

    kind: str
    txns: tuple[TxnId, ...]
    message: str
    key: Any = None
    cycle: tuple[Step, ...] = ()

    def __str__(self) -> str:
        head = f"{self.kind}: {self.message}"
        if not self.cycle:
            return head
        return head + "\n    " + "\n    ".join(str(s) for s in self.cycle)


@dataclass
class Report:
    """What :func:`check` found; ``valid`` when nothing."""

    anomalies: list[Anomaly]
    txn_count: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    key_count: int = 0
    edge_counts: dict[str, int] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.anomalies

    def kinds(self) -> Counter[str]:
        """How many anomalies of each kind."""
        return Counter(a.kind for a in self.anomalies)

    def of_kind(self, kind: str) -> list[Anomaly]:
        return [a for a in self.anomalies if a.kind == kind]

    def summary(self) -> str:
        statuses = ", ".join(f"{self.status_counts.get(s, 0)} {s}" for s in STATUSES)
        edges = ", ".join(f"{n} {k}" for k, n in sorted(self.edge_counts.items()))
        verdict = (
            "no anomalies"
            if self.valid
            else "anomalies: " + ", ".join(f"{k} x{n}" for k, n in sorted(self.kinds().items()))
        )
        return (
            f"{self.txn_count} transactions ({statuses}), {self.key_count} keys, "
            f"edges: {edges or 'none'}; {verdict}"
        )

    def format(self, per_kind: int = 3) -> str:
        """The summary and up to ``per_kind`` anomalies of each kind."""
        lines = [self.summary()]
        shown: Counter[str] = Counter()
        for anomaly in self.anomalies:
            shown[anomaly.kind] += 1
            if shown[anomaly.kind] <= per_kind:
                lines.append("  " + str(anomaly).replace("\n", "\n  "))
        for kind, n in sorted(shown.items()):
            if n > per_kind:
                lines.append(f"  ... and {n - per_kind} more {kind}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _short(values: Sequence[Any], limit: int = 6) -> str:
    if len(values) <= limit:
        return repr(list(values))
    tail = ", ".join(repr(x) for x in values[-limit:])
    return f"[...{len(values) - limit} elided, {tail}]"


class _Graph:
    """Dependency edges between node numbers; each pair keeps one reason per edge kind."""

    def __init__(self, n: int) -> None:
        self.succ: list[dict[int, dict[str, tuple[Any, ...]]]] = [{} for _ in range(n)]
        self.counts: Counter[str] = Counter()

    def add(self, a: int, b: int, kind: str, why: tuple[Any, ...]) -> None:
        if a == b:
            return
        out = self.succ[a]
        kinds = out.get(b)
        if kinds is None:
            out[b] = {kind: why}
        elif kind in kinds:
            return
        else:
            kinds[kind] = why
        self.counts[kind] += 1

    def neighbours(self, v: int, nodes: set[int] | None, allowed: frozenset[str]) -> Iterator[int]:
        if nodes is None and allowed >= ALL_EDGES:
            yield from self.succ[v]  # the whole graph: no filtering
            return
        for w, kinds in self.succ[v].items():
            if (nodes is None or w in nodes) and not allowed.isdisjoint(kinds):
                yield w

    def sccs(self, nodes: Iterable[int] | None, allowed: frozenset[str]) -> list[list[int]]:
        """Tarjan's strongly connected components (iteratively), sizes > 1 only.

        ``nodes``: the subgraph's nodes (``None``: all of them).
        """
        node_list = list(range(len(self.succ)) if nodes is None else nodes)
        node_set = None if nodes is None else set(node_list)
        index: dict[int, int] = {}
        low: dict[int, int] = {}
        on_stack: set[int] = set()
        stack: list[int] = []
        out: list[list[int]] = []
        counter = itertools.count()
        for root in node_list:
            if root in index:
                continue
            index[root] = low[root] = next(counter)
            stack.append(root)
            on_stack.add(root)
            work = [(root, self.neighbours(root, node_set, allowed))]
            while work:
                v, it = work[-1]
                for w in it:
                    if w not in index:
                        index[w] = low[w] = next(counter)
                        stack.append(w)
                        on_stack.add(w)
                        work.append((w, self.neighbours(w, node_set, allowed)))
                        break
                    if w in on_stack:
                        low[v] = min(low[v], index[w])
                else:
                    work.pop()
                    if work:
                        parent = work[-1][0]
                        low[parent] = min(low[parent], low[v])
                    if low[v] == index[v]:
                        component = []
                        while True:
                            w = stack.pop()
                            on_stack.discard(w)
                            component.append(w)
                            if w == v:
                                break
                        if len(component) > 1:
                            out.append(component)
        return out

    def path(self, src: int, dst: int, nodes: set[int], allowed: frozenset[str]) -> list[int]:
        """A shortest path ``src ... dst`` inside ``nodes`` (breadth first), or []."""
        parent: dict[int, int] = {src: src}
        queue = deque([src])
        while queue:
            v = queue.popleft()
            if v == dst:
                break
            for w in self.neighbours(v, nodes, allowed):
                if w not in parent:
                    parent[w] = v
                    queue.append(w)
        if dst not in parent:
            return []
        out = [dst]
        while out[-1] != src:
            out.append(parent[out[-1]])
        out.reverse()
        return out


def _why(kind: str, reason: tuple[Any, ...], src: Txn, dst: Txn) -> str:
    """Why an edge exists, from what ``_Graph.add`` recorded."""
    if kind == "ww":
        key, a, b = reason
        return f"{key!r}: appended {b!r} after {a!r}"
    if kind == "wr":
        key, value = reason
        return f"{key!r}: read its {value!r}"
    if kind == "rw":
        key, seen, value = reason
        return f"{key!r}: read {seen} elements, missed {value!r}"
    return f"completed at {src.complete} before invoked at {dst.invoke}"


def check(history: Iterable[Txn], *, realtime: bool = False) -> Report:
    """Check a list-append history; see the module docstring for what is reported."""
    txns = list(history)
    anomalies: list[Anomaly] = []
    by_id: dict[TxnId, int] = {}
    for i, t in enumerate(txns):
        if t.id in by_id:
            raise ValueError(f"duplicate transaction id {t.id!r}")
        by_id[t.id] = i

    # Who appended what: (key, value) -> txn index; per txn and key the last append.
    writer: dict[tuple[Any, Any], int] = {}
    last_append: dict[tuple[int, Any], Any] = {}
    for i, t in enumerate(txns):
        for f, key, value in t.ops:
            if f != APPEND:
                continue
            if (key, value) in writer:
                other = txns[writer[key, value]].id
                raise ValueError(
                    f"value {value!r} appended to key {key!r} twice (txns {other!r}, {t.id!r}):"
                    " appended values must be unique per key"
                )
            writer[key, value] = i
            last_append[i, key] = value

    # Reads of committed, acknowledged transactions.
    reads: dict[Any, dict[tuple[Any, ...], list[int]]] = {}
    for i, t in enumerate(txns):
        if t.status != OK:
            continue
        for f, key, value in t.ops:
            if f == READ and value is not None:
                reads.setdefault(key, {}).setdefault(tuple(value), []).append(i)
    keys = set(reads) | {key for key, _ in writer}

    _check_internal(txns, anomalies)

    # Per read list: duplicates, garbage, aborted reads (G1a), intermediate reads (G1b).
    for key in sorted(reads, key=repr):
        for values, readers in reads[key].items():
            who = tuple(txns[r].id for r in readers)
            counts = Counter(values)
            dups = [x for x, n in counts.items() if n > 1]
            if dups:
                anomalies.append(
                    Anomaly(
                        "duplicate-elements",
                        who,
                        f"key {key!r}: {dups!r} appear more than once in {_short(values)}",
                        key,
                    )
                )
            garbage = [x for x in counts if (key, x) not in writer]
            if garbage:
                anomalies.append(
                    Anomaly(
                        "garbage-read",
                        who,
                        f"key {key!r}: read {garbage!r}, which no transaction appended",
                        key,
                    )
                )
            for x in counts:
                w = writer.get((key, x))
                if w is not None and txns[w].status == FAIL:
                    anomalies.append(
                        Anomaly(
                            "G1a",
                            (*who, txns[w].id),
                            f"key {key!r}: read {x!r}, appended by failed txn {txns[w].id!r}",
                            key,
                        )
                    )
            if values:
                w = writer.get((key, values[-1]))
                if (
                    w is not None
                    and last_append[w, key] != values[-1]
                    and any(r != w for r in readers)
                ):
                    anomalies.append(
                        Anomaly(
                            "G1b",
                            (*(txns[r].id for r in readers if r != w), txns[w].id),
                            f"key {key!r}: read a list ending in {values[-1]!r}, an intermediate"
                            f" append of txn {txns[w].id!r} (its last was"
                            f" {last_append[w, key]!r})",
                            key,
                        )
                    )

    # Version orders: the longest read; every read must be a prefix of it.
    order: dict[Any, tuple[Any, ...]] = {}
    for key in sorted(reads, key=repr):
        longest = max(reads[key], key=len)
        order[key] = longest
        for values, readers in reads[key].items():
            if longest[: len(values)] != values:
                anomalies.append(
                    Anomaly(
                        "incompatible-order",
                        tuple(txns[r].id for r in readers)
                        + tuple(txns[r].id for r in reads[key][longest]),
                        f"key {key!r}: read {_short(values)} is not a prefix of the longest read"
                        f" {_short(longest)}",
                        key,
                    )
                )

    # Lost appends: acknowledged, yet not in the final (longest) read of the key.
    final = {key: frozenset(values) for key, values in order.items()}
    for (key, value), w in writer.items():
        if txns[w].status == OK and key in final and value not in final[key]:
            anomalies.append(
                Anomaly(
                    "lost-append",
                    (txns[w].id,),
                    f"key {key!r}: the acknowledged append of {value!r} is missing from the"
                    f" longest read {_short(order[key])}",
                    key,
                )
            )

    graph = _Graph(len(txns))
    is_committed = [t.status != FAIL for t in txns]

    # ww: consecutive committed appends in each version order.
    for key, values in order.items():
        prev: int | None = None
        prev_value: Any = None
        for x in values:
            w = writer.get((key, x))
            if w is None or not is_committed[w]:
                continue
            if prev is not None:
                graph.add(prev, w, "ww", (key, prev_value, x))
            prev, prev_value = w, x

    # wr and rw from the external reads (before the txn's own append to the key).
    for i, t in enumerate(txns):
        if t.status != OK:
            continue
        appended: set[Any] = set()
        for f, key, value in t.ops:
            if f == APPEND:
                appended.add(key)
                continue
            if value is None or key in appended or key not in order:
                continue
            full = order[key]
            n = len(value)
            if full[:n] != tuple(value):
                continue  # incompatible-order, reported above
            seen_writer = None
            for x in reversed(value):
                w = writer.get((key, x))
                if w is not None and is_committed[w]:
                    graph.add(w, i, "wr", (key, x))
                    seen_writer = w
                    break
            for x in full[n:]:
                w = writer.get((key, x))
                # The rest of an intermediate read's writer's appends is G1b, not an edge.
                if w is not None and is_committed[w] and w != seen_writer:
                    graph.add(i, w, "rw", (key, n, x))
                    break

    levels = _LEVELS
    if realtime:
        _add_realtime(txns, is_committed, graph)
        levels = _LEVELS + _RT_LEVELS

    seen_cycles: set[tuple[str, frozenset[int]]] = set()
    # (failed transactions have no edges: alone in their components)
    for component in graph.sccs(None, ALL_EDGES):
        for allowed, required in levels:
            for sub in graph.sccs(component, allowed):
                cycle = _find_cycle(graph, set(sub), allowed, required)
                if not cycle:
                    continue
                anomaly = _describe_cycle(graph, txns, cycle, allowed, required)
                mark = (anomaly.kind, frozenset(cycle))
                if mark not in seen_cycles:
                    seen_cycles.add(mark)
                    anomalies.append(anomaly)

    return Report(
        anomalies,
        txn_count=len(txns),
        status_counts=dict(Counter(t.status for t in txns)),
        key_count=len(keys),
        edge_counts=dict(graph.counts),
    )


def _check_internal(txns: list[Txn], anomalies: list[Anomaly]) -> None:
    """A committed transaction's reads must agree with its earlier reads and appends."""
    for t in txns:
        if t.status != OK:
            continue
        known: dict[Any, list[Any]] = {}  # the whole list, once read
        suffix: dict[Any, list[Any]] = {}  # own appends before any read of the key
        for f, key, value in t.ops:
            if f == APPEND:
                if key in known:
                    known[key].append(value)
                else:
                    suffix.setdefault(key, []).append(value)
                continue
            if value is None:
                continue
            value = list(value)
            if key in known:
                expected = known[key]
                if value != expected:
                    anomalies.append(
                        Anomaly(
                            "internal",
                            (t.id,),
                            f"key {key!r}: read {_short(value)}, but its earlier reads and"
                            f" appends make it {_short(expected)}",
                            key,
                        )
                    )
            else:
                mine = suffix.pop(key, [])
                if mine and value[len(value) - len(mine) :] != mine:
                    anomalies.append(
                        Anomaly(
                            "internal",
                            (t.id,),
                            f"key {key!r}: read {_short(value)}, which does not end with its"
                            f" own appends {mine!r}",
                            key,
                        )
                    )
            known[key] = value


def _add_realtime(txns: list[Txn], is_committed: list[bool], graph: _Graph) -> None:
    """``rt`` edges, transitively reduced: completions before invocations.

    A frontier holds the completed transactions not yet implied by a later one; a
    transaction's predecessors are the frontier at its invocation, and its completion
    retires them (each is then reachable through it).
    """
    events: list[tuple[float, int, int]] = []
    for i, t in enumerate(txns):
        if not is_committed[i] or t.invoke is None:
            continue
        events.append((t.invoke, 0, i))  # at equal times: concurrent, no edge
        if t.status == OK and t.complete is not None:
            events.append((t.complete, 1, i))
    events.sort()
    frontier: set[int] = set()
    preds: dict[int, list[int]] = {}
    for _, what, i in events:
        if what == 0:
            preds[i] = list(frontier)
            for p in preds[i]:
                graph.add(p, i, "rt", ())  # (the times are in the txns)
        else:
            frontier.difference_update(preds.pop(i, ()))
            frontier.add(i)


def _find_cycle(
    graph: _Graph, nodes: set[int], allowed: frozenset[str], required: str
) -> list[int]:
    """A cycle inside ``nodes`` through a ``required`` edge: ``[a, b, ..., a]``, or []."""
    candidates = sorted(
        (a, b)
        for a in nodes
        for b, kinds in graph.succ[a].items()
        if b in nodes and required in kinds
    )
    if required == "rw":
        # Prefer a cycle with a single anti-dependency (G-single).
        without = allowed - {"rw"}
        for a, b in candidates[:_G_SINGLE_TRIES]:
            rest = graph.path(b, a, nodes, without)
            if rest:
                return [a, *rest]
    for a, b in candidates[:_G_SINGLE_TRIES]:
        rest = graph.path(b, a, nodes, allowed)
        if rest:
            return [a, *rest]
    return []


def _describe_cycle(
    graph: _Graph, txns: list[Txn], cycle: list[int], allowed: frozenset[str], required: str
) -> Anomaly:
    """Name a cycle's edges (its first one is the ``required`` kind) and classify it."""
    steps = []
    used: Counter[str] = Counter()
    for position, (a, b) in enumerate(itertools.pairwise(cycle)):
        kinds = graph.succ[a][b]
        if position == 0:
            kind = required
        else:
            kind = next(k for k in _EDGE_PREFERENCE if k in kinds and k in allowed)
        used[kind] += 1
        steps.append(Step(txns[a].id, kind, txns[b].id, _why(kind, kinds[kind], txns[a], txns[b])))
    if used["rw"]:
        name = "G2"
        label = "G2 (G-single)" if used["rw"] == 1 else "G2 (G2-item)"
    elif used["wr"]:
        name = label = "G1c"
    else:
        name = label = "G0"
    if used["rt"]:
        name += "-realtime"
        label = label.replace(name[: name.index("-realtime")], name, 1)
    kinds_used = ", ".join(f"{n} {k}" for k, n in sorted(used.items()))
    return Anomaly(
        name,
        tuple(txns[i].id for i in cycle[:-1]),
        f"{label} cycle of {len(cycle) - 1} transactions ({kinds_used})",
        cycle=tuple(steps),
    )
