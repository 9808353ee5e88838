"""Every call the applications make during a lab run, as serve tells it (FaultBook.watch).

Memory is bounded whatever the run's length: the first MAX_CALLS calls are kept one by one (the
report's call table and the step analysis read them); every call, kept or not, is also counted
in the timeline's bins (ckdemo.timeline: at most MAX_BINS, wider as the run grows).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..serve.faults import CallRecord
from ..timeline import Bins

MAX_CALLS = 100_000
# results that are answers, not failures: a size answer, what a polling application is told, and
# a login to a token the application is logged in to already (applications that log in with
# every new session, python-pkcs11's and OpenSC's among them, take it as success)
NOT_FAILURES = frozenset({0x0, 0x150, 0x8, 0x100})
# CKR_OK, CKR_BUFFER_TOO_SMALL, CKR_NO_EVENT, CKR_USER_ALREADY_LOGGED_IN


def failed(result: int | None) -> bool:
    """A failure the application saw: a return value other than those, or no reply at all."""
    return result is None or result not in NOT_FAILURES


@dataclass
class Mark:
    """Something that happened to the run (a step began, a member changed state)."""

    at: float
    what: str
    step: str = ""
    member: str = ""  # the member's label, when the lab changed a member's state ...
    state: str = ""  # ... to this: up, down, hung or slow (timeline bands)


@dataclass
class Journal:
    start: float  # monotonic: the application's start
    calls: list[CallRecord] = field(default_factory=list)
    dropped: int = 0  # calls beyond MAX_CALLS (counted in the bins only)
    timeline: Bins = field(default_factory=Bins)
    count: int = 0  # calls so far
    marks: list[Mark] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, call: CallRecord) -> None:
        """Called by serve's connection threads, once per call."""
        at = max(0.0, call.started - self.start)
        with self._lock:
            self.count += 1
            if len(self.calls) < MAX_CALLS:
                self.calls.append(call)
            else:
                self.dropped += 1
            self.timeline.add(at, call.seconds, failed(call.result))

    def mark(self, at: float, what: str, step: str = "", member: str = "", state: str = "") -> None:
        with self._lock:
            self.marks.append(Mark(at - self.start, what, step, member, state))

    def snapshot(self) -> tuple[list[CallRecord], Bins, list[Mark]]:
        """The calls kept, the timeline's bins (a copy), the marks."""
        with self._lock:
            return (list(self.calls), Bins(list(self.timeline.bins), self.timeline.bin_s), list(self.marks))

    def at(self, call: CallRecord) -> float:
        """A call's time in the run (seconds after the application started)."""
        return call.started - self.start
