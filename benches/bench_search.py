"""Benchmark 11: full-text and vector search, beside tantivy-py, SQLite FTS5 and numpy.

Corpus (``search_corpus.py``): the standard library's docstrings and comment blocks (~19k on
CPython 3.11), then generated text from their vocabulary, up to 100k documents (20k quick),
``{body, channel}``; queries are 2 distinct tokens of one document each, searched as
"t1 OR t2", top 10 by relevance. Vectors: 100k (20k quick) unit float32 vectors of 384
dimensions from a mixture of 256 Gaussian clusters, and query vectors from the same mixture.

Reactive (the app in ``benches/searchapp/``; each side skipped with a note while the engine
lacks it):

* indexing: ``docs:insert_many`` of the corpus 500 documents per mutation, timed until all are
  committed and ``docs:search`` finds a document near the end by a term at most 3 documents
  hold (docs/s); then the database is closed and reopened, timed until that search finds it
  again (the search index is rebuilt at open from the stored documents; the reopen also loads
  the documents, as every open does).
* queries: ``db.text_search("docs", "search_body", text, limit=10)`` (the engine without the
  function runner, if ``Database`` has it), and the query ``docs:search`` (``ctx.db.query("docs")
  .with_search_index("search_body", lambda q: q.search("body", text)).take(10)``, documents
  returned to the ``db.query`` caller); context: ``docs:search_ids`` (ids only).
* vectors: ``vecs:insert_many`` 500 per mutation, reopen; the query ``vecs:search``
  (``ctx.db.vector_search(...)``) and ``db.vector_search("vecs", "by_embedding", vector,
  limit=10)`` (if ``Database`` has it), in two modes when ``reactive.open`` has the
  ``vector_exact_limit`` knob: approximate (HNSW: the default limit is below the vector count)
  and exact (reopened with the limit at the vector count). Exact: ms per query; approximate:
  queries/s and recall@10 against the exact top 10.

Anchors, in the same run, alternating with the reactive side:

* tantivy-py: schema ``body`` TEXT (default tokenizer), ``channel`` STRING (raw), plus a stored
  ``i`` (the corpus position, read back only for the agreement check); index on disk, writer
  with 2 threads and the default heap; docs/s until ``commit()`` returned. Queries: a
  ``BooleanQuery`` of two ``Should`` ``TermQuery`` on ``body``, ``searcher.search(q, 10,
  count=False)`` (the top 10 without counting every match: reactive returns no count), the
  ``DocAddress`` list kept (no document fetched). The same work as the engine's query (the
  target row): that ``BooleanQuery`` plus one ``Should`` ``TermQuery`` per expansion of the
  last term (the first 16 corpus terms it prefixes, in byte order, as the engine takes them
  from its term dictionary), each in a ``BoostQuery`` of 0.5; prepared before the timing.
* SQLite FTS5 (``sqlite3``): ``CREATE VIRTUAL TABLE docs USING fts5(body, channel UNINDEXED)``,
  WAL + synchronous=FULL, the corpus inserted in one transaction (docs/s until ``COMMIT``);
  ``SELECT rowid FROM docs WHERE docs MATCH '"t1" OR "t2"' ORDER BY rank LIMIT 10``.
* numpy: the vectors as one float32 matrix; exact top 10 of ``M @ q`` by ``np.argpartition``
  and a sort of the 10; median ms per query.

Ratios are "higher is better": reactive/anchor for throughput, anchor/reactive for latency.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import importlib.util
import inspect
import os
import shutil
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

# numpy's OpenBLAS on one thread (read when numpy is first imported, so set here, before it is;
# a value in the environment wins): a matrix-vector product is memory-bound, and on this
# shared 2-vCPU machine a second BLAS thread made the anchor ~2.5x slower, not faster.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import search_corpus
from common import BENCHES, Row, log, median, scratch_dir, standalone

BENCH = "search"
APP = BENCHES / "searchapp"
BATCH = 500
DIM = 384
K = 10
NOT_YET = "engine search not available yet"
READY_S = 120.0  # how long to wait for inserted documents to become searchable
SETTLE_S = 240.0  # how long to wait for the engine's background index work to finish

Batch = Callable[[int, int], list[dict[str, Any]]]
Probe = Callable[[Any, list[str]], Awaitable[bool]]


@dataclass
class Plan:
    """Sizes and repetitions of one run."""

    docs: int
    vectors: int
    text_queries: int
    vector_queries: int
    index_reps: int  # anchors' indexing repetitions (tantivy, FTS5)
    reactive_index_reps: int  # reactive insert + reopen repetitions (fresh database each)
    query_reps: int
    query_seconds: float
    vector_reps: int


FULL = Plan(100_000, 100_000, 2_000, 200, 3, 2, 5, 2.0, 3)
QUICK = Plan(20_000, 20_000, 500, 50, 2, 1, 3, 1.0, 2)


def rate(seconds: float, items: list[Any], op: Callable[[Any], int]) -> tuple[float, int]:
    """Call ``op`` on ``items`` in turn (cycling) for ``seconds``; (calls/s, empty results)."""
    done = empty = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        if op(items[done % len(items)]) == 0:
            empty += 1
        done += 1
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start), empty


async def arate(seconds: float, items: list[Any], op: Callable[[Any], Any]) -> tuple[float, int]:
    """:func:`rate` for a coroutine function ``op``."""
    done = empty = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        if await op(items[done % len(items)]) == 0:
            empty += 1
        done += 1
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start), empty


def overlap(a: list[list[int]], b: list[list[int]]) -> float | None:
    """Mean fraction of ``b``'s top-k found in ``a``'s (recall of ``a`` against ``b``)."""
    pairs = [(set(x), set(y)) for x, y in zip(a, b, strict=False) if y]
    if not pairs:
        return None
    return sum(len(x & y) / len(y) for x, y in pairs) / len(pairs)


# -- anchors: tantivy-py ----------------------------------------------------------------------


class Tantivy:
    """The corpus in a tantivy index on disk."""

    def __init__(self, directory: Path) -> None:
        import tantivy

        self.t = tantivy
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("body", tokenizer_name="default")
        builder.add_text_field("channel", tokenizer_name="raw")  # STRING
        builder.add_unsigned_field("i", stored=True, indexed=False)
        self.schema = builder.build()
        directory.mkdir(parents=True, exist_ok=True)
        self.index = tantivy.Index(self.schema, path=str(directory))
        self.searcher: Any = None

    def load(self, corpus: list[dict[str, str]]) -> tuple[float, float]:
        """Index the corpus; (docs/s until commit returned, seconds waiting for merges)."""
        doc = self.t.Document
        t0 = time.perf_counter()
        writer = self.index.writer(num_threads=2)
        for i, d in enumerate(corpus):
            writer.add_document(doc(body=d["body"], channel=d["channel"], i=i))
        writer.commit()
        t1 = time.perf_counter()
        writer.wait_merging_threads()
        merge = time.perf_counter() - t1
        self.index.reload()
        self.searcher = self.index.searcher()
        return len(corpus) / (t1 - t0), merge

    def query(self, text: str) -> Any:
        """The ``BooleanQuery`` of one ``Should`` ``TermQuery`` per term."""
        t = self.t
        return t.Query.boolean_query(
            [(t.Occur.Should, t.Query.term_query(self.schema, "body", w)) for w in text.split()]
        )

    def expanded_query(self, text: str, vocabulary: list[str]) -> Any:
        """The engine's query, as tantivy-py can state it: one ``Should`` ``TermQuery`` per
        term, plus the first ``PREFIX_EXPANSIONS`` corpus terms the last term prefixes, each
        boosted by ``PREFIX_BOOST`` (search-as-you-type, as the engine and Convex match it)."""
        t = self.t
        terms = text.split()
        clauses = [(t.Occur.Should, t.Query.term_query(self.schema, "body", w)) for w in terms]
        for w in prefix_expansions(vocabulary, terms[-1]):
            if w not in terms:
                q = t.Query.term_query(self.schema, "body", w)
                clauses.append((t.Occur.Should, t.Query.boost_query(q, PREFIX_BOOST)))
        return t.Query.boolean_query(clauses)

    def search(self, text: str) -> int:
        """Top 10 of the query; how many hits (doc addresses only)."""
        hits = self.searcher.search(self.query(text), K, count=False).hits
        return len([address for _, address in hits])

    def search_query(self, query: Any) -> int:
        """Top 10 of a prepared query; how many hits (doc addresses only)."""
        hits = self.searcher.search(query, K, count=False).hits
        return len([address for _, address in hits])

    def top_query(self, query: Any) -> list[int]:
        """Corpus positions of a prepared query's top 10 (fetches documents)."""
        hits = self.searcher.search(query, K, count=False).hits
        return [self.searcher.doc(address)["i"][0] for _, address in hits]

    def top(self, text: str) -> list[int]:
        """Corpus positions of the top 10 (for the agreement check; fetches documents)."""
        hits = self.searcher.search(self.query(text), K, count=False).hits
        return [self.searcher.doc(address)["i"][0] for _, address in hits]


