"""Ctrl-C in a long run (bench, soak, bench-serve): the first one asks the run to stop where it
is, so that it prints the figures so far and removes what it created; a second one stops at once
(KeyboardInterrupt: one line, exit 130, no figures).

A flag instead of KeyboardInterrupt: an exception raised in the middle of a PKCS#11 call, or
between creating a key and noting its handle, would leave objects nobody removes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


class StopRequest:
    """Set once, read by the run's threads (`is_set()`, `wait()`): a threading.Event that also
    calls what must hear it at once (e.g. client processes measuring on their own)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._listeners: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def listen(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def request(self) -> None:
        self._event.set()
        for listener in list(self._listeners):
            listener()


@contextlib.contextmanager
def first_ctrl_c_stops(stop: StopRequest) -> Iterator[StopRequest]:
    """SIGINT sets `stop` while the block runs; a second SIGINT raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield stop  # only the main thread may take signals: Ctrl-C keeps its default there
        return

    def interrupted(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.request()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
