"""Serializability: concurrent histories are equivalent to the commit-timestamp order.

* Bank transfers from many concurrent callers keep the total, never go negative, and the
  stored balances are exactly what the acknowledged transfers imply.
* Write skew (the on-call doctors history), which snapshot isolation alone allows, is
  refused: forced deterministically at the engine level, and via two paused mutations.
* ``WriteConflict`` names table, key and timestamp; a mutation that always conflicts gives
  up after ``max_attempts`` with a message saying so.

Source: ARCHITECTURE.md ("Committer", "Read set / write set") and docs/guarantees.md
("Isolation": transactions are serializable).
"""

from __future__ import annotations

import asyncio
import importlib
import random
from pathlib import Path
from typing import Any

import pytest

import reactive
from gate import Gate, on_loop
from reactive import ConvexError
from reactive.errors import WriteConflict

BANK = """
import asyncio

from reactive import ConvexError, mutation, query, v


@mutation(args={"name": v.string(), "balance": v.int64()})
async def open_account(ctx, name, balance):
    return await ctx.db.insert("accounts", {"name": name, "balance": balance})


@mutation(args={"src": v.id("accounts"), "dst": v.id("accounts"), "amount": v.int64()})
async def transfer(ctx, src, dst, amount):
    a = await ctx.db.get(src)
    await asyncio.sleep(0)  # let other transfers interleave between the reads and writes
    b = await ctx.db.get(dst)
    if a["balance"] < amount:
        raise ConvexError({"code": "INSUFFICIENT", "balance": a["balance"]})
    await ctx.db.patch(src, {"balance": a["balance"] - amount})
    await asyncio.sleep(0)
    await ctx.db.patch(dst, {"balance": b["balance"] + amount})
    return a["balance"] - amount


@query(args={})
async def balances(ctx):
    return {d["_id"]: d["balance"] for d in await ctx.db.query("accounts").collect()}
"""

BANK_SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "accounts": define_table({"name": v.string(), "balance": v.int64()}),
})
"""

DOCTORS = '''
from reactive import mutation, query, v

HOOKS = {}
ATTEMPTS = []


@mutation(args={"name": v.string()})
async def add_doctor(ctx, name):
    return await ctx.db.insert("doctors", {"name": name, "on_call": True})


@mutation(args={})
async def reset(ctx):
    for d in await ctx.db.query("doctors").collect():
        await ctx.db.patch(d["_id"], {"on_call": True})


@mutation(args={"name": v.string()})
async def go_off_call(ctx, name):
    """Leave the rota if another doctor is still on call (reads both, writes only self)."""
    on_call = await (
        ctx.db.query("doctors").with_index("by_on_call", lambda q: q.eq("on_call", True)).collect()
    )
    ATTEMPTS.append((name, len(on_call)))
    barrier = HOOKS.get("barrier")
    if barrier is not None and name not in barrier["arrived"]:
        # First attempt of each doctor: wait until both have read, then both write.
        barrier["arrived"].add(name)
        if len(barrier["arrived"]) == 2:
            barrier["event"].set()
        await barrier["event"].wait()
    me = next(d for d in await ctx.db.query("doctors").collect() if d["name"] == name)
    if len(on_call) >= 2 and me["on_call"]:
        await ctx.db.patch(me["_id"], {"on_call": False})
        return True
    return False


@query(args={})
async def rota(ctx):
    return {d["name"]: d["on_call"] for d in await ctx.db.query("doctors").collect()}
'''

DOCTORS_SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "doctors": define_table({"name": v.string(), "on_call": v.boolean()})
        .index("by_on_call", ["on_call"]),
    "counters": define_table({"n": v.int64()}),
})
"""

CONFLICT = '''
from reactive import mutation, v

HOOKS = {}


@mutation(args={})
async def create(ctx):
    return await ctx.db.insert("counters", {"n": 0})


@mutation(args={"id": v.id("counters")})
async def bump(ctx, id):
    doc = await ctx.db.get(id)
    await ctx.db.patch(id, {"n": doc["n"] + 1})


@mutation(args={"id": v.id("counters")})
async def contended(ctx, id):
    """Read the counter, let a concurrent writer change it, then write it."""
    doc = await ctx.db.get(id)
    HOOKS["attempts"] = HOOKS.get("attempts", 0) + 1
    await HOOKS["interfere"]()
    await ctx.db.patch(id, {"n": doc["n"] + 100})
'''


def _module(app_dir: Path) -> Any:
    return importlib.import_module(f"{app_dir.name}.m")


async def _commit(db: reactive.Database, txn: Any) -> int:
    ts = db._engine.commit(txn)
    assert ts is not None
    db._flusher.nudge()
    await db._flusher.wait(ts)
    return int(ts)


# -- bank transfers -------------------------------------------------------------------------