# -- anchors: SQLite FTS5 ---------------------------------------------------------------------


class Fts5:
    """The corpus in an FTS5 table (rowid = corpus position + 1)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE VIRTUAL TABLE docs USING fts5(body, channel UNINDEXED)")

    def load(self, corpus: list[dict[str, str]]) -> float:
        """Insert the corpus in one transaction; docs/s until COMMIT returned."""
        t0 = time.perf_counter()
        self.conn.execute("BEGIN")
        self.conn.executemany(
            "INSERT INTO docs (rowid, body, channel) VALUES (?, ?, ?)",
            ((i + 1, d["body"], d["channel"]) for i, d in enumerate(corpus)),
        )
        self.conn.execute("COMMIT")
        return len(corpus) / (time.perf_counter() - t0)

    @staticmethod
    def match(text: str) -> str:
        """``"t1" OR "t2"`` (quoted: a term such as ``not`` or ``near`` stays a term)."""
        return " OR ".join(f'"{w}"' for w in text.split())

    def search(self, text: str) -> int:
        """Top 10 rowids by rank; how many."""
        return len(self.top(text))

    def top(self, text: str) -> list[int]:
        """Corpus positions of the top 10."""
        rows = self.conn.execute(
            "SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY rank LIMIT ?",
            (self.match(text), K),
        ).fetchall()
        return [r[0] - 1 for r in rows]

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


# -- anchor: numpy ----------------------------------------------------------------------------


def numpy_top(matrix: Any, q: Any) -> list[int]:
    """Exact top 10 by inner product (cosine: the vectors are unit length), best first."""
    import numpy as np

    scores = matrix @ q
    part = np.argpartition(scores, -K)[-K:]
    return part[np.argsort(scores[part])[::-1]].tolist()


def numpy_latencies(matrix: Any, qs: Any) -> list[float]:
    """Milliseconds per query of :func:`numpy_top`."""
    out = []
    for q in qs:
        t0 = time.perf_counter()
        numpy_top(matrix, q)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def ground_truth(matrix: Any, qs: Any) -> list[list[int]]:
    """The exact top 10 of every query (untimed)."""
    return [numpy_top(matrix, q) for q in qs]


# -- reactive ---------------------------------------------------------------------------------


@dataclass
class Side:
    """What the reactive side measured, or why it could not."""

    insert: list[float] = field(default_factory=list)  # docs/s
    reopen: list[float] = field(default_factory=list)  # docs/s rebuilt at open
    reopen_s: list[float] = field(default_factory=list)
    build: list[float] = field(default_factory=list)  # docs/s, index built from the table
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


async def index_build(db: Any, table: str, field: str, filters: list[str], count: int) -> float:
    """Docs/s of building a new full-text index over the stored table (the engine's indexing
    alone: no mutations, no loading), from registration until the index is ready."""
    engine = db._engine
    name = f"bench_build_{time.monotonic_ns()}"
    t0 = time.perf_counter()
    await asyncio.to_thread(engine.register_text_index, table, name, field, filters)
    while not any(i["name"] == name and i["ready"] for i in engine.search_indexes()):
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - t0
    keep = [(i["table"], i["name"]) for i in engine.search_indexes() if i["name"] != name]
    engine.retain_search_indexes(keep)
    return count / elapsed


async def open_db(path: Path, **options: Any) -> Any:
    """``reactive.open`` of the search app (a generous function time limit for big batches)."""
    import reactive

    return await reactive.open(f"sqlite:///{path}", app=APP, function_time_limit_s=60.0, **options)


async def maybe_await(value: Any) -> Any:
    """``value``, awaited if it is awaitable (engine calls may be sync or async)."""
    return await value if inspect.isawaitable(value) else value


async def wait_ready(db: Any, ids: list[str], ready: Probe, notes: list[str], what: str) -> None:
    """Poll ``ready(db, ids)`` until true, or note that it was not within ``READY_S``."""
    deadline = time.perf_counter() + READY_S
    while not await ready(db, ids):
        if time.perf_counter() > deadline:
            notes.append(f"{what}: readiness probe still false after {READY_S:.0f} s")
            return
        await asyncio.sleep(0.01)


def _thread_ticks() -> int:
    """CPU ticks of this process's threads other than the main one (0 without /proc)."""
    total = 0
    main = os.getpid()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for tid in tasks:
        if int(tid) == main:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


