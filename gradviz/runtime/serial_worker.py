"""SerialWorker: one daemon thread that runs torch work in the order it was asked for.

Why not Textual's ``@work(thread=True)``: those run on asyncio's default
executor, whose threads Python joins at exit, so quitting during a slow forward
kept the process alive until the forward ended; they run side by side unless
made exclusive, and an exclusive worker cancels the one before it, which is how
a screen and the engine came to disagree. One daemon thread with a queue gives
the order for free, never outlives the app's process, and gets the deep stack
that freeing a deep graph needs (see :mod:`gradviz.runtime.deep_graphs`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from gradviz.runtime.deep_graphs import WORKER_STACK_BYTES

_STOP = object()


class SerialWorker:
    """``submit(job)`` runs ``job()`` on the worker thread after the jobs before it."""

    def __init__(self, name: str = "gradviz-engine",
                 on_error: Callable[[BaseException], None] | None = None):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._on_error = on_error
        previous = threading.stack_size()
        threading.stack_size(WORKER_STACK_BYTES)
        try:
            self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
            self._thread.start()
        finally:
            threading.stack_size(previous)

    def submit(self, job: Callable[[], object]) -> None:
        self._jobs.put(job)

    def shutdown(self, timeout: float | None = None) -> None:
        """Run what is queued, then end; wait up to ``timeout`` seconds for that."""
        self._jobs.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            try:
                job()
            except BaseException as error:  # a job's own errors are its business; never die
                if self._on_error is not None:
                    self._on_error(error)
            finally:
                # What the job held (an old session's graph, say) is freed now, not
                # when the next job comes: that may be at exit, inside torch.
                job = None