async def test_concurrent_transfers_are_serializable(db_url: str, make_app: Any) -> None:
    app_dir = make_app({"m.py": BANK, "schema.py": BANK_SCHEMA})
    initial = 100
    callers = 24
    per_caller = 15  # 360 transfers
    rng = random.Random(20240601)
    async with reactive.open(db_url, app=app_dir) as db:
        accounts = [
            await db.mutation("m:open_account", {"name": f"acct{i}", "balance": initial})
            for i in range(5)
        ]
        plans = [
            [(*rng.sample(accounts, 2), rng.randint(1, 60)) for _ in range(per_caller)]
            for _ in range(callers)
        ]
        ledger: list[tuple[str, str, int, int]] = []  # (src, dst, amount, commit ts)
        refused = 0
        gave_up = 0
        retried = 0

        async def caller(plan: list[tuple[str, str, int]]) -> None:
            nonlocal refused, gave_up, retried
            for src, dst, amount in plan:
                try:
                    outcome = await db.run_mutation(
                        "m:transfer", {"src": src, "dst": dst, "amount": amount}
                    )
                except ConvexError as exc:
                    assert exc.data["code"] == "INSUFFICIENT"
                    assert exc.data["balance"] < amount
                    refused += 1
                except WriteConflict:
                    gave_up += 1
                else:
                    assert outcome.value >= 0
                    retried += outcome.attempts > 1
                    ledger.append((src, dst, amount, outcome.ts))

        await asyncio.gather(*(caller(p) for p in plans))

        total = callers * per_caller
        assert len(ledger) + refused + gave_up == total
        assert len(ledger) > total // 2
        # The interleaving really was concurrent: some transfers had to be re-run.
        assert retried > 0

        stored = await db.query("m:balances")
        assert set(stored) == set(accounts)
        assert sum(stored.values()) == initial * len(accounts)
        assert all(b >= 0 for b in stored.values()), stored

        expected = dict.fromkeys(accounts, initial)
        for src, dst, amount, _ in ledger:
            expected[src] -= amount
            expected[dst] += amount
        assert stored == expected

        # Replaying the ledger in commit-timestamp order never overdraws an account: the
        # history is equivalent to that serial order.
        timestamps = [ts for *_, ts in ledger]
        assert len(set(timestamps)) == len(timestamps)
        replay = dict.fromkeys(accounts, initial)
        for src, dst, amount, _ in sorted(ledger, key=lambda t: t[3]):
            assert replay[src] >= amount
            replay[src] -= amount
            replay[dst] += amount
        assert replay == stored

    # And it is all durable: reopening gives the same balances.
    async with reactive.open(db_url, app=app_dir) as db:
        assert await db.query("m:balances") == expected
        report = await db.check()
        assert report["problems"] == []


# -- write skew -----------------------------------------------------------------------------


async def _doctors_db(db_url: str, make_app: Any, **options: Any) -> tuple[Any, Any, dict]:
    app_dir = make_app({"m.py": DOCTORS, "schema.py": DOCTORS_SCHEMA})
    options.setdefault("function_time_limit_s", 60)  # handlers wait at a barrier
    db = await reactive.open(db_url, app=app_dir, **options)
    ids = {name: await db.mutation("m:add_doctor", {"name": name}) for name in ("alice", "bob")}
    return db, _module(app_dir), ids


@pytest.mark.parametrize("read_by", ["get", "index_range"])
async def test_write_skew_is_refused_at_the_engine_level(
    db_url: str, make_app: Any, read_by: str
) -> None:
    db, _, ids = await _doctors_db(db_url, make_app)
    try:
        engine = db._engine
        a = engine.begin(False)
        b = engine.begin(False)
        assert a.begin_ts == b.begin_ts

        def on_call(txn: Any) -> int:
            if read_by == "get":
                return sum(txn.get(i)["on_call"] for i in ids.values())
            docs, _, _ = txn.scan(
                "doctors",
                "by_on_call",
                [("eq", "on_call", True)],
                "asc",
                None,
                None,
                None,
                None,
                True,
            )
            return len(docs)

        # Both read the same snapshot: two doctors on call, so each may leave.
        assert on_call(a) == 2
        assert on_call(b) == 2
        a.replace(ids["alice"], {"name": "alice", "on_call": False})
        b.replace(ids["bob"], {"name": "bob", "on_call": False})

        ts_a = await _commit(db, a)
        with pytest.raises(WriteConflict) as info:
            engine.commit(b)
        conflict = info.value
        assert conflict.table == "doctors"
        assert conflict.ts == ts_a
        assert isinstance(conflict.key, str) and conflict.key
        int(conflict.key, 16)  # hex
        assert "conflict" in str(conflict).lower()

        assert await db.query("m:rota") == {"alice": False, "bob": True}
        # A retry of b on a fresh snapshot sees only one doctor on call.
        retry = engine.begin(False)
        assert on_call(retry) == 1
    finally:
        await db.close()


