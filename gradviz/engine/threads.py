"""The threads the stepper runs backward passes on, kept a moment for the next pass.

A backward pass on a thread that has never run one costs noticeably more than on a
thread that has: the thread's OpenMP team, MKL's per-thread buffers and malloc's
arena all start cold. Measured on two cores (CPU time, the same pass on a new thread
against a thread that had run one): T5 tiny +34%, a small ViT +18%, Llama tiny +4%.
A training loop or a benchmark makes one stepper after another, so a thread whose
backward *finished* waits :data:`LINGER` seconds for the next before it ends; one
whose backward was aborted (the app quitting, a new forward pass) ends at once.

A thread only ever runs one pass at a time: a pass that starts while another is
paused gets a thread of its own.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from gradviz.runtime.deep_graphs import WORKER_STACK_BYTES

#: Seconds an idle thread waits for the next backward pass before it ends.
LINGER = 1.0
NAME = "gradviz-backward"

_lock = threading.Lock()
_idle: list[queue.SimpleQueue] = []  # the inboxes of threads waiting for a pass


class Job:
    """One backward pass handed to a thread: ``fn()`` returns whether the thread may
    wait for another pass afterwards."""

    def __init__(self, fn: Callable[[], bool]):
        self.fn = fn
        self.thread: threading.Thread | None = None
        self.done = threading.Event()
        self.lingers = False

    def run(self) -> bool:
        self.thread = threading.current_thread()
        try:
            self.lingers = bool(self.fn())
        finally:
            self.fn = None
            self.done.set()
        return self.lingers

    def join(self) -> None:
        """Wait for the pass to end, and for its thread too when that thread ends with it."""
        self.done.wait()
        thread = self.thread
        if not self.lingers and thread is not None and thread is not threading.current_thread():
            thread.join()


def submit(fn: Callable[[], bool]) -> Job:
    """Run ``fn`` on an idle backward thread, or on a new one."""
    job = Job(fn)
    with _lock:
        inbox = _idle.pop() if _idle else None
    if inbox is not None:
        inbox.put(job)
        return job
    previous = threading.stack_size()
    threading.stack_size(WORKER_STACK_BYTES)  # the thread may free a deep graph
    try:
        threading.Thread(target=_serve, args=(job,), name=NAME, daemon=True).start()
    finally:
        threading.stack_size(previous)
    return job


def _serve(job: Job) -> None:
    while job.run():
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        with _lock:
            _idle.append(inbox)
        try:
            job = inbox.get(timeout=LINGER)
        except queue.Empty:
            with _lock:
                if inbox in _idle:  # nobody picked this thread: end it
                    _idle.remove(inbox)
                    return
            job = inbox.get()  # picked just as the wait ended: the pass is on its way
