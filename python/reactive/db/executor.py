"""Where user code runs, and for how long: inline under a guard, or on worker threads.

Always within a time limit.

Two paths (the runner picks one per call):

* **Inline, guarded** (``async def`` queries and mutations, when the loop runs on the main
  thread): the handler's steps run on the event loop's own thread, where a typical
  handler (its ``ctx.db`` calls never suspend) finishes in one step of microseconds with
  no thread hop. Each step is timed by ``SIGALRM`` (``setitimer``): a step that holds the
  loop past :data:`INLINE_BUDGET_S` is interrupted (the signal also breaks a blocking
  call such as ``time.sleep``), its work is discarded, and the run starts again on a
  worker thread with what is left of its time limit; that function then always runs on
  workers. So a busy handler holds the loop for at most a few tens of milliseconds, once.
  Handlers that each fit the budget can still add up within one turn of the loop (many
  tasks ready at once: a commit's query re-runs, a query batch, many callers): once the
  inline steps of a turn have taken :data:`TURN_BUDGET_S`, the runs that would start in
  that turn wait for a later one (:func:`wait_turn`), so the loop polls its sockets
  between. They wait in arrival order, and a run that starts while others wait queues
  behind them, so one caller starting runs back to back cannot starve the others. They
  still run inline: sending them to worker threads instead would have the loop compete
  with those threads for the GIL.
  A handler that suspends (awaits something other than ``ctx.db``) keeps the loop free
  meanwhile; its time limit is a timer that cancels it.
* **Worker threads** (plain ``def`` handlers, actions, functions that were too busy
  inline, and every call where no guard is possible) — described below.

A function's handler never runs on the event loop that serves sockets and commits. Each run
takes a worker thread from a pool and runs alone there, on that thread's own event loop
(an ``async def`` handler is a task of that loop; a plain ``def`` handler is called from
it), so a handler that loops, sleeps or computes for seconds holds only its own thread:
other runs, the server's sockets and the committer go on (they share the GIL, which
Python hands over every ``sys.getswitchinterval()`` seconds).

Time limits follow Convex's (queries and mutations: 1 s of execution; actions: 10
minutes). When a run passes its limit, its caller gets :class:`FunctionTimeoutError` at
once and the run is stopped: its task is cancelled (a handler waiting in ``await`` ends
there), and if it keeps running Python code (``while True: pass``) an exception is raised
inside its thread (``PyThreadState_SetAsyncExc``, the CPython API for interrupting another
thread), again each second until it ends. A handler blocked inside C code (a long
``time.sleep``) ends when that call returns; its thread stays busy until then and the pool
starts another. Nothing a stopped run did is committed: the caller commits only after the
handler returned in time.

Limits on waiting: at most ``max_threads`` runs at once per pool; more wait in arrival
order (the wait does not count against the time limit) up to ``max_waiting``, past which a
run is refused with :class:`TooManyRequestsError`.

Objects bound to an event loop (an ``httpx.AsyncClient``, an ``asyncio.Lock``) belong to
the worker thread's loop where they were made: create them inside the run (or per thread),
not once at import time for every run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import ctypes
import gc
import heapq
import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from reactive.errors import FunctionTimeoutError, TooManyRequestsError

__all__ = [
    "INLINE_BUDGET_S",
    "TURN_BUDGET_S",
    "Executor",
    "Offload",
    "RunInterrupted",
    "in_worker",
    "inline_first_step",
    "inline_possible",
    "must_wait_turn",
    "run_inline",
    "run_inline_rest",
    "turn_spent",
    "wait_turn",
]

log = logging.getLogger("reactive.executor")

_INTERRUPT_REPEAT_S = 1.0
INLINE_BUDGET_S = 0.025
"""How long one step of an inline handler may hold the event loop (seconds)."""
TURN_BUDGET_S = 0.05
"""Inline handler time one turn of the event loop may hold (seconds), summed over steps.