async def test_write_skew_with_disjoint_writes_and_blind_reader(db_url: str, make_app: Any) -> None:
    """Three transactions on one snapshot: only those whose reads were overwritten fail."""
    db, _, ids = await _doctors_db(db_url, make_app)
    try:
        engine = db._engine
        counter_txn = engine.begin(False)
        counter_txn.insert("counters", {"n": 0})
        await _commit(db, counter_txn)

        a = engine.begin(False)
        b = engine.begin(False)
        blind = engine.begin(False)
        assert a.get(ids["alice"])["on_call"] and a.get(ids["bob"])["on_call"]
        assert b.get(ids["bob"])["on_call"]  # b reads only bob
        a.replace(ids["alice"], {"name": "alice", "on_call": False})
        b.replace(ids["bob"], {"name": "bob", "on_call": True})
        blind.insert("counters", {"n": 1})  # reads nothing a or b wrote
        await _commit(db, a)
        # b read nothing a wrote: no conflict; blind neither.
        await _commit(db, b)
        await _commit(db, blind)
        assert await db.query("m:rota") == {"alice": False, "bob": True}
    finally:
        await db.close()


async def test_write_skew_through_mutations_keeps_a_doctor_on_call(
    db_url: str, make_app: Any
) -> None:
    db, mod, _ = await _doctors_db(db_url, make_app)
    try:
        for round_ in range(10):
            if round_:
                await db.mutation("m:reset")
            assert await db.query("m:rota") == {"alice": True, "bob": True}
            mod.ATTEMPTS.clear()
            mod.HOOKS["barrier"] = {"arrived": set(), "event": Gate()}
            first, second = ("alice", "bob") if round_ % 2 == 0 else ("bob", "alice")
            results = await asyncio.wait_for(
                asyncio.gather(
                    db.run_mutation("m:go_off_call", {"name": first}),
                    db.run_mutation("m:go_off_call", {"name": second}),
                ),
                30,
            )
            rota = await db.query("m:rota")
            # Both first attempts read two doctors on call (the barrier made them overlap).
            firsts = {}
            for name, seen in mod.ATTEMPTS:
                firsts.setdefault(name, seen)
            assert firsts == {"alice": 2, "bob": 2}
            # Exactly one left; the other was re-run, saw one on call and stayed.
            left = [r.value for r in results]
            assert sorted(left) == [False, True], (round_, left, mod.ATTEMPTS)
            assert sum(rota.values()) == 1, (round_, rota)
            assert sorted(r.attempts for r in results)[-1] >= 2
            loser = results[left.index(False)]
            assert loser.attempts >= 2
    finally:
        mod.HOOKS.clear()
        await db.close()


# -- conflicts that never end -----------------------------------------------------------------


async def test_mutation_that_always_conflicts_gives_up(db_url: str, make_app: Any) -> None:
    app_dir = make_app({"m.py": CONFLICT})
    async with reactive.open(db_url, app=app_dir, max_attempts=3) as db:
        mod = _module(app_dir)
        counter = await db.mutation("m:create")
        interfering: list[int] = []

        async def interfere() -> None:
            outcome = await db.run_mutation("m:bump", {"id": counter})
            interfering.append(outcome.ts)

        mod.HOOKS["interfere"] = on_loop(asyncio.get_running_loop(), interfere)
        with pytest.raises(WriteConflict) as info:
            await db.mutation("m:contended", {"id": counter})
        error = info.value
        message = str(error)
        assert "write conflict" in message.lower()
        assert "m:contended" in message
        assert "3" in message
        assert mod.HOOKS["attempts"] == 3
        assert len(interfering) == 3
        assert error.table == "counters"
        assert error.key and int(error.key, 16) >= 0
        assert error.ts == interfering[-1]
        assert isinstance(error.__cause__, WriteConflict)

        # None of the contended writes happened; every interfering one did.
        txn = db._engine.begin(True)
        assert txn.get(counter)["n"] == 3

        # Without interference the same mutation commits on its first attempt.
        async def quiet() -> None:
            return None

        mod.HOOKS["interfere"] = quiet
        mod.HOOKS["attempts"] = 0
        outcome = await db.run_mutation("m:contended", {"id": counter})
        assert outcome.attempts == 1
        assert db._engine.begin(True).get(counter)["n"] == 103
    mod.HOOKS.clear()


async def test_conflict_on_a_retry_succeeds_within_max_attempts(db_url: str, make_app: Any) -> None:
    app_dir = make_app({"m.py": CONFLICT})
    async with reactive.open(db_url, app=app_dir, max_attempts=3) as db:
        mod = _module(app_dir)
        counter = await db.mutation("m:create")
        remaining = [2]

        async def interfere_twice() -> None:
            if remaining[0]:
                remaining[0] -= 1
                await db.mutation("m:bump", {"id": counter})

        mod.HOOKS["interfere"] = on_loop(asyncio.get_running_loop(), interfere_twice)
        outcome = await db.run_mutation("m:contended", {"id": counter})
        assert outcome.attempts == 3
        assert db._engine.begin(True).get(counter)["n"] == 102
    mod.HOOKS.clear()
