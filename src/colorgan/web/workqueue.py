"""A bounded work queue: admission control in front of a fixed pool of inference threads.

Why this shape:

* Inference (decode, colourise, encode) is CPU work of a few hundred milliseconds; running it on
  the event loop would freeze every other request, so it runs on ``workers`` threads. Torch
  releases the GIL inside its kernels and Pillow inside its codecs, so the threads overlap.
* The model is shared by the threads. A generator in ``eval()`` mode mutates nothing in its
  forward pass (spectral norm reads its stored vectors, batch norm its running statistics) and
  ``torch.inference_mode`` is thread-local, so concurrent calls are safe without a lock.
* The number of requests in the building at once is bounded (``capacity``): a request takes a
  slot *before* its upload is read, and one that finds no slot gets ``503`` at once. Memory is
  therefore bounded by ``capacity`` uploads plus ``workers`` jobs, whatever the traffic.
* A slot is freed when the job *finishes*, not when its request gives up: a timed-out torch call
  cannot be interrupted, and freeing its slot early would let abandoned work pile up unbounded.
  A job still waiting in the pool when its request times out is cancelled and frees its slot.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

__all__ = ["WorkQueue", "Ticket", "WorkTimeout"]

T = TypeVar("T")


class WorkTimeout(Exception):
    """The job did not finish in time. ``started`` says whether it was already running (and so
    still runs to completion in the background) or was cancelled while still waiting."""

    def __init__(self, started: bool) -> None:
        self.started = started
        super().__init__("job was running and continues in the background" if started else "job was cancelled before it started")


class WorkQueue:
    """Admission control plus a thread pool of ``workers`` threads.

    Args:
        workers: inference threads.
        capacity: requests admitted at once (running, waiting for a thread, or uploading).
    """

    def __init__(self, workers: int, capacity: int) -> None:
        if workers < 1 or capacity < workers:
            raise ValueError(f"need workers >= 1 and capacity >= workers, got {workers} and {capacity}")
        self.workers = workers
        self.capacity = capacity
        self._lock = threading.Lock()  # slots are freed from worker threads too
        self._admitted = 0
        self._running = 0
        self._executor: ThreadPoolExecutor | None = None
        self._job_seconds = 0.0  # moving average of a job's duration, for Retry-After
        self.completed = 0
        self.rejected = 0
        self.timed_out = 0

    # -------------------------------------------------------------------------------- admission

    def try_admit(self) -> Ticket | None:
        """A slot, or None (and a count in ``rejected``) when all ``capacity`` slots are taken."""
        with self._lock:
            if self._admitted >= self.capacity:
                self.rejected += 1
                return None
            self._admitted += 1
        return Ticket(self)

    def _free_slot(self) -> None:
        with self._lock:
            self._admitted -= 1

    def retry_after_s(self) -> int:
        """A polite ``Retry-After``: the time for the admitted work to drain, at least 1 s."""
        with self._lock:
            backlog, per_job = self._admitted, self._job_seconds or 1.0
        return max(1, math.ceil(backlog * per_job / self.workers))

    def stats(self) -> dict[str, Any]:
        """Counters for ``/api/health``."""
        with self._lock:
            return {
                "capacity": self.capacity,
                "workers": self.workers,
                "admitted": self._admitted,
                "running": self._running,
                "completed": self.completed,
                "rejected": self.rejected,
                "timed_out": self.timed_out,
                "mean_job_ms": round(self._job_seconds * 1000.0, 1),
            }

    # -------------------------------------------------------------------------------- execution

    def _submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="colorgan-infer")
            executor = self._executor

        def job() -> T:
            start = time.perf_counter()
            with self._lock:
                self._running += 1
            try:
                return fn(*args)
            finally:
                took = time.perf_counter() - start
                with self._lock:
                    self._running -= 1
                    self.completed += 1
                    self._job_seconds = took if self._job_seconds == 0 else 0.8 * self._job_seconds + 0.2 * took

        return executor.submit(job)

    def close(self) -> None:
        """Stop the threads: jobs not yet started are cancelled, running ones finish first.

        The queue can be used again afterwards (a new pool starts on the next job), which keeps
        an app usable across several start-ups, as tests do.
        """
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


class Ticket:
    """One admitted request's slot. Free it with :meth:`release` if the request ends without
    running a job; once :meth:`run` has handed the job to the pool, the job's end frees it."""

    def __init__(self, queue: WorkQueue) -> None:
        self._queue = queue
        self._state = "held"  # held -> submitted | released
        self._lock = threading.Lock()

    def release(self) -> None:
        """Free the slot unless a job owns it now; idempotent."""
        with self._lock:
            if self._state != "held":
                return
            self._state = "released"
        self._queue._free_slot()

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """Run ``fn(*args)`` on a worker thread and await its result.

        Args:
            fn: the blocking function.
            *args: its arguments.
            timeout: seconds to wait (waiting for a thread included).

        Returns:
            ``fn``'s result; its exceptions are re-raised here.

        Raises:
            WorkTimeout: not finished within ``timeout``.
            RuntimeError: the ticket was already used or released.
        """
        with self._lock:
            if self._state != "held":
                raise RuntimeError("this ticket was already used")
            self._state = "submitted"
        future = self._queue._submit(fn, *args)
        # The slot now belongs to the job: freed when it ends, run or cancelled.
        future.add_done_callback(lambda _f: self._queue._free_slot())
        waiter = asyncio.wrap_future(future)
        # An abandoned job's exception must not be logged as "never retrieved": mark it read.
        waiter.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        try:
            # shield: on timeout we decide ourselves what to cancel (only a job not yet started).
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except asyncio.TimeoutError:
            cancelled = future.cancel()  # succeeds only if no thread has picked the job up
            with self._queue._lock:
                self._queue.timed_out += 1
            raise WorkTimeout(started=not cancelled) from None
