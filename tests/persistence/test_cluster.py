"""Several ``python -m reactive.server --cluster-key K`` processes on one database.

* Three processes on one PostgreSQL (and MariaDB) database: exactly one leads
  (``/health/ready`` says ``role``); mutations sent to any of them commit (the followers
  run them and send their transactions to the leader), and the process that answered
  shows the write to its next read (read your writes); every process ends with the same
  data.
* A mutation runs on the process that received it (it returns its process id), and
  read-modify-write mutations racing through all three processes serialize: every
  increment is counted once.
* A subscription on a follower (over the sync protocol, ``reactive.client``) sees the
  commits made through another follower, in order.
* Reads anywhere are linearizable: a query or a new subscription on one process, asked
  the moment a mutation through another process returns, sees it (the read barrier).
* The leader SIGKILLed: another process takes the lease and leads within a bound;
  mutations through the survivors commit again; nothing acknowledged is lost.
* The leader cut off from the database (a TCP proxy between them closes its connections
  and refuses new ones): a follower leads within 5 s, the old leader exits with status 75
  once it finds its lease gone, nothing acknowledged is lost.
* A mutation a follower ran and whose transaction the leader committed, the answer kept
  from the follower (a proxy holds it) until the leader died: the follower, promoted,
  finds the commit's record and answers from it instead of committing it again (exactly
  once).
* Behind nginx, configured as docs/cluster.md ("Behind a load balancer") shows: requests
  and WebSockets spread over the three processes, subscriptions through it see mutations
  made through it.
* A request to ``/_cluster/call`` or ``/_cluster/commit`` without the cluster key's HMAC
  is refused (403), a signed but malformed transaction too (400) and the leader serves
  on, and a process started with another key cannot forward (its mutations fail, nothing
  written).

Source: python/reactive/cluster/, docs/design/scale-out.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from cluster_nodes import Node, TcpProxy, free_port, via_proxy
from reactive.client import Client
from reactive.cluster.protocol import sign_request

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-cluster-key-0123456789abcdef"

SCHEMA = """
from reactive import define_schema, define_table, v

schema = define_schema({
    "items": define_table({"n": v.float64(), "by": v.string()}).index("by_n", ["n"]),
    "counters": define_table({"n": v.float64()}),
})
"""

APP = """
import os

from reactive import mutation, query


@mutation
async def add(ctx, n, by):
    return await ctx.db.insert("items", {"n": n, "by": by})


@mutation
async def fail(ctx, n):
    await ctx.db.insert("items", {"n": n, "by": "never"})
    raise ValueError("no such thing")


@query
async def ns(ctx):
    return [d["n"] for d in await ctx.db.query("items").with_index("by_n").collect()]


@mutation
async def where(ctx):
    await ctx.db.insert("counters", {"n": -1})
    return os.getpid()


@mutation
async def make(ctx):
    return await ctx.db.insert("counters", {"n": 0})


@mutation
async def bump(ctx, id):
    doc = await ctx.db.get(id)
    await ctx.db.patch(id, {"n": doc["n"] + 1})
    return doc["n"] + 1


@query
async def counter(ctx, id):
    return (await ctx.db.get(id))["n"]