async def settle(limit_s: float) -> tuple[float, float, bool]:
    """Wait until the engine's background threads are idle (< 10 % of a core for 0.5 s).

    The engine builds and merges search indexes in threads of its own after the documents are
    searchable; measuring anything beside that work would measure the machine's leftovers.
    Returns ``(seconds waited, CPU seconds those threads used meanwhile, settled)``.
    """
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    start = time.perf_counter()
    first = last = _thread_ticks()
    while True:
        await asyncio.sleep(0.5)
        now = _thread_ticks()
        waited = time.perf_counter() - start
        if now - last < 0.05 * hz:
            return waited, (now - first) / hz, True
        if waited > limit_s:
            return waited, (now - first) / hz, False
        last = now


async def settled(what: str, notes: list[str], limit_s: float = 0.0) -> None:
    """:func:`settle`, noting how long the engine stayed busy when it did."""
    waited, cpu, ok = await settle(limit_s or SETTLE_S)
    if cpu >= 0.5 or not ok:
        notes.append(
            f"{what}: engine threads busy {waited:.0f} s more ({cpu:.0f} CPU-s)"
            + ("" if ok else ", still busy: later figures measured beside that work")
        )
        log(f"  search: {notes[-1]}")


async def reactive_index(
    directory: Path, table: str, count: int, batch: Batch, ready: Probe, notes: list[str]
) -> tuple[Any, float, float, float, list[str]]:
    """Insert ``count`` documents 500 per ``<table>:insert_many`` mutation, close, reopen.

    ``batch(start, stop)`` makes the documents (outside the timed part). Timed: the mutations,
    then polling ``ready(db, ids)`` until it says the last documents are searchable; after the
    reopen, from ``reactive.open`` until ``ready`` again.
    Returns ``(open db, insert docs/s, reopen docs/s, reopen seconds, ids in order)``.
    """
    path = directory / "reactive.db"
    db = await open_db(path)
    try:
        ids: list[str] = []
        elapsed = 0.0
        for start in range(0, count, BATCH):
            docs = batch(start, min(count, start + BATCH))
            t0 = time.perf_counter()
            ids.extend(await db.mutation(f"{table}:insert_many", {"docs": docs}))
            elapsed += time.perf_counter() - t0
        t0 = time.perf_counter()
        await wait_ready(db, ids, ready, notes, f"{table} insert")
        insert = count / (elapsed + time.perf_counter() - t0)
        await settled(f"{table} after insert", notes)
        await db.close()
        db = None
        t0 = time.perf_counter()
        db = await open_db(path)
        await wait_ready(db, ids, ready, notes, f"{table} reopen")
        reopen_s = time.perf_counter() - t0
        await settled(f"{table} after reopen", notes)
    except BaseException:
        if db is not None:
            with contextlib.suppress(Exception):
                await db.close()
        raise
    return db, insert, count / reopen_s, reopen_s, ids


def missing_api() -> str:
    """Why the engine cannot run the search app, or "" when it has the API."""
    try:
        from reactive import define_table
    except ImportError as exc:
        return f"reactive not importable: {exc}"
    table = define_table(None)
    lacking = [m for m in ("search_index", "vector_index") if not hasattr(table, m)]
    return f"TableDefinition has no {' or '.join(lacking)}" if lacking else ""


def unavailable(exc: BaseException) -> str:
    """The note of a reactive side that could not run."""
    error = f"{type(exc).__name__}: {str(exc)[:160]}"
    why = missing_api()
    return f"{NOT_YET}: {why}" if why else f"reactive side failed: {error}"


def engine_call(db: Any, name: str) -> Callable[..., Any] | None:
    """``db.<name>`` if the engine has it (``text_search``, ``vector_search``)."""
    return getattr(db, name, None) if db is not None and hasattr(db, name) else None


def result_ids(result: Any) -> list[str]:
    """Ids of a search result: documents, ``{"_id", "_score"}`` dicts, ``(document, score)``
    or ``(id, score)`` pairs, or ids."""
    out = []
    for item in result or []:
        if isinstance(item, dict):
            out.append(item["_id"])
        elif isinstance(item, tuple | list):
            # (id, score) or (document, score), as Database.text_search returns.
            out.append(item[0]["_id"] if isinstance(item[0], dict) else item[0])
        else:
            out.append(item)
    return out


