"""A slot as serve's clients see it: its id, and what every connection shares about it (the
shared login, session counts, session objects' owners, slot events taken so far, mechanisms)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from ..codes import CKR_NO_EVENT, CKRError
from ..slots import Slot
from .logins import SharedLogin

MAX_EVENTS_AT_ONCE = 1000  # a slot that reports events without end cannot hold a call forever


@dataclass
class ExposedSlot:
    """A slot as the clients see it: its id here, and what all connections share about it."""

    slot_id: int
    slot: Slot
    login: SharedLogin
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: int = 0  # client sessions open on it, all connections together
    # session objects (CKA_TOKEN false), by (class, CKA_ID, label) -> the connections that made
    # them. The members see one application (this server), so they would show every
    # connection's session objects to all; PKCS#11 gives each application its own, and so does
    # ConnectionState.usable. By identity, not handle: the HA slot numbers one object differently in
    # each connection's session (an application's own are known by handle: ConnectionState.visible).
    owners: dict[tuple, dict[int, int]] = field(default_factory=dict)  # identity -> connection -> objects
    # slot events taken from the slot so far; each connection counts the ones it has been told,
    # so every application sees each event once, and none from before it connected
    events: int = 0
    events_supported: bool = True
    _mechanisms: frozenset[int] | None = None

    def mechanisms(self, refresh: bool = False) -> list[int]:
        if refresh or self._mechanisms is None:
            codes = [code for code, _ in self.slot.mechanisms()]
            self._mechanisms = frozenset(codes)
            return codes
        return sorted(self._mechanisms)

    def offers(self, mechanism: int) -> bool:
        if self._mechanisms is None or mechanism not in self._mechanisms:
            self.mechanisms(refresh=True)  # members come and go: ask again before refusing
        return mechanism in (self._mechanisms or ())

    def still_offers(self, mechanism: int) -> bool:
        """offers() without asking the slot: what a C_*Init answered before it came relies on."""
        return self._mechanisms is not None and mechanism in self._mechanisms

    def description(self) -> str:
        return self.slot.description()

    def collect_events(self) -> int:
        """Take every event the slot has (without blocking); the count of all taken so far."""
        with self.lock:
            for _ in range(MAX_EVENTS_AT_ONCE):
                try:
                    self.slot.wait_for_event()
                except CKRError as error:
                    if error.ckr != CKR_NO_EVENT:
                        self.events_supported = False
                    break
                self.events += 1
            return self.events

    def token_present(self) -> bool:
        try:
            return self.slot.slot_info().token_present
        except CKRError:
            return False


def expose(slots: list[Slot], log: Callable[[str], None]) -> list[ExposedSlot]:
    """Slot ids as the slots give them when those are distinct (the HA slot's 0x5000 ...),
    else numbered from 0 (remote members all say 17)."""
    ids = [slot.slot_id for slot in slots]
    if None in ids or len(set(ids)) != len(ids):
        ids = list(range(len(slots)))
    return [
        ExposedSlot(slot_id, slot, SharedLogin(slot, lambda line, i=slot_id: log(f"slot {i:#x}: {line}")))
        for slot_id, slot in zip(ids, slots)
    ]