"""


@pytest.fixture
def cluster(
    server_url: str, tmp_path: Path, make_app: Callable[[dict[str, str]], Path]
) -> Iterator[Callable[..., Node]]:
    app = make_app({"schema.py": SCHEMA, "items.py": APP})
    started: list[Node] = []

    def start(key: str = KEY, db_url: str | None = None, extra: tuple[str, ...] = ()) -> Node:
        node = Node.create(len(started), app, db_url or server_url, key, tmp_path)
        node.argv += list(extra)
        started.append(node)
        node.start()
        return node

    yield start
    for node in started:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
            try:
                node.process.wait(20)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(5)


def _mutation(url: str, path: str, **args: object) -> httpx.Response:
    return httpx.post(f"{url}/api/mutation", json={"path": path, "args": args}, timeout=60.0)


def _query(url: str, path: str) -> object:
    response = httpx.post(f"{url}/api/query", json={"path": path, "args": {}}, timeout=30.0)
    body = response.json()
    assert body["status"] == "success", body
    return body["value"]


def _roles(nodes: list[Node]) -> list[object]:
    return [n.ready().get("role") for n in nodes]


def test_three_processes_serve_one_database(cluster: Callable[..., Node]) -> None:
    nodes = [cluster() for _ in range(3)]
    assert sorted(str(r) for r in _roles(nodes)) == ["follower", "follower", "leader"]
    for i in range(30):
        node = nodes[i % 3]
        response = _mutation(node.url, "items:add", n=i, by=node.url)
        assert response.json()["status"] == "success", response.text
        # Read your writes: the process that answered shows it at once.
        assert i in _query(node.url, "items:ns")  # type: ignore[operator]
    for node in nodes:
        assert _query(node.url, "items:ns") == list(range(30))
    # An error raised by the app on the leader reaches the follower's caller as it would
    # from the leader, and writes nothing.
    follower = next(n for n in nodes if n.ready().get("role") == "follower")
    failed = _mutation(follower.url, "items:fail", n=99).json()
    assert failed["status"] == "error" and "Server Error" in failed["errorMessage"]
    assert 99 not in _query(follower.url, "items:ns")  # type: ignore[operator]
    metrics = httpx.get(f"{follower.url}/metrics").text
    assert "reactive_cluster_leader 0.0" in metrics
    assert "reactive_cluster_forwarded" in metrics
    assert "reactive_cluster_lag_seconds" in metrics


async def test_subscription_on_a_follower(cluster: Callable[..., Node]) -> None:
    nodes = [cluster() for _ in range(3)]
    followers = [n for n in nodes if n.ready().get("role") == "follower"]
    watcher, writer = followers
    async with Client(watcher.url) as client:
        sub = client.subscribe("items:ns")
        assert await sub.get(timeout_s=10) == []
        expected: list[int] = []
        for n in range(10):
            response = await asyncio.to_thread(_mutation, writer.url, "items:add", n=n, by="w")
            assert response.json()["status"] == "success"
            expected.append(n)
            deadline = time.monotonic() + 10
            while (value := await sub.get(timeout_s=10)) != expected:
                assert time.monotonic() < deadline, value
        # A mutation over the socket of the follower itself commits too.
        assert await client.mutation("items:add", n=100, by="ws") is not None
        assert 100 in await client.query("items:ns")


async def test_reads_anywhere_see_what_was_acknowledged(cluster: Callable[..., Node]) -> None:
    """A commit acknowledged through one process is in every later read on any other:
    an HTTP query and a new subscription's first result (the read barrier), asked the
    moment the mutation returns, on a follower that did not run it."""
    nodes = [cluster() for _ in range(3)]
    followers = [n for n in nodes if n.ready().get("role") == "follower"]
    leader = next(n for n in nodes if n.ready().get("role") == "leader")
    async with (
        Client(followers[0].url) as first,
        Client(followers[1].url) as second,
        Client(leader.url) as on_leader,
    ):
        writers = [first, second, on_leader]
        for n in range(30):
            writer = writers[n % 3]
            reader = writers[(n + 1) % 3]
            await writer.mutation("items:add", n=n, by="rw")
            # Over the sync protocol: a one-shot subscription on another process.
            assert n in await reader.query("items:ns")
            # Over HTTP on the third process.
            other = nodes[(n + 2) % 3]
            assert n in await asyncio.to_thread(_query, other.url, "items:ns")  # type: ignore[operator]


def test_failover_after_the_leader_is_killed(cluster: Callable[..., Node]) -> None:
    nodes = [cluster() for _ in range(3)]
    acknowledged: list[int] = []
    n = 0
    for _round in range(2):
        leader = next(x for x in nodes if x.ready().get("role") == "leader")
        survivors = [x for x in nodes if x is not leader]
        for _ in range(10):
            target = survivors[n % 2]
            if _mutation(target.url, "items:add", n=n, by="pre").json()["status"] == "success":
                acknowledged.append(n)
            n += 1
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait(10)
        killed = time.monotonic()
        # A survivor leads within the bound, and takes mutations again.
        while "leader" not in _roles(survivors):
            assert time.monotonic() - killed < 15, [s.log() for s in survivors]
            time.sleep(0.05)
        took_over = time.monotonic() - killed
        print(f"failover took {took_over:.2f} s")
        for _ in range(10):
            target = survivors[n % 2]
            body = _mutation(target.url, "items:add", n=n, by="post").json()
            assert body["status"] == "success", body
            acknowledged.append(n)
            n += 1
        for s in survivors:
            values = _query(s.url, "items:ns")
            assert set(acknowledged) <= set(values), (acknowledged, values)  # type: ignore[arg-type]
            assert len(values) == len(set(values))  # type: ignore[arg-type]
        # The killed process comes back (as a follower) for the next round.
        nodes = [*survivors, cluster()]


def test_mutations_run_where_they_arrive_and_serialize(cluster: Callable[..., Node]) -> None:
    """Each process runs the mutations it receives (the leader only validates and commits
    the followers' transactions); read-modify-write mutations racing on one document
    through all three processes each see the one before (serializable across processes)."""
    nodes = [cluster() for _ in range(3)]
    for node in nodes:
        body = _mutation(node.url, "items:where").json()
        assert body["status"] == "success", body
        assert body["value"] == node.process.pid
    leader = next(x for x in nodes if x.ready().get("role") == "leader")
    counter = _mutation(leader.url, "items:make").json()["value"]
    per_process = 15

    def bumps(node: Node) -> list[float]:
        out = []
        with httpx.Client(timeout=60.0) as http:
            for _ in range(per_process):
                response = http.post(
                    f"{node.url}/api/mutation",
                    json={"path": "items:bump", "args": {"id": counter}},
                )
                body = response.json()
                assert body["status"] == "success", body
                out.append(body["value"])
        return out

    results: list[float] = []
    threads = [
        threading.Thread(target=lambda n=n: results.extend(bumps(n)))  # type: ignore[misc]
        for n in nodes
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    total = per_process * len(threads)
    assert sorted(results) == list(range(1, total + 1))
    for node in nodes:
        response = httpx.post(
            f"{node.url}/api/query",
            json={"path": "items:counter", "args": {"id": counter}},
            timeout=30.0,
        )
        assert response.json()["value"] == total
    for node in nodes:
        if node is not leader:
            metrics = httpx.get(f"{node.url}/metrics").text
            forwarded = re.search(r"^reactive_cluster_forwarded(?:_total)? (\S+)$", metrics, re.M)
            assert forwarded is not None and float(forwarded.group(1)) >= per_process * 2


def test_cluster_calls_need_the_key(cluster: Callable[..., Node]) -> None:
    nodes = [cluster() for _ in range(2)]
    leader = next(x for x in nodes if x.ready().get("role") == "leader")
    body = json.dumps({"path": "items:add", "args": "{}", "identity": None, "request": ["s", 1]})
    for header in (None, "v1 0 nonce-nonce 00", f"v1 {int(time.time())} nonce-nonce {'0' * 64}"):
        headers = {"Reactive-Cluster": header} if header else {}
        response = httpx.post(f"{leader.url}/_cluster/call", content=body, headers=headers)
        assert response.status_code == 403
        response = httpx.post(f"{leader.url}/_cluster/commit", content=b"\0RFT1", headers=headers)
        assert response.status_code == 403
    # Signed with the key but malformed: refused (400), the leader serves on.
    for junk in (b"", b"\x02RFT1", b"\x00RFT1" + bytes(8), b"\x00" + b"junk" * 100):
        header, _ = sign_request(KEY.encode(), "POST", "/_cluster/commit", junk)
        response = httpx.post(
            f"{leader.url}/_cluster/commit", content=junk, headers={"Reactive-Cluster": header}
        )
        assert response.status_code == 400, (junk, response.text)
    assert _mutation(leader.url, "items:add", n=5, by="leader").json()["status"] == "success"
    # A process with another key follows, but its mutations are refused by the leader.
    stranger = cluster("another-key-0123456789abcdef0123")
    assert stranger.ready().get("role") == "follower"
    refused = _mutation(stranger.url, "items:add", n=7, by="stranger").json()
    assert refused["status"] == "error" and "cluster key" in refused["errorMessage"]
    assert 7 not in _query(leader.url, "items:ns")  # type: ignore[operator]


def _nginx_config(tmp: Path, ports: list[int], listen: int) -> Path:
    """The guide's nginx block, ports swapped for the test's, in a runnable nginx.conf."""
    page = (ROOT / "docs" / "cluster.md").read_text()
    match = re.search(r"```nginx\n(.*?)```", page, re.S)
    assert match is not None, "docs/cluster.md has no nginx block"
    block = match.group(1)
    for documented, port in zip((3211, 3212, 3213), ports, strict=True):
        assert f"127.0.0.1:{documented};" in block
        block = block.replace(f"127.0.0.1:{documented};", f"127.0.0.1:{port};")
    assert "listen 3210;" in block
    block = block.replace("listen 3210;", f"listen 127.0.0.1:{listen};")
    temp = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n"
        f"events {{}}\nhttp {{\n    access_log off;\n{temp}\n{block}\n}}\n"
    )
    return conf


async def test_behind_nginx_as_the_guide_shows(
    cluster: Callable[..., Node], tmp_path: Path
) -> None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    nodes = [cluster() for _ in range(3)]
    listen = free_port()
    lb_dir = tmp_path / "nginx"
    lb_dir.mkdir()
    conf = _nginx_config(lb_dir, [n.port for n in nodes], listen)
    with open(lb_dir / "stderr.log", "wb") as err:
        proxy = subprocess.Popen([nginx, "-p", str(lb_dir), "-c", str(conf)], stderr=err)
    lb = f"http://127.0.0.1:{listen}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proxy.poll() is None, (lb_dir / "stderr.log").read_text()
            try:
                if httpx.get(f"{lb}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (lb_dir / "error.log").read_text()
            time.sleep(0.05)
        # Round robin: requests reach every process.
        seen = {httpx.get(f"{lb}/health/ready", timeout=5.0).json()["node"] for _ in range(9)}
        assert len(seen) == 3, seen
        async with Client(lb) as a, Client(lb) as b, Client(lb) as c:
            subs = [client.subscribe("items:ns") for client in (a, b, c)]
            for sub in subs:
                assert await sub.get(timeout_s=10) == []
            expected: list[int] = []
            for n in range(9):
                if n % 2:
                    await (a, b, c)[n % 3].mutation("items:add", n=n, by="lb")
                else:
                    response = await asyncio.to_thread(_mutation, lb, "items:add", n=n, by="lb")
                    assert response.json()["status"] == "success", response.text
                expected.append(n)
                # A read through the load balancer, on whichever process, sees it.
                assert n in await asyncio.to_thread(_query, lb, "items:ns")  # type: ignore[operator]
            for sub in subs:
                deadline = time.monotonic() + 10
                while (value := await sub.get(timeout_s=10)) != expected:
                    assert time.monotonic() < deadline, value
        # Every process took part.
        forwarded = [
            re.search(
                r"^reactive_cluster_forwarded (\S+)", httpx.get(f"{n.url}/metrics").text, re.M
            )
            for n in nodes
        ]
        assert sum(float(m.group(1)) for m in forwarded if m) > 0
    finally:
        proxy.terminate()
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(5)


def test_a_leader_cut_off_from_the_database_steps_down(
    cluster: Callable[..., Node], server_url: str
) -> None:
    parts = urlsplit(server_url)
    assert parts.hostname is not None and parts.port is not None
    proxy = TcpProxy(parts.hostname, parts.port).start()
    try:
        leader = cluster(db_url=via_proxy(server_url, proxy.port))
        assert leader.ready().get("role") == "leader"
        survivors = [cluster(), cluster()]
        acknowledged = []
        for n in range(10):
            body = _mutation(survivors[n % 2].url, "items:add", n=n, by="before").json()
            assert body["status"] == "success", body
            acknowledged.append(n)
        proxy.isolate()
        cut = time.monotonic()
        while "leader" not in _roles(survivors):
            assert time.monotonic() - cut < 5, [s.log() for s in survivors]
            time.sleep(0.05)
        print(f"a follower led {time.monotonic() - cut:.2f} s after the cut")
        # The deposed leader finds its lease gone and exits (status 75).
        assert leader.process.wait(15) == 75, leader.log()
        print(f"the old leader exited {time.monotonic() - cut:.2f} s after the cut")
        assert "writer lease" in leader.log()
        for n in range(10, 20):
            body = _mutation(survivors[n % 2].url, "items:add", n=n, by="after").json()
            assert body["status"] == "success", body
            acknowledged.append(n)
        for node in survivors:
            assert _query(node.url, "items:ns") == acknowledged
    finally:
        proxy.close()


def test_a_mutation_whose_answer_died_with_the_leader_runs_once(
    cluster: Callable[..., Node],
) -> None:
    proxy_port = free_port()
    # The leader tells the followers to call it through the proxy that holds its answers.
    leader = cluster(extra=("--cluster-advertise-url", f"http://127.0.0.1:{proxy_port}"))
    follower = cluster()
    assert _roles([leader, follower]) == ["leader", "follower"]
    proxy = TcpProxy("127.0.0.1", leader.port, port=proxy_port, hold_answers=True).start()
    try:
        answer: dict[str, object] = {}
        post = threading.Thread(
            target=lambda: answer.update(
                _mutation(follower.url, "items:add", n=1, by="once").json()
            )
        )
        post.start()
        deadline = time.monotonic() + 30
        while _query(follower.url, "items:ns") != [1]:  # committed, its answer held
            assert time.monotonic() < deadline
            time.sleep(0.01)
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait(10)
        proxy.close()
        post.join(90)
        assert answer.get("status") == "success", answer
        assert follower.ready().get("role") == "leader"
        assert _query(follower.url, "items:ns") == [1]  # once, not twice
    finally:
        proxy.close()


@pytest.mark.parametrize("value", ["0.5", "nan", "4000", "soon"])
def test_cluster_lease_timeout_is_checked(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from reactive.server.__main__ import main

    argv = ["--db", "postgresql://u@127.0.0.1:9/db", "--cluster-key", KEY]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--cluster-lease-timeout", value])
    assert exited.value.code == 2
    assert "--cluster-lease-timeout" in capsys.readouterr().err