# -- text -------------------------------------------------------------------------------------


# The engine's prefix matching of a query's last term (rust/core/src/search/text.rs).
PREFIX_EXPANSIONS = 16
PREFIX_BOOST = 0.5
MAX_TERM_BYTES = 32


def vocabulary_of(corpus: list[dict[str, str]]) -> list[str]:
    """Every distinct term the engine indexes for the corpus, in byte order."""
    terms: set[str] = set()
    for d in corpus:
        terms.update(search_corpus.tokenize_text(d["body"]))
    return sorted(t for t in terms if len(t.encode()) < MAX_TERM_BYTES)


def prefix_expansions(vocabulary: list[str], prefix: str) -> list[str]:
    """The first ``PREFIX_EXPANSIONS`` terms starting with ``prefix`` (itself included)."""
    out: list[str] = []
    for term in vocabulary[bisect.bisect_left(vocabulary, prefix) :]:
        if not term.startswith(prefix) or len(out) == PREFIX_EXPANSIONS:
            break
        out.append(term)
    return out


def rare_term(corpus: list[dict[str, str]]) -> tuple[int, str]:
    """A document near the end of the corpus and a term of it that at most 3 documents hold.

    No other term of the corpus starts with it (a search engine may match the last term of a
    query as a prefix), so once that document is indexed, searching the term finds it in the
    top 10: the readiness probe of the indexing figures.
    """
    df: Counter[str] = Counter()
    for d in corpus:
        df.update(set(search_corpus.tokenize_text(d["body"])))
    vocabulary = sorted(df)
    for pos in range(len(corpus) - 1, max(-1, len(corpus) - 5_000), -1):
        terms = {t for t in search_corpus.tokenize_text(corpus[pos]["body"]) if t.isascii()}
        for term in sorted((t for t in terms if 3 <= len(t) <= 40), key=lambda t: (df[t], t)):
            if df[term] > 3:
                break
            after = bisect.bisect_right(vocabulary, term)
            if after == len(vocabulary) or not vocabulary[after].startswith(term):
                return pos, term
    raise RuntimeError("no document near the end of the corpus has a rare term")


TEXT_KEYS = ("tantivy", "tantivy_x", "fts5", "engine", "fn", "fn_ids")
TEXT_LABELS = {"engine": "text_search", "fn": "docs:search", "fn_ids": "docs:search_ids"}


@dataclass
class Text:
    """The text side after indexing: the corpus in reactive, tantivy and FTS5, warmed up."""

    corpus: list[dict[str, str]]
    real: int
    qs: list[str]
    xqs: list[Any] = field(default_factory=list)  # tantivy queries with the engine's expansions
    tan: Tantivy | None = None
    fts: Fts5 | None = None
    db: Any = None
    engine: Any = None
    ids: list[str] = field(default_factory=list)
    side: Side = field(default_factory=Side)
    tan_rate: list[float] = field(default_factory=list)
    tan_merge: list[float] = field(default_factory=list)
    fts_rate: list[float] = field(default_factory=list)
    # The reactive searches that work: key -> coroutine function of the text -> results.
    reactive: dict[str, Callable[[str], Awaitable[list[Any]]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    agree: dict[str, float | None] = field(default_factory=dict)
    agree_x: dict[str, float | None] = field(default_factory=dict)
    empties: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TEXT_KEYS, 0))

    def anchors(self) -> dict[str, tuple[list[Any], Callable[[Any], int]]]:
        """The anchors' searches: key -> (the items to cycle over, search -> hits)."""
        assert self.tan is not None and self.fts is not None
        return {
            "tantivy": (self.qs, self.tan.search),
            "tantivy_x": (self.xqs, self.tan.search_query),
            "fts5": (self.qs, self.fts.search),
        }

    async def close(self) -> None:
        """Close the database and the FTS5 connection."""
        if self.db is not None:
            await self.db.close()
            self.db = None
        if self.fts is not None:
            self.fts.close()
            self.fts = None


