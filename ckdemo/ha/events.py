"""The HA log: one line per event (member failed, recovery attempt, recovered, resynchronised)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class HAEvent:
    when: float  # wall-clock time.time(), for the log line
    group: str
    member: str  # member serial
    event: str  # failed, recovery-attempt, recovered, resynchronised, rejected, ...
    detail: str = ""

    def message(self) -> str:
        """The event without its time, as the menu shows it."""
        return f"HA group {self.group} member {self.member} {self.event}" + (
            f": {self.detail}" if self.detail else ""
        )

    def line(self) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.when))
        return f"{stamp} HA group {self.group} member {self.member} {self.event}" + (
            f": {self.detail}" if self.detail else ""
        )


Listener = Callable[[HAEvent], None]


@dataclass
class HALog:
    """Keeps every event in memory; appends lines to haLogPath when haLogStatus is enabled.

    Whoever shows events either asks for the unseen ones now and then (`unseen`), or follows the
    log (`follow`): a follower is called with each event as it is recorded, on the recording
    thread, so a screen can show it between the lines of the call it happened in."""

    path: Path | None = None
    wall_clock: Callable[[], float] = time.time
    events: list[HAEvent] = field(default_factory=list)
    _shown: int = 0
    _followers: list[Listener] = field(default_factory=list, repr=False)
    # events, _shown and followers change together: a recording thread and a reader never see
    # half of it, and file lines keep the order of `events`
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def unseen(self) -> list[HAEvent]:
        """Events since the last call, for the screen (the log file has them all)."""
        with self._lock:
            new = self.events[self._shown :]
            self._shown = len(self.events)
        return new

    def follow(self, listener: Listener) -> list[HAEvent]:
        """From now on `listener(event)` gets each event as it is recorded; returns the events
        not shown yet, which it will not get (so each event reaches the screen once)."""
        with self._lock:
            new = self.events[self._shown :]
            self._shown = len(self.events)
            self._followers.append(listener)
        return new

    def unfollow(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._followers:
                self._followers.remove(listener)

    def record(self, group: str, member: str, event: str, detail: str = "") -> HAEvent:
        item = HAEvent(self.wall_clock(), group, member, event, detail)
        with self._lock:
            self.events.append(item)
            followers = list(self._followers)
            if followers:
                self._shown = len(self.events)  # a follower shows it: not left for unseen()
            if self.path is not None:
                try:
                    with open(self.path, "a") as log:
                        log.write(item.line() + "\n")
                except OSError:
                    self.path = None  # an unwritable log must not break the call it reports on
        for listener in followers:  # outside the lock: a listener may take its own (the screen's)
            listener(item)
        return item
