"""A bounded set of daemon threads that run tasks: status queries, HTTP exchanges."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class Workers:
    """Like a ThreadPoolExecutor, but with daemon threads.

    ThreadPoolExecutor's workers are joined at interpreter exit, so a request stuck
    on a hung connection would hold up a SIGTERM until its timeout; daemon threads
    do not.

    Threads start when a task finds none idle, up to ``size``, and stay. Every thread
    that has run keeps its touched stack and a share of malloc's pages, so a pool of
    64 proxy handlers started at once and taking turns cost memory that a proxy with a
    few uploads at a time never needed (bench/mixed_memory.py).
    """

    def __init__(self, size: int, name: str = "elevate-poll") -> None:
        self._tasks: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ]
        self._tasks = queue.SimpleQueue()
        self._size = size
        self._name = name
        self._lock = threading.Lock()  # guards the three below
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a task
        self._unclaimed = 0  # tasks queued that no thread has taken yet
        self._stopped = False

    def submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            self._unclaimed += 1
            short = self._unclaimed > self._idle and len(self._threads) < self._size
            if short and not self._stopped:
                self._start()
        self._tasks.put((future, function, args))
        return future

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            count = len(self._threads)
        for _ in range(count):
            self._tasks.put(None)

    def _start(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        self._idle += 1  # counted before it runs, so that the next submit does not start another
        thread.start()

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            with self._lock:
                self._idle -= 1
                if task is not None:
                    self._unclaimed -= 1
            if task is None:
                return
            future, function, args = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args))
                except BaseException as error:  # handed to the caller, which logs it
                    future.set_exception(error)
            with self._lock:
                self._idle += 1