async def text_setup(plan: Plan, root: Path) -> Text:
    """Index the corpus (timed: the indexing figures), then warm up and check agreement."""
    corpus = search_corpus.build_corpus(plan.docs)
    real = search_corpus.real_count()
    t = Text(corpus, real, search_corpus.queries(corpus, plan.text_queries, seed=1))
    qs = t.qs
    # The readiness probe of the reactive indexing figures (a pass over the corpus: only when
    # the engine can run the app).
    probe_pos, probe_term = rare_term(corpus) if not missing_api() else (len(corpus) - 1, "")
    log(
        f"  search: corpus of {len(corpus):,} documents ({min(real, len(corpus)):,} from the "
        f"standard library), {len(qs):,} queries"
    )

    async def ready(db: Any, ids: list[str]) -> bool:
        found = await db.query("docs:search", {"text": probe_term, "n": K})
        return ids[probe_pos] in result_ids(found)

    side = t.side
    try:
        for rep in range(max(plan.index_reps, plan.reactive_index_reps)):
            if rep < plan.index_reps:
                if t.tan is not None:
                    shutil.rmtree(root / f"tantivy-{rep - 1}", ignore_errors=True)
                t.tan = Tantivy(root / f"tantivy-{rep}")
                r, merge = t.tan.load(corpus)
                t.tan_rate.append(r)
                t.tan_merge.append(merge)
                if t.fts is not None:
                    t.fts.close()
                    (root / f"fts5-{rep - 1}.db").unlink(missing_ok=True)
                t.fts = Fts5(root / f"fts5-{rep}.db")
                t.fts_rate.append(t.fts.load(corpus))
                log(
                    f"  search index rep {rep + 1}: tantivy {t.tan_rate[-1]:,.0f} docs/s "
                    f"(+{merge:.1f} s merging), FTS5 {t.fts_rate[-1]:,.0f} docs/s"
                )
            if rep < plan.reactive_index_reps and not side.skipped:
                if t.db is not None:
                    await t.db.close()
                    t.db = None
                    shutil.rmtree(root / f"reactive-text-{rep - 1}", ignore_errors=True)
                d = root / f"reactive-text-{rep}"
                d.mkdir()
                try:
                    t.db, ins, reo, reo_s, t.ids = await reactive_index(
                        d, "docs", len(corpus), lambda a, b: corpus[a:b], ready, side.notes
                    )
                except Exception as exc:
                    side.skipped = unavailable(exc)
                    log(f"  search: reactive text side skipped: {side.skipped}")
                    continue
                side.insert.append(ins)
                side.reopen.append(reo)
                side.reopen_s.append(reo_s)
                if hasattr(t.db._engine, "register_text_index"):
                    side.build.append(
                        await index_build(t.db, "docs", "body", ["channel"], len(corpus))
                    )
                    await settled("docs after the index build", side.notes)
                log(
                    f"  search index rep {rep + 1}: reactive insert {ins:,.0f} docs/s, "
                    f"reopen {reo_s:.1f} s ({reo:,.0f} docs/s), "
                    f"build {side.build[-1] if side.build else 0:,.0f} docs/s"
                )

        tan, fts, db = t.tan, t.fts, t.db
        assert tan is not None and fts is not None
        engine = t.engine = engine_call(db, "text_search")
        position = {doc_id: n for n, doc_id in enumerate(t.ids)}

        async def engine_top(text: str) -> list[Any]:
            assert engine is not None
            return list(await maybe_await(engine("docs", "search_body", text, limit=K)))

        async def fn_top(text: str) -> list[Any]:
            return list(await db.query("docs:search", {"text": text, "n": K}))

        async def fn_ids_top(text: str) -> list[Any]:
            return list(await db.query("docs:search_ids", {"text": text, "n": K}))

        reactive = t.reactive
        if engine is not None:
            reactive["engine"] = engine_top
        if db is not None:
            reactive.update(fn=fn_top, fn_ids=fn_ids_top)

        # Warm-up, and agreement of the top 10s with tantivy's on the first 200 queries. A
        # reactive side that raises is dropped (its rows say why); the anchors go on.
        sample = qs[:200]
        tan_top = [tan.top(q) for q in sample]
        # The same work for tantivy-py: the queries with the engine's prefix expansions.
        vocabulary = vocabulary_of(corpus)
        t.xqs = [tan.expanded_query(q, vocabulary) for q in qs]
        tan_x_top = [tan.top_query(q) for q in t.xqs[: len(sample)]]
        t.agree = {"FTS5": overlap([fts.top(q) for q in sample], tan_top)}
        for key, search in list(reactive.items()):
            try:
                got = [[position.get(i, -1) for i in result_ids(await search(q))] for q in sample]
            except Exception as exc:
                t.failed[key] = f"{TEXT_LABELS[key]} failed: {type(exc).__name__}: {str(exc)[:160]}"
                log(f"  search: {t.failed[key]}")
                del reactive[key]
                continue
            t.agree[TEXT_LABELS[key]] = overlap(got, tan_top)
            t.agree_x[TEXT_LABELS[key]] = overlap(got, tan_x_top)
    except BaseException:
        await t.close()
        raise
    return t


async def text_measure(t: Text, plan: Plan) -> dict[str, list[float]]:
    """Queries/s of every side, ``plan.query_reps`` times, the sides alternating."""
    assert t.tan is not None and t.fts is not None
    runs: dict[str, list[float]] = {k: [] for k in TEXT_KEYS}
    reactive, empties, qs = t.reactive, t.empties, t.qs

    async def count(search: Callable[[str], Awaitable[list[Any]]], text: str) -> int:
        return len(await search(text))

    s = plan.query_seconds
    for rep in range(plan.query_reps):
        for key, fn in (("tantivy", t.tan.search), ("fts5", t.fts.search)):
            got, empty = rate(s, qs, fn)
            runs[key].append(got)
            empties[key] += empty
        got, empty = rate(s, t.xqs, t.tan.search_query)
        runs["tantivy_x"].append(got)
        empties["tantivy_x"] += empty
        for key, search in list(reactive.items()):
            try:
                got, empty = await arate(
                    s if key != "fn_ids" else s / 2, qs, partial(count, search)
                )
            except Exception as exc:
                t.failed[key] = f"{TEXT_LABELS[key]} failed: {type(exc).__name__}: {str(exc)[:160]}"
                del reactive[key]
                runs[key].clear()
                continue
            runs[key].append(got)
            empties[key] += empty
        log(
            f"  search query rep {rep + 1}/{plan.query_reps}: "
            + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in runs.items() if v)
        )
    return runs


async def text_rows(plan: Plan, root: Path) -> list[Row]:
    t = await text_setup(plan, root)
    try:
        runs = await text_measure(t, plan)
    finally:
        await t.close()
    return text_table(t, runs)