Past it, the runs that would start in the same turn wait for the next turn (see
:func:`turn_spent`); the count restarts there, after the loop has polled its sockets. So
the loop goes at most about ``TURN_BUDGET_S + INLINE_BUDGET_S`` without serving its
sockets because of inline handlers.
"""
_worker_state = threading.local()


class RunInterrupted(BaseException):
    """Raised inside a run's thread to stop a handler that passed its time limit.

    A ``BaseException``, so ``except Exception`` in user code does not swallow it.
    """


class Offload(Exception):
    """An inline run held the event loop too long: run it again on a worker thread.

    Attributes:
        elapsed_s: Time the inline attempt took (it counts against the time limit).
    """

    def __init__(self, elapsed_s: float) -> None:
        super().__init__(f"moved to a worker thread after {elapsed_s:.3f} s on the loop")
        self.elapsed_s = elapsed_s


class _LoopGuard:
    """Times handler steps on the main thread with ``SIGALRM`` (one per process).

    The interrupt is never raised inside the garbage collector's callbacks or an object's
    finalizer (``__del__``, weakref callbacks): Python would print it as "Exception
    ignored" and go on. Time spent collecting garbage does not count against the step.
    """

    def __init__(self) -> None:
        self.active = False
        self.installed: bool | None = None
        self.collecting = False
        # Seconds of inline steps in the current turn of the loop ``_turn_loop``, and
        # whether the reset at its next turn is scheduled (see TURN_BUDGET_S). A loop
        # that closes with the reset still scheduled leaves it unrun: the next loop on
        # this thread starts afresh.
        self.turn_used = 0.0
        self._turn_reset = False
        self._turn_loop: asyncio.AbstractEventLoop | None = None
        # The one bound method installed as the handler: ``usable`` compares by identity.
        self._handler = self._on_alarm
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        self.collecting = phase == "start"

    def usable(self) -> bool:
        """True when steps can be guarded here: on the main thread, with SIGALRM free.

        Called before every inline run, so the common answer is cheap: the main thread's
        id is compared, and the handler read raw (no ``Handlers`` enum conversion).
        """
        if self.installed is None:
            if threading.current_thread() is not threading.main_thread() or not hasattr(
                signal, "setitimer"
            ):
                return False
            try:
                if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None):
                    self.installed = False  # the application uses SIGALRM itself
                else:
                    signal.signal(signal.SIGALRM, self._handler)
                    self.installed = True
            except (ValueError, OSError):
                self.installed = False
        if not self.installed or threading.get_ident() != _MAIN_THREAD_ID:
            return False
        handler = _raw_getsignal(signal.SIGALRM)
        if handler is not self._handler and handler != self._handler:
            # The application took SIGALRM over since: leave it alone from now on.
            log.info("SIGALRM has another handler: every handler runs on worker threads")
            self.installed = False
            return False
        return True

    def _on_alarm(self, signum: int, frame: Any) -> None:
        # Runs on the main thread between two bytecodes (or as a blocking call returns
        # EINTR). Outside a step, a late alarm is ignored.
        if not self.active:
            return
        if self.collecting:
            # Garbage collection is not the step's time: give it its budget again.
            signal.setitimer(signal.ITIMER_REAL, INLINE_BUDGET_S)
            return
        if _in_finalizer(frame):
            signal.setitimer(signal.ITIMER_REAL, 0.001)  # just after it
            return
        signal.setitimer(signal.ITIMER_REAL, 0.25)  # again, should the step swallow it
        raise RunInterrupted

    def _leave(self) -> None:
        self.active = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _new_turn(self) -> None:
        # Called soon after a turn's first step: in the loop's next turn, which polls
        # the sockets first (a callback scheduled during a turn runs in the next one).
        self.turn_used = 0.0
        self._turn_reset = False

    def step(self, method: Callable[[Any], Any], arg: Any) -> Any:
        """``method(arg)`` with the loop guarded; raises RunInterrupted when too long.

        The step's time counts toward the loop's turn (:data:`TURN_BUDGET_S`).
        """
        if self.active or not self.installed:
            return method(arg)  # a step inside a step (the outer one is timed), or no guard
        loop = _running_loop()
        if self._turn_loop is not loop:
            self._turn_loop, self.turn_used, self._turn_reset = loop, 0.0, False
        if not self._turn_reset:
            self._turn_reset = True
            loop.call_soon(self._new_turn)
        started = _perf_counter()
        try:
            self.active = True
            _setitimer(_ITIMER_REAL, INLINE_BUDGET_S)
            try:
                return method(arg)
            finally:
                self.active = False  # _leave(), inline: this runs for every step
                _setitimer(_ITIMER_REAL, 0)
                self.turn_used += _perf_counter() - started
        except RunInterrupted:
            while True:  # an alarm may land inside _leave itself: leave for sure
                try:
                    self._leave()
                    break
                except RunInterrupted:
                    continue
            raise


def _in_finalizer(frame: Any) -> bool:
    """True when ``frame`` (or a caller just above) is a finalizer or weakref callback.

    An exception raised there would be printed and dropped. Garbage collector callbacks
    (``gc.callbacks``: the guard's own, and any other library's, e.g. Hypothesis' GC timer)
    count too: an alarm landing in one would otherwise be raised (and dropped) there.
    """
    gc_codes: set[Any] | None = None
    depth = 0
    while frame is not None and depth < 3:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename.endswith(_FINALIZER_FILES):
            return True
        if gc_codes is None:
            gc_codes = _gc_callback_codes()
        if code in gc_codes:
            return True
        frame = frame.f_back
        depth += 1
    return False


def _gc_callback_codes() -> set[Any]:
    """The code objects of the functions in ``gc.callbacks`` (read when an alarm lands)."""
    codes: set[Any] = {_ON_GC_CODE}
    for callback in list(gc.callbacks):
        code = getattr(getattr(callback, "__func__", callback), "__code__", None)
        if code is not None:
            codes.add(code)
    return codes


_FINALIZER_FILES = ("weakref.py", "_weakrefset.py")
# Bound once (the guard arms and disarms the timer around every step); where signal has
# no setitimer the guard is never installed, so step() never calls it.
_setitimer: Callable[[int, float], Any] = getattr(signal, "setitimer", lambda which, s: None)
_ITIMER_REAL: int = getattr(signal, "ITIMER_REAL", 0)
_perf_counter = time.perf_counter
_running_loop = asyncio.get_running_loop
_ON_GC_CODE = _LoopGuard._on_gc.__code__
_MAIN_THREAD_ID = threading.main_thread().ident
# signal.getsignal converts the handler to a ``Handlers`` enum member (microseconds);
# _signal.getsignal returns it as stored.
_raw_getsignal: Callable[[int], Any] = getattr(
    getattr(signal, "_signal", None), "getsignal", signal.getsignal
)
_GUARD = _LoopGuard()


def inline_possible() -> bool:
    """True when handlers may run inline on the current (main) thread's loop."""
    return _GUARD.usable()


def turn_spent() -> bool:
    """True when this turn of the running loop has had its inline time (TURN_BUDGET_S).

    A run about to start inline then waits for a later turn (:func:`wait_turn`): the loop
    polls its sockets first, and the count restarts.
    """
    guard = _GUARD
    return guard.turn_used >= TURN_BUDGET_S and guard._turn_loop is _running_loop()


class _TurnQueue:
    """Inline runs waiting for a turn of the loop with time left, served in arrival order.

    Each waiter holds a ticket. One turn after the first waiter queued, every waiter is
    woken in ticket order; those that find the turn spent again queue again with the same
    ticket (a heap keeps the order). While anyone waits or has been woken but not yet
    resumed, a newcomer queues too, behind them: a task that starts runs back to back
    (its next run follows its last without suspending) cannot keep taking every new
    turn's budget ahead of the runs that were already waiting.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.heap: list[tuple[int, asyncio.Future[None]]] = []
        self.tickets = 0
        self.woken = 0  # waiters released whose tasks have not resumed yet
        self.release_scheduled = False

    def busy(self) -> bool:
        """True when runs of the running loop wait (or were just woken) for a turn."""
        return (bool(self.heap) or self.woken > 0) and self.loop is _running_loop()

    def _release(self) -> None:
        self.release_scheduled = False
        heap = self.heap
        while heap:
            _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_result(None)
                self.woken += 1

    async def wait(self) -> None:
        loop = _running_loop()
        if self.loop is not loop:
            # A new loop (the previous one closed, with whatever waited on it).
            self.loop, self.heap, self.woken, self.release_scheduled = loop, [], 0, False
        self.tickets += 1
        ticket = self.tickets
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self.heap, (ticket, fut))
            if not self.release_scheduled:
                self.release_scheduled = True
                loop.call_soon(self._release)
            try:
                await fut
            finally:
                if fut.done() and not fut.cancelled() and self.loop is loop:
                    self.woken -= 1
            if not turn_spent():
                return


_TURNS = _TurnQueue()


def must_wait_turn() -> bool:
    """True when a run about to start inline should first :func:`wait_turn`.

    The turn's inline time is spent (:data:`TURN_BUDGET_S`), or other runs already wait
    for a turn (they go first). Cheap: called before every inline run.
    """
    return turn_spent() or _TURNS.busy()


async def wait_turn() -> None:
    """Wait, in arrival order among waiting runs, for a turn with inline time left.

    Raises:
        asyncio.CancelledError: the waiting task was cancelled (its place is given up).
    """
    await _TURNS.wait()


class _Inline:
    """Awaiting it drives ``coro`` on from its first step's ``pending``, each step guarded.

    The first step was run by :func:`inline_first_step` (a handler that does not suspend,
    the common case, ends there: no object, no generator, no timer).
    """

    __slots__ = (
        "coro",
        "deadline",
        "expired",
        "kind",
        "limit_s",
        "path",
        "pending",
        "started",
        "task",
    )

    def __init__(
        self, coro: Any, limit_s: float, kind: str, path: str | None, started: float, pending: Any
    ) -> None:
        self.coro = coro
        self.limit_s = limit_s
        self.kind = kind  # the label of errors is made only when one is raised
        self.path = path
        self.started = started
        self.deadline = started + limit_s
        self.pending = pending
        self.expired = False
        self.task: asyncio.Task[Any] | None = None

    def _expire(self) -> None:
        self.expired = True
        if self.task is not None:
            self.task.cancel()

    def __await__(self) -> Any:
        coro = self.coro
        pending = self.pending
        self.pending = None
        # The handler waits for something: its time limit is a timer.
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        timer = loop.call_at(loop.time() + self.deadline - time.monotonic(), self._expire)
        try:
            while True:
                method: Callable[[Any], Any]
                try:
                    arg = yield pending
                    method = coro.send
                except BaseException as exc:  # thrown in by the task: pass it on
                    if self.expired and isinstance(exc, asyncio.CancelledError):
                        if self.task is not None:
                            self.task.uncancel()
                        exc = asyncio.CancelledError()
                    arg, method = exc, coro.throw
                try:
                    pending = _GUARD.step(method, arg)
                except StopIteration as stop:
                    return stop.value
                except RunInterrupted:
                    coro.close()
                    raise Offload(time.monotonic() - self.started) from None
                except asyncio.CancelledError:
                    if self.expired:
                        raise self._timeout() from None
                    raise
        finally:
            timer.cancel()

    def _timeout(self) -> FunctionTimeoutError:
        return FunctionTimeoutError(
            f"{self.kind} {self.path} ran past its time limit of {self.limit_s:g} s and was stopped"
        )


def inline_first_step(coro: Any) -> tuple[bool, Any]:
    """Run the first step of handler coroutine ``coro`` on the loop, guarded.

    Returns ``(True, result)`` when the handler ended in it, else ``(False, state)``:
    pass ``state`` to :func:`run_inline_rest` and await that.

    Raises:
        Offload: the step held the loop past :data:`INLINE_BUDGET_S`; run it elsewhere.
        Exception: whatever the handler raised.
    """
    started = time.monotonic()
    try:
        pending = _GUARD.step(coro.send, None)
    except StopIteration as stop:
        return True, stop.value
    except RunInterrupted:
        coro.close()
        raise Offload(time.monotonic() - started) from None
    return False, (started, pending)


def run_inline_rest(
    coro: Any, state: tuple[float, Any], limit_s: float, kind: str, path: str | None
) -> Any:
    """An awaitable driving a suspended ``coro`` on (after :func:`inline_first_step`).

    Its time limit ``limit_s`` counts from the first step; ``kind`` and ``path`` name the
    function in a timeout's message (``"mutation m:f ran past..."``).

    Raises:
        Offload: a step held the loop past :data:`INLINE_BUDGET_S`; run it elsewhere.
        FunctionTimeoutError: it waited past ``limit_s``.
        Exception: whatever the handler raised.
    """
    started, pending = state
    return _Inline(coro, limit_s, kind, path, started, pending)


async def run_inline(coro: Any, limit_s: float, kind: str, path: str | None) -> Any:
    """Run handler coroutine ``coro`` inline (see the module docstring): both steps above.

    Raises:
        Offload: a step held the loop past :data:`INLINE_BUDGET_S`; run it elsewhere.
        FunctionTimeoutError: it waited past ``limit_s``.
        Exception: whatever the handler raised.
    """
    finished, state = inline_first_step(coro)
    if finished:
        return state
    return await run_inline_rest(coro, state, limit_s, kind, path)


def in_worker() -> bool:
    """True on a worker thread, inside a run (nested calls then run in place)."""
    # The main thread is never a worker: one id comparison instead of a thread-local
    # lookup on the common path (an event loop on the main thread).
    if threading.get_ident() == _MAIN_THREAD_ID:
        return False
    return getattr(_worker_state, "worker", None) is not None


def _interrupt_thread(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(RunInterrupted)
    )


def _clear_interrupt(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)


class _Run:
    """One handler call: submitted on the caller's loop, executed on a worker thread."""

    __slots__ = (
        "call",
        "context",
        "deadline",
        "done",
        "future",
        "label",
        "limit_s",
        "loop",
        "shown_limit_s",
        "stopping",
        "task",
        "worker",
    )

    def __init__(
        self,
        call: Callable[[], Any],
        limit_s: float,
        label: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.call = call
        self.limit_s = limit_s
        self.shown_limit_s = limit_s
        self.label = label
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.context = contextvars.copy_context()
        self.deadline = 0.0
        self.worker: _Worker | None = None
        self.task: asyncio.Task[Any] | None = None
        self.done = False
        self.stopping = False


class _Worker(threading.Thread):
    """A thread with its own event loop that runs one :class:`_Run` at a time."""

    def __init__(self, pool: Executor, number: int) -> None:
        super().__init__(name=f"reactive-{pool.name}-{number}", daemon=True)
        self.pool = pool
        self.wake = threading.Condition(pool.lock)
        self.run_now: _Run | None = None
        self.exit = False
        self.loop = asyncio.new_event_loop()

    def run(self) -> None:
        _worker_state.worker = self
        asyncio.set_event_loop(self.loop)
        while True:
            with self.pool.lock:
                while self.run_now is None and not self.exit:
                    self.wake.wait()
                if self.exit and self.run_now is None:
                    break
                job = self.run_now
            assert job is not None  # set under the lock above
            self._execute(job)
            # An interrupt meant for `job` may still arrive until `_finish` clears it.
            while True:
                try:
                    self._finish(job)
                    break
                except RunInterrupted:
                    continue
        with contextlib.suppress(Exception):
            self.loop.close()

    def _execute(self, job: _Run) -> None:
        outcome: tuple[Any, BaseException | None]
        try:
            task = self.loop.create_task(_invoke(job.call), context=job.context)
            job.task = task
            outcome = (self.loop.run_until_complete(task), None)
        except RunInterrupted:
            outcome = (None, None)  # the caller already has its timeout error
            self._reset_loop()
        except BaseException as exc:
            outcome = (None, exc)
        job.task = None
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed
            job.loop.call_soon_threadsafe(_deliver, job, outcome)

    def _reset_loop(self) -> None:
        # The interrupt may have landed inside the loop's own machinery: start clean.
        old = self.loop
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        with contextlib.suppress(BaseException):
            for task in asyncio.all_tasks(old):
                task.cancel()
            old.close()

    def _finish(self, job: _Run) -> None:
        with self.pool.lock:
            job.done = True
            self.pool._timed.discard(job)
            self.run_now = None
            _clear_interrupt(self.ident or 0)
            self.pool._worker_free(self)


async def _invoke(call: Callable[[], Any]) -> Any:
    result = call()
    if inspect.isawaitable(result):
        result = await result
    return result


def _deliver(job: _Run, outcome: tuple[Any, BaseException | None]) -> None:
    future = job.future
    if future.done():
        return  # timed out (or the caller went away) before the run ended
    value, exc = outcome
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


class Executor:
    """A pool of worker threads that runs handlers with time limits.

    Args:
        name: Names the threads (``reactive-<name>-<n>``).
        max_threads: Runs at once (threads are started as needed, kept when idle).
        max_waiting: Runs waiting for a thread before new ones are refused.
    """

    def __init__(self, name: str, max_threads: int = 64, max_waiting: int = 10_000) -> None:
        if max_threads < 1 or max_waiting < 0:
            raise ValueError("max_threads must be >= 1 and max_waiting >= 0")
        self.name = name
        self.max_threads = max_threads
        self.max_waiting = max_waiting
        self.lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._waiting: collections.deque[_Run] = collections.deque()
        self._started = 0
        self._closed = False
        self._watchdog: threading.Thread | None = None
        self._watch_cv = threading.Condition(self.lock)
        self._timed: set[_Run] = set()

    # -- submitting --------------------------------------------------------------------

    async def run(
        self,
        call: Callable[[], Any],
        limit_s: float,
        label: str,
        shown_limit_s: float | None = None,
    ) -> Any:
        """Run ``call()`` (awaiting what it returns) on a worker thread within ``limit_s``.

        Args:
            call: A function of no arguments; it may return an awaitable.
            limit_s: Seconds the run may take once it starts (its wait for a thread does
                not count).
            label: What runs, for error messages (``"query messages:list"``).
            shown_limit_s: The limit named in the timeout error (default ``limit_s``; a run
                moved here from the loop has less left than the function's limit).

        Returns:
            What ``call`` returned (awaited).

        Raises:
            FunctionTimeoutError: the run passed ``limit_s`` (it is being stopped).
            TooManyRequestsError: ``max_waiting`` runs already wait for a thread.
            Exception: whatever the handler raised.
        """
        loop = asyncio.get_running_loop()
        job = _Run(call, limit_s, label, loop)
        job.shown_limit_s = limit_s if shown_limit_s is None else shown_limit_s
        with self.lock:
            if self._closed:
                raise RuntimeError("the function executor is closed")
            worker = self._take_worker()
            if worker is None:
                if len(self._waiting) >= self.max_waiting:
                    raise TooManyRequestsError(
                        f"{label}: {len(self._waiting)} functions already wait for one of "
                        f"the {self.max_threads} {self.name} threads; try again later"
                    )
                self._waiting.append(job)
            else:
                self._start(worker, job)
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            # The caller went away: stop the run as if it had timed out.
            self._abandon(job)
            raise

    def _take_worker(self) -> _Worker | None:
        if self._idle:
            return self._idle.pop()
        if len(self._busy) < self.max_threads:
            self._started += 1
            worker = _Worker(self, self._started)
            worker.start()
            return worker
        return None

    def _start(self, worker: _Worker, job: _Run) -> None:
        # Holding self.lock.
        job.worker = worker
        job.deadline = time.monotonic() + job.limit_s
        worker.run_now = job
        self._busy.add(worker)
        self._timed.add(job)
        worker.wake.notify()
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name=f"reactive-{self.name}-watchdog", daemon=True
            )
            self._watchdog.start()
        elif len(self._timed) == 1:
            self._watch_cv.notify()

    def _worker_free(self, worker: _Worker) -> None:
        # Holding self.lock (called from the worker thread).
        self._busy.discard(worker)
        while self._waiting:
            job = self._waiting.popleft()
            if job.future.done():
                continue
            self._start(worker, job)
            return
        if self._closed:
            worker.exit = True
        else:
            self._idle.append(worker)

    # -- time limits ---------------------------------------------------------------------

    def _watch(self) -> None:
        # One thread per pool checks deadlines, every 50 ms while runs are in progress and
        # not at all when none is (a timer per run would cost a wake-up per run).
        with self.lock:
            while True:
                if not self._timed:
                    if self._closed:
                        self._watchdog = None
                        return
                    self._watch_cv.wait()
                    continue
                self._watch_cv.wait(0.05)
                now = time.monotonic()
                for job in [job for job in self._timed if job.deadline <= now]:
                    self._stop(job, now)

    def _stop(self, job: _Run, now: float) -> None:
        # Holding self.lock. First: fail the caller and cancel the task (a handler waiting
        # in `await` ends there); then interrupt the thread every _INTERRUPT_REPEAT_S until
        # the run ends (a handler running Python code).
        worker = job.worker
        if not job.stopping:
            job.stopping = True
            if not job.future.done():
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(_time_out, job)
                log.warning(
                    "%s passed its time limit of %g s: stopping it", job.label, job.shown_limit_s
                )
            task = job.task
            if task is not None and worker is not None:
                with contextlib.suppress(RuntimeError):
                    worker.loop.call_soon_threadsafe(task.cancel)
                job.deadline = now + 0.1
                return
        if worker is not None and worker.run_now is job:
            _interrupt_thread(worker.ident or 0)
        job.deadline = now + _INTERRUPT_REPEAT_S

    def _abandon(self, job: _Run) -> None:
        job.future.cancel()  # on the caller's loop: nobody waits for the outcome
        with self.lock:
            if job in self._waiting:
                self._waiting.remove(job)
                return
            if not job.done:
                job.deadline = 0.0  # the watchdog stops it now

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop idle threads; busy ones end after their run (they are daemon threads)."""
        with self.lock:
            self._closed = True
            for job in self._waiting:
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(_refuse_closed, job)
            self._waiting.clear()
            for worker in self._idle:
                worker.exit = True
                worker.wake.notify()
            self._idle.clear()
            self._watch_cv.notify()

    @property
    def busy(self) -> int:
        """Runs in progress (including stopped ones still unwinding)."""
        return len(self._busy)


def _time_out(job: _Run) -> None:
    if not job.future.done():
        job.future.set_exception(
            FunctionTimeoutError(
                f"{job.label} ran past its time limit of {job.shown_limit_s:g} s and was stopped"
            )
        )


def _refuse_closed(job: _Run) -> None:
    if not job.future.done():
        job.future.set_exception(RuntimeError("the database is closing"))
