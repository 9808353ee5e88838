"""Member faults that last: a slow member and a flapping one, each a loop of two states.

- slow: a remote member's `p11-kit server` (its process group: the server and the child serving
  ckdemo's connection) is stopped (SIGSTOP) for MS milliseconds, runs for SLOW_RUN_S, is stopped
  again, ... A call that reaches it while it is stopped waits until it runs again: its answer
  comes up to MS ms late (about MS/2 on average), as from an overloaded appliance or a link that
  stalls. The connection stays open, so nothing fails unless a stop outlasts the call's deadline
  (MemberHedgeFloor, MemberTimeout): then the HA group gives the member up, as for a hang.
- flap: the member goes down for DOWN seconds and comes back, every EVERY seconds: a remote
  member's server is killed and started again; a member served in this process is failed and
  restored through its HA group, as menu choices 120/121 do.

Whatever ends the loop (its time is up, it is stopped, a state change fails), the member is left
in its second state (running, up).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

SLOW_RUN_S = 0.02  # how long a slowed server runs between two stops: calls answered in it are on time
MAX_SLOW_MS = 60_000
MIN_FLAP_EVERY_S = 0.2  # a kill, a start of p11-kit server and its socket take tens of ms
STOP_WAIT_S = 10.0  # how long stop() waits for the loop to put the member back


@dataclass(eq=False)
class Cycle:
    """first() for first_s, second() for second_s, again and again, in a thread of its own,
    until stop() or for_s has passed; second() once more at the end, whatever happened.
    on_change(state) is told each change ("first" or "second") when `tell_each` is set, else
    only the first and the last; on_error(error) each state change that failed (the loop goes on)."""

    first: Callable[[], object]
    second: Callable[[], object]
    first_s: float
    second_s: float
    for_s: float | None = None
    on_change: Callable[[str], None] = lambda state: None
    on_error: Callable[[BaseException], None] = lambda error: None
    tell_each: bool = False
    clock: Callable[[], float] = time.monotonic
    stopped: threading.Event = field(default_factory=threading.Event)
    cycles: int = 0  # times first() was done
    _thread: threading.Thread | None = None

    def start(self, name: str = "member-cycle") -> "Cycle":
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        ends = None if self.for_s is None else self.clock() + self.for_s
        try:
            while not self.stopped.is_set() and (ends is None or self.clock() < ends):
                self._do(self.first)
                self.cycles += 1
                if self.cycles == 1 or self.tell_each:
                    self.on_change("first")
                if self._wait(self.first_s, ends):
                    break
                self._do(self.second)
                if self.tell_each:
                    self.on_change("second")
                if self._wait(self.second_s, ends):
                    break
        finally:
            self._do(self.second)
            self.on_change("second")

    def _wait(self, seconds: float, ends: float | None) -> bool:
        """True when the loop is over (stopped, or its time is up)."""
        if ends is not None:
            seconds = min(seconds, max(0.0, ends - self.clock()))
        return self.stopped.wait(seconds) or (ends is not None and self.clock() >= ends)

    def _do(self, change: Callable[[], object]) -> None:
        try:
            change()
        except Exception as error:  # a server that does not start again: said, the loop goes on
            self.on_error(error)

    def stop(self) -> None:
        """End the loop now and wait until the member is back in its second state."""
        self.stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(STOP_WAIT_S)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def slowdown(server, ms: float, for_s: float | None = None, **options) -> Cycle:
    """A remote member's server (members.remote.MemberServer) stopped ms out of every
    ms + SLOW_RUN_S x 1000: each answer up to ms late."""
    return Cycle(server.hang, server.resume, ms / 1000.0, SLOW_RUN_S, for_s, **options)


def flapping(
    down: Callable[[], object],
    up: Callable[[], object],
    every_s: float,
    down_s: float | None = None,
    for_s: float | None = None,
    **options,
) -> Cycle:
    """down() then up() after down_s (default: half of every_s), every every_s seconds."""
    down_s = every_s / 2 if down_s is None else down_s
    return Cycle(down, up, down_s, every_s - down_s, for_s, tell_each=True, **options)


def server_flapping(
    server, every_s: float, down_s: float | None = None, for_s: float | None = None, **options
) -> Cycle:
    """A remote member's server killed (SIGKILL to its process group) and served again."""
    for_runs = server.started_by_run()  # a server the runs started stays theirs
    return flapping(server.kill, lambda: server.serve_again(for_runs), every_s, down_s, for_s, **options)