def text_table(t: Text, runs: dict[str, list[float]]) -> list[Row]:
    """The text rows: indexing (measured by :func:`text_setup`) and queries/s (``runs``)."""
    corpus, real, side, failed, engine = t.corpus, t.real, t.side, t.failed, t.engine
    tan_rate, tan_merge, fts_rate = t.tan_rate, t.tan_merge, t.fts_rate
    agree, agree_x, empties = t.agree, t.agree_x, t.empties
    size = f"{len(corpus) // 1000}k docs"
    tan_name = "tantivy-py, 2 threads, commit"
    agree_note = "top-10 agreement with tantivy on 200 queries: " + ", ".join(
        f"{k} {v:.2f}" for k, v in agree.items() if v is not None
    )
    empty_note = "queries with no hit: " + ", ".join(
        f"{k} {v}" for k, v in empties.items() if runs[k]
    )
    common_notes = (
        f"corpus: {min(real, len(corpus)):,} stdlib docstrings/comment blocks + "
        f"{max(0, len(corpus) - real):,} generated; tantivy +{median(tan_merge) or 0:.1f} s "
        "merging after commit (not counted)"
    )
    text_skip = side.skipped or ""
    if side.notes:
        common_notes += "; " + "; ".join(side.notes)
    engine_note = text_skip or failed.get("engine", "")
    if engine is None and not engine_note:
        engine_note = f"{NOT_YET}: Database has no text_search"
    rows = [
        Row.from_samples(
            BENCH,
            f"text indexing, insert 500/mutation, {size} (docs/s)",
            "docs/s",
            side.insert,
            tan_rate,
            anchor_name=tan_name,
            target="context",
            notes=text_skip or common_notes,
        ),
        Row.from_samples(
            BENCH,
            f"text index built from the stored table, {size} (docs/s)",
            "docs/s",
            side.build,
            tan_rate,
            anchor_name=tan_name,
            target=">= 0.5 (aim 1)",
            notes=text_skip
            or "Engine.register_text_index over the table, until ready (tokenize, index, merge)",
        ),
        Row.from_samples(
            BENCH,
            f"text index rebuilt at open, {size} (docs/s)",
            "docs/s",
            side.reopen,
            tan_rate,
            anchor_name=tan_name,
            target="context",
            notes=text_skip
            or f"reopen {median(side.reopen_s) or 0:.1f} s, loading the documents included",
        ),
        Row.from_samples(
            BENCH,
            f"text indexing, insert 500/mutation vs FTS5, {size} (docs/s)",
            "docs/s",
            side.insert,
            fts_rate,
            anchor_name="sqlite3 FTS5, one transaction",
            target="context",
            notes=text_skip,
        ),
        Row.from_samples(
            BENCH,
            f"2-term OR top-10, db.text_search vs tantivy, same query, {size} (queries/s)",
            "queries/s",
            runs["engine"],
            runs["tantivy_x"],
            anchor_name="tantivy-py BooleanQuery: the 2 terms + the last one's expansions x0.5",
            target=">= 1",
            notes=engine_note
            or (
                "both search the 2 terms and the first 16 terms the last one prefixes (boost "
                "0.5); the engine returns documents, tantivy-py ids; top-10 agreement on 200 "
                "queries: " + ", ".join(f"{k} {v:.2f}" for k, v in agree_x.items() if v is not None)
            ),
        ),
        Row.from_samples(
            BENCH,
            f"2-term OR top-10, db.text_search vs tantivy, 2 terms only, {size} (queries/s)",
            "queries/s",
            runs["engine"],
            runs["tantivy"],
            anchor_name="tantivy-py BooleanQuery, count=False",
            target="context",
            notes=engine_note
            or f"tantivy-py without prefix matching (less work); {agree_note}; {empty_note}",
        ),
        Row.from_samples(
            BENCH,
            f"2-term OR top-10, db.text_search vs FTS5, {size} (queries/s)",
            "queries/s",
            runs["engine"],
            runs["fts5"],
            anchor_name="sqlite3 FTS5 MATCH ORDER BY rank",
            target="context",
            notes=engine_note or empty_note,
        ),
        Row.from_samples(
            BENCH,
            f"2-term OR top-10, query docs:search vs tantivy, {size} (queries/s)",
            "queries/s",
            runs["fn"],
            runs["tantivy"],
            anchor_name="tantivy-py BooleanQuery, count=False",
            target="context",
            notes=text_skip or failed.get("fn", "10 documents returned to the db.query caller"),
        ),
        Row.from_samples(
            BENCH,
            f"2-term OR top-10, query docs:search_ids vs tantivy, {size} (queries/s)",
            "queries/s",
            runs["fn_ids"],
            runs["tantivy"],
            anchor_name="tantivy-py BooleanQuery, count=False",
            target="context",
            notes=text_skip or failed.get("fn_ids", "ids only, as the anchor"),
        ),
    ]
    if text_skip:
        rows[3].notes = f"{text_skip}; anchors: {agree_note}; {empty_note}"
    return rows


# -- vectors ----------------------------------------------------------------------------------


def exact_limit_knob() -> int | None:
    """The default of ``reactive.open``'s ``vector_exact_limit``, or None without that knob.

    Past that many candidate vectors the engine answers from its approximate (HNSW) index;
    up to it, it scores every candidate exactly.
    """
    try:
        import reactive
    except ImportError:
        return None
    param = inspect.signature(reactive.open).parameters.get("vector_exact_limit")
    if param is None or not isinstance(param.default, int):
        return None
    return param.default


def vector_modes(n: int) -> list[tuple[str, dict[str, Any]]]:
    """(mode, extra ``reactive.open`` options) to measure, the default first.

    With the ``vector_exact_limit`` knob: ``exact`` (every candidate scored) and
    ``approximate`` (the HNSW index), whichever the default gives for ``n`` vectors first,
    the other by reopening with the knob set. Without it: the default only.
    """
    knob = exact_limit_knob()
    if knob is None:
        return [("default", {})]
    if n <= knob:
        return [("exact", {}), ("approximate", {"vector_exact_limit": 1})]
    return [("approximate", {}), ("exact", {"vector_exact_limit": n})]


VectorCall = Callable[[list[float]], Awaitable[Any]]


