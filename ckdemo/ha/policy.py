"""Luna's auto-recovery rule (the pseudocode of its documentation, docs/HA.md) as a small object
with an injected clock.

    if (disconnected_member > 0 and recover_attempt_count < N
            and time_now - last_recover_attempt > X) then perform auto recovery ...

Each disconnected member keeps its own counters, so several failed members recover
independently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

DEFAULT_RECOVERY_INTERVAL_S = 60.0  # Luna's X, "pre-set to one minute"
DEFAULT_RECOVERY_RETRIES = -1  # Luna's N, "effectively infinite"; 0 turns auto-recovery off


@dataclass
class RecoveryState:
    """One disconnected member's counters, named as in Luna's pseudocode."""

    last_recover_attempt: float
    recover_attempt_count: int = 0


class RecoveryPolicy:
    def __init__(
        self,
        interval_s: float = DEFAULT_RECOVERY_INTERVAL_S,
        retries: int = DEFAULT_RECOVERY_RETRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.retries = retries
        self.clock = clock

    def disconnected(self) -> RecoveryState:
        """State for a member that has just failed: the first attempt comes X seconds later."""
        return RecoveryState(last_recover_attempt=self.clock())

    def readmitted(self) -> RecoveryState:
        """State for a member let back in by hand (HA Init): the next call tries it at once."""
        return RecoveryState(last_recover_attempt=self.clock() - self.interval_s - 1)

    def configure(self, interval_s: float | None = None, retries: int | None = None) -> None:
        """Change X and/or N while members may be down (lunacm: hagroup interval / retry)."""
        if interval_s is not None:
            self.interval_s = interval_s
        if retries is not None:
            self.retries = retries

    def due(self, state: RecoveryState) -> bool:
        if self.retries == 0:
            return False
        if 0 < self.retries <= state.recover_attempt_count:
            return False
        return self.clock() - state.last_recover_attempt > self.interval_s

    def attempted(self, state: RecoveryState, recovered: bool) -> None:
        state.last_recover_attempt = self.clock()
        if recovered:
            state.recover_attempt_count = 0
        else:
            state.recover_attempt_count += 1

    def exhausted(self, state: RecoveryState) -> bool:
        return self.retries == 0 or 0 < self.retries <= state.recover_attempt_count
