"""A deadline for every call on a member that can hang (a remote member whose server stopped
answering: p11-kit has no timeout, FACTS 4).

Calls run on the member's own worker thread and the caller waits at most `timeout_s`; python-
pkcs11 releases the GIL in C calls, so the wait really ends. A call that timed out cannot be
cancelled: the worker stays blocked until the member answers or dies, and until then the member
takes no new calls (they fail at once), so a hung member never holds up the group.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable, TypeVar

from ..codes import CKR_DEVICE_ERROR, CKRError

T = TypeVar("T")


class MemberWorker:
    def __init__(self, name: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._jobs: queue.Queue = queue.Queue()
        self._stuck: Future | None = None
        # a daemon thread: a member hung at exit must not keep the process alive
        self._thread = threading.Thread(target=self._serve, name=f"member-{name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            future, fn = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the waiting caller, who decides
                    future.set_exception(exc)

    @property
    def hung(self) -> bool:
        return self._stuck is not None and not self._stuck.done()

    def call(self, serial: str, fn: Callable[[], T]) -> T:
        if self.hung:
            raise CKRError(CKR_DEVICE_ERROR, "member call", f"member {serial} has not answered an earlier "
                                                   f"call yet")
        future: Future = Future()
        self._jobs.put((future, fn))
        try:
            return future.result(self.timeout_s)
        except TimeoutError:
            self._stuck = future
            raise CKRError(CKR_DEVICE_ERROR, "member call", f"no answer from member {serial} within "
                                                   f"{self.timeout_s:g} s") from None