@dataclass
class Vectors:
    """The vector side: the vectors in numpy and in reactive, the query vectors and the truth."""

    plan: Plan
    matrix: Any
    qs: Any
    truth: list[list[int]]
    qlists: list[list[float]]
    probe: list[float]
    modes: list[tuple[str, dict[str, Any]]]
    path_db: Path
    side: Side = field(default_factory=Side)
    db: Any = None
    ids: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # (mode/path) -> why no figures
    # figures[(mode, path)] = {"ms": per-rep medians, "qps": per-rep, "recall": per-rep}
    figures: dict[tuple[str, str], dict[str, list[float]]] = field(default_factory=dict)
    np_ms: list[float] = field(default_factory=list)
    np_qps: list[float] = field(default_factory=list)
    has_engine: bool = False

    async def ready(self, db: Any, ids: list[str]) -> bool:
        """The last vector inserted is its own nearest neighbour."""
        found = await db.query("vecs:search", {"vector": self.probe, "n": K})
        return ids[-1] in result_ids(found)

    async def close(self) -> None:
        """Close the database."""
        if self.db is not None:
            await self.db.close()
            self.db = None

    def table(self) -> list[Row]:
        """The vector rows."""
        return vector_table(
            self.plan,
            self.side,
            self.modes,
            self.figures,
            self.failed,
            self.np_ms,
            self.np_qps,
            self.has_engine,
        )


