"""Search indexes after SIGKILL under write load: text searches return exactly the stored
documents holding the term (in BM25 order), vector searches equal a brute force, and the
check finds nothing (search indexes are derived state, rebuilt from the documents)."""

from __future__ import annotations

import asyncio
import math
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import reactive

WORDS = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron", "iris", "jade"]
"""No word is a prefix of another, so a one-word search matches that word only."""

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "notes": define_table({"body": v.string(), "tag": v.string(), "vec": v.array(v.float64())})
        .search_index("by_body", search_field="body", filter_fields=["tag"])
        .vector_index("by_vec", vector_field="vec", dimensions=4, filter_fields=["tag"]),
})
"""

APP = """
from reactive import mutation, query, v


@mutation(args={"body": v.string(), "tag": v.string(), "vec": v.array(v.float64())})
async def add(ctx, body, tag, vec):
    return await ctx.db.insert("notes", {"body": body, "tag": tag, "vec": vec})


@mutation(args={"seed": v.int64(), "body": v.string()})
async def churn(ctx, seed, body):
    docs = await ctx.db.query("notes").take(50)
    if not docs:
        return
    victim = docs[seed % len(docs)]
    if seed % 3 == 0:
        await ctx.db.delete(victim["_id"])
    else:
        await ctx.db.patch(victim["_id"], {"body": body})


@query(args={"word": v.string()})
async def search(ctx, word):
    docs = await ctx.db.query("notes").with_search_index(
        "by_body", lambda q: q.search("body", word)
    ).collect()
    return [d["_id"] for d in docs]


@query(args={"vec": v.array(v.float64())})
async def nearest(ctx, vec):
    return await ctx.db.vector_search("notes", "by_vec", {"vector": vec, "limit": 5})


@query(args={"cursor": v.union(v.string(), v.null())})
async def page(ctx, cursor):
    return await ctx.db.query("notes").paginate({"numItems": 500, "cursor": cursor})
"""

CHILD = """
import asyncio
import random
import sys

import reactive

WORDS = __WORDS__


async def main():
    url, app, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    db = await reactive.open(url, app=app)
    sys.stdout.write("writing\\n")
    sys.stdout.flush()

    async def worker(n):
        while True:
            body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
            if rng.random() < 0.7:
                vec = [rng.gauss(0, 1) for _ in range(4)]
                await db.mutation("m:add", {"body": body, "tag": rng.choice("xy"), "vec": vec})
            else:
                await db.mutation("m:churn", {"seed": rng.randint(0, 10**6), "body": body})

    await asyncio.gather(*(worker(n) for n in range(4)))


asyncio.run(main())
""".replace("__WORDS__", repr(WORDS))


def terms(text: str) -> list[str]:
    return text.split()


def bm25_order(docs: dict[str, str], word: str) -> list[str]:
    """Reference BM25 (tantivy's: k1 1.2, b 0.75) of one term; ties by id."""
    n = len(docs)
    avg = sum(len(terms(b)) for b in docs.values()) / n
    df = sum(1 for b in docs.values() if word in terms(b))
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    scored = []
    for id_, body in docs.items():
        tf = Counter(terms(body))[word]
        if tf:
            length = len(terms(body))
            scored.append((idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / avg)), id_))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [id_ for _, id_ in scored]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(x * x for x in b))
    )


async def _all(db: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await db.query("m:page", {"cursor": cursor})
        out += page["page"]
        if page["isDone"]:
            return out
        cursor = page["continueCursor"]


async def test_search_after_sigkill_equals_a_fresh_build(
    tmp_path: Path, db_url: str, make_app: Any
) -> None:
    app_dir = make_app({"m.py": APP, "schema.py": SCHEMA})
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    rng = random.Random(11)
    async with reactive.open(db_url, app=app_dir):
        pass
    for round_ in range(5):
        err = tmp_path / f"child{round_}.err"
        with err.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(script), db_url, str(app_dir), str(round_)],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
            try:
                assert proc.stdout is not None
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line == b"writing\n", err.read_text()
                time.sleep(rng.uniform(0.3, 1.0))
                proc.send_signal(signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=30)
                assert proc.stdout is not None
                proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, err.read_text()

        async with reactive.open(db_url, app=app_dir) as db:
            docs = await _all(db)
            assert docs, "the child wrote nothing"
            bodies = {d["_id"]: d["body"] for d in docs}
            for word in WORDS:
                got = await db.query("m:search", {"word": word})
                assert got == bm25_order(bodies, word)[:1024], f"round {round_}: {word}"
            for _ in range(3):
                q = [rng.gauss(0, 1) for _ in range(4)]
                got = await db.query("m:nearest", {"vec": q})
                expected = sorted(docs, key=lambda d: (-cosine(d["vec"], q), d["_id"]))[:5]
                assert [g["_id"] for g in got] == [d["_id"] for d in expected]
            report = await db.check()
            assert report["problems"] == [], report["problems"][:5]
            assert report["search_indexes"] == 1
