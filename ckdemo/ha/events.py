"""The HA log: one line per event (member failed, recovery attempt, recovered, resynchronised)."""
from __future__ import annotations

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
        return f"HA group {self.group} member {self.member} {self.event}" + \
            (f": {self.detail}" if self.detail else "")

    def line(self) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.when))
        return f"{stamp} HA group {self.group} member {self.member} {self.event}" + \
            (f": {self.detail}" if self.detail else "")


@dataclass
class HALog:
    """Keeps every event in memory; appends lines to haLogPath when haLogStatus is enabled."""
    path: Path | None = None
    wall_clock: Callable[[], float] = time.time
    events: list[HAEvent] = field(default_factory=list)
    _shown: int = 0

    def unseen(self) -> list[HAEvent]:
        """Events since the last call, for the screen (the log file has them all)."""
        new = self.events[self._shown:]
        self._shown = len(self.events)
        return new

    def record(self, group: str, member: str, event: str, detail: str = "") -> HAEvent:
        item = HAEvent(self.wall_clock(), group, member, event, detail)
        self.events.append(item)
        if self.path is not None:
            try:
                with open(self.path, "a") as log:
                    log.write(item.line() + "\n")
            except OSError:
                self.path = None  # an unwritable log must not break the call it reports on
        return item