async def vector_setup(plan: Plan, root: Path) -> Vectors:
    """The vectors and queries; reactive's insert and reopen (timed: the insert figures)."""
    t0 = time.perf_counter()
    matrix = search_corpus.vectors(plan.vectors, DIM, seed=0)
    qs = search_corpus.vector_queries(plan.vector_queries, DIM, seed=0)
    truth = ground_truth(matrix, qs)
    log(
        f"  search: {plan.vectors:,} x {DIM} vectors and {len(qs)} queries in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    channels = search_corpus.CHANNELS

    def batch(start: int, stop: int) -> list[dict[str, Any]]:
        return [
            {"embedding": row, "channel": channels[i % len(channels)]}
            for i, row in enumerate(matrix[start:stop].tolist(), start)
        ]

    v = Vectors(
        plan,
        matrix,
        qs,
        truth,
        [q.tolist() for q in qs],
        matrix[-1].tolist(),
        vector_modes(plan.vectors) if not missing_api() else [("default", {})],
        root / "reactive-vecs",
    )
    side = v.side
    try:
        v.path_db.mkdir()
        v.db, ins, reo, reo_s, v.ids = await reactive_index(
            v.path_db, "vecs", plan.vectors, batch, v.ready, side.notes
        )
    except Exception as exc:
        side.skipped = unavailable(exc)
        log(f"  search: reactive vector side skipped: {side.skipped}")
    else:
        side.insert.append(ins)
        side.reopen.append(reo)
        side.reopen_s.append(reo_s)
        log(f"  search vectors: reactive insert {ins:,.0f}/s, reopen {reo_s:.1f} s")
    v.position = {doc_id: n for n, doc_id in enumerate(v.ids)}
    numpy_latencies(matrix, qs[: min(10, len(qs))])  # warm-up
    return v


async def vector_mode(
    v: Vectors, mode: str, options: dict[str, Any], reopen: bool
) -> dict[str, VectorCall] | None:
    """The reactive searches of ``mode`` (reopening with ``options`` if ``reopen``), warmed
    up; a path that fails is left out (``v.failed`` says why). None if the reopen failed."""
    if reopen:
        await v.close()
        t0 = time.perf_counter()
        try:
            v.db = await open_db(v.path_db / "reactive.db", **options)
            await wait_ready(v.db, v.ids, v.ready, v.side.notes, f"vecs reopen ({mode})")
            reopened = time.perf_counter() - t0
            await settled(f"vecs after reopen ({mode})", v.side.notes)
        except Exception as exc:
            v.failed[mode] = f"reopen with {options} failed: {type(exc).__name__}: {exc}"
            log(f"  search: {v.failed[mode]}")
            return None
        v.side.notes.append(f"reopen with {options}: {reopened:.1f} s")
    db = v.db
    engine = engine_call(db, "vector_search")
    v.has_engine = v.has_engine or engine is not None

    async def engine_path(q: list[float]) -> Any:
        assert engine is not None
        return await maybe_await(engine("vecs", "by_embedding", q, limit=K))

    async def fn_path(q: list[float]) -> Any:
        return await db.query("vecs:search", {"vector": q, "n": K})

    paths: dict[str, VectorCall] = {"fn": fn_path}
    if engine is not None:
        paths["engine"] = engine_path
    for name, call in list(paths.items()):
        v.figures[(mode, name)] = {"ms": [], "qps": [], "recall": []}
        try:
            for q in v.qlists[:10]:  # warm-up
                await call(q)
        except Exception as exc:
            v.failed[f"{mode}/{name}"] = f"{type(exc).__name__}: {str(exc)[:160]}"
            log(f"  search: {mode} {name} failed: {v.failed[f'{mode}/{name}']}")
            del paths[name]
    return paths


async def vector_pass(v: Vectors, call: VectorCall) -> tuple[list[float], list[list[int]], float]:
    """Every query once: (ms per query, corpus positions of the top 10s, queries/s)."""
    lat, tops = [], []
    start = time.perf_counter()
    for q in v.qlists:
        t = time.perf_counter()
        got = await call(q)
        lat.append((time.perf_counter() - t) * 1e3)
        tops.append([v.position.get(i, -1) for i in result_ids(got)])
    return lat, tops, len(v.qlists) / (time.perf_counter() - start)


async def vector_measure(v: Vectors, mode: str, paths: dict[str, VectorCall]) -> None:
    """``plan.vector_reps`` repetitions of numpy, then every path, over every query."""
    beside = 0
    for rep in range(v.plan.vector_reps):
        ticks = _thread_ticks()
        t = time.perf_counter()
        lat = numpy_latencies(v.matrix, v.qs)
        v.np_qps.append(len(v.qs) / (time.perf_counter() - t))
        v.np_ms.append(median(lat) or 0.0)
        beside += _thread_ticks() - ticks
        for name, call in list(paths.items()):
            try:
                lat, tops, qps = await vector_pass(v, call)
            except Exception as exc:
                v.failed[f"{mode}/{name}"] = f"{type(exc).__name__}: {str(exc)[:160]}"
                del paths[name]
                continue
            fig = v.figures[(mode, name)]
            fig["ms"].append(median(lat) or 0.0)
            fig["qps"].append(qps)
            fig["recall"].append(overlap(tops, v.truth) or 0.0)
        log(
            f"  search vector {mode} rep {rep + 1}/{v.plan.vector_reps}: numpy "
            f"{v.np_ms[-1]:.2f} ms"
            + "".join(
                f", {name} {f['ms'][-1]:.2f} ms (recall {f['recall'][-1]:.3f})"
                for (mo, name), f in v.figures.items()
                if mo == mode and f["ms"]
            )
        )
    cpu = beside / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
    if cpu >= 0.5:
        v.side.notes.append(f"{mode}: engine threads used {cpu:.1f} CPU-s while numpy was timed")


async def vector_rows(plan: Plan, root: Path) -> list[Row]:
    v = await vector_setup(plan, root)
    try:
        for m, (mode, options) in enumerate(v.modes):
            if v.side.skipped:
                break
            paths = await vector_mode(v, mode, options, reopen=m > 0)
            if paths is None:
                break
            await vector_measure(v, mode, paths)
        if not v.figures or v.side.skipped:  # the anchor alone
            for _ in range(plan.vector_reps):
                t = time.perf_counter()
                lat = numpy_latencies(v.matrix, v.qs)
                v.np_qps.append(len(v.qs) / (time.perf_counter() - t))
                v.np_ms.append(median(lat) or 0.0)
                log(f"  search vector: numpy {v.np_ms[-1]:.2f} ms")
    finally:
        await v.close()
    return v.table()


def vector_table(
    plan: Plan,
    side: Side,
    modes: list[tuple[str, dict[str, Any]]],
    figures: dict[tuple[str, str], dict[str, list[float]]],
    failed: dict[str, str],
    np_ms: list[float],
    np_qps: list[float],
    has_engine: bool,
) -> list[Row]:
    """The vector rows: insert; per mode, latency (exact), queries/s and recall (approximate)."""
    size = f"{plan.vectors // 1000}k x {DIM}"
    np_name = "numpy M @ q + argpartition (exact)"
    blas = f"numpy BLAS threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    skip = side.skipped
    out = [
        Row.from_samples(
            BENCH,
            f"vector insert 500/mutation, {size} (vectors/s)",
            "vectors/s",
            side.insert,
            [],
            target="context",
            notes=skip
            or f"reopen {median(side.reopen_s) or 0:.1f} s ({median(side.reopen) or 0:,.0f} "
            "vectors/s rebuilt at open, loading the documents included)"
            + "".join(f"; {n}" for n in side.notes),
        )
    ]
    labels = {"fn": "query vecs:search", "engine": "db.vector_search"}
    knob = {
        "exact": "every candidate scored",
        "approximate": "HNSW",
        "default": "reactive.open has no vector_exact_limit",
    }
    for mode, options in modes:
        for name, label in labels.items():
            fig = figures.get((mode, name), {"ms": [], "qps": [], "recall": []})
            recall = median(fig["recall"])
            if skip:
                note = skip
            elif name == "engine" and not has_engine:
                note = f"{NOT_YET}: Database has no vector_search"
            elif f"{mode}/{name}" in failed or mode in failed:
                note = failed.get(f"{mode}/{name}") or failed[mode]
            elif recall is None:
                note = "no figures"
            else:
                note = f"recall@10 {recall:.3f}; {knob[mode]}" + (
                    f" ({', '.join(f'{k}={v:,}' for k, v in options.items())})" if options else ""
                )
            what = f"{label}, {mode}" if mode != "default" else label
            if mode in ("exact", "default"):
                out.append(
                    Row.from_samples(
                        BENCH,
                        f"vector top-10 latency, {what} vs numpy, {size} (ms)",
                        "ms",
                        fig["ms"],
                        np_ms,
                        anchor_name=np_name,
                        higher_is_better=False,
                        target=">= 0.83 (time <= 1.2x numpy's)"
                        if label.startswith("db.")
                        else "context",
                        notes=f"{note}; {blas}",
                    )
                )
            if mode in ("approximate", "default"):
                out.append(
                    Row.from_samples(
                        BENCH,
                        f"vector top-10, {what} vs numpy exact, {size} (queries/s)",
                        "queries/s",
                        fig["qps"],
                        np_qps,
                        anchor_name=np_name,
                        target="aim >= 10" if label.startswith("db.") else "context",
                        notes=note,
                    )
                )
                out.append(
                    Row(
                        BENCH,
                        f"vector recall@10, {what}, {size}",
                        "",
                        recall,
                        1.0 if recall is not None else None,
                        anchor_name="numpy exact top 10",
                        target=">= 0.95",
                        reactive_samples=fig["recall"],
                        notes=note,
                    )
                )
    return out


async def _run(quick: bool) -> list[Row]:
    plan = QUICK if quick else FULL
    with scratch_dir("search") as root:
        rows = await text_rows(plan, root)
        rows.extend(await vector_rows(plan, root))
    return rows


def missing_modules() -> list[str]:
    """The anchors' modules that are not installed (``run`` then returns a skipped row)."""
    return [m for m in ("tantivy", "numpy") if importlib.util.find_spec(m) is None]


def run(quick: bool = False) -> list[Row]:
    """Measure, alternating reactive and the anchors."""
    missing = missing_modules()
    if missing:
        return [
            Row(
                BENCH,
                "search (skipped)",
                "",
                None,
                notes=f"needs {' and '.join(missing)}: .venv/bin/pip install tantivy numpy "
                "(the bench extra)",
            )
        ]
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    standalone(run)
