"""The members a soak loses for good: those automatic recovery gives up on (its reconnAtt
attempts spent, `hagroup retry`; or recovery off) and those still out of service when the run
ends. Each member given up is said once, as it happens; at the end the soak waits only for
members that can still come back, and reaches the others through their own slot (the user
logged in there) to compare them and remove the run's objects, or says which member keeps how
many of them and how to remove them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from .codes import CKR_DEVICE_ERROR, CKR_USER_ALREADY_LOGGED_IN, CKRError
from .model import CKA_LABEL, CKU_USER


@dataclass
class GivenUp:
    """A member automatic recovery gave up on during the run."""

    t_s: float  # when the soak saw it (seconds since the workload began)
    member: str  # serial
    attempts: int  # recovery attempts made
    retry: int  # reconnAtt N (0: automatic recovery off)
    interval_s: float  # recovery interval X
    removed: int | None = None  # the run's objects removed through its own slot (None: not reached)

    def line(self) -> str:
        why = (
            "automatic recovery is off (hagroup retry: 0)"
            if self.retry == 0
            else f"{self.attempts} of {self.retry} recovery attempt(s) failed, {self.interval_s:g} s apart"
        )
        return (
            f"soak: member {self.member} given up at {self.t_s:.2f} s: {why}; "
            "it stays out of service for the rest of the run"
        )


@dataclass
class Leftovers:
    """The run's objects a member keeps because the soak could not reach it."""

    member: str
    objects: int | None  # how many (None: the member could not be read)
    why: str  # what stopped the soak from removing them
    remove: str  # how to remove them

    def line(self) -> str:
        count = "an unknown number of" if self.objects is None else str(self.objects)
        return (
            f"leftovers: member {self.member} keeps {count} object(s) of the run ({self.why}); {self.remove}"
        )


class Dropouts:
    """Members the soak lost, noticed as the HA group gives them up."""

    def __init__(self, group, start: float, say: Callable[[str], None]) -> None:
        self.group, self.start, self.say = group, start, say
        self.given_up: list[GivenUp] = []
        self.leftovers: list[Leftovers] = []
        self._reached: dict[str, Any] = {}  # serial -> a logged-in session on its own slot
        self._unreached: dict[str, str] = {}  # serial -> why the run's objects could not be removed

    def check(self) -> None:
        """Says each member given up since the last check (after the HA log grew)."""
        known = {g.member for g in self.given_up}
        policy = self.group.policy
        for member, attempts in self.group.recovery_exhausted():
            if member.serial not in known:
                given = GivenUp(
                    round(time.monotonic() - self.start, 2),
                    member.serial,
                    attempts,
                    policy.retries,
                    policy.interval_s,
                )
                self.given_up.append(given)
                self.say(given.line())

    def can_come_back(self, member) -> bool:
        """Out of service, and automatic recovery will try it again."""
        recovery = member.recovery
        return member.down and recovery is not None and not self.group.policy.exhausted(recovery)

    def reach(self, pin: str) -> None:
        """Every member out of service, opened through its own slot with the user logged in
        (its module re-initialised and the token found again by serial, as a recovery attempt
        does), so it can be compared and cleared; the group does not take it back."""
        for member in self.group.members:
            if member.active:
                continue
            try:
                if member.slot is None:
                    raise CKRError(CKR_DEVICE_ERROR, "C_GetSlotList", "its slot is not found")
                member.slot.reconnect(member.serial)
                session = member.slot.open_session(rw=True)
            except CKRError as exc:
                self._unreached[member.serial] = f"not reachable: {exc}"
                continue
            try:
                session.login(CKU_USER, pin)
            except CKRError as exc:
                if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                    self._unreached[member.serial] = f"the user cannot log in there: {exc}"
                    _quietly(session.close)
                    continue
            self._reached[member.serial] = session

    def clear(self, label: str, tool: str) -> None:
        """The run's objects (label `label`, or a marked copy of it) removed from each member
        reached; the members that could not be reached named with what they keep and the
        pkcs11-tool lines that remove it (`tool`: the command that opens a member's library)."""
        kept: dict[str, int | None] = {}  # serial -> objects of the run still on it (None: unknown)
        for serial, session in self._reached.items():
            try:
                ours = [
                    handle
                    for handle in session.find_objects({})
                    if str(session.get_attributes(handle, [CKA_LABEL]).get(CKA_LABEL) or "").startswith(label)
                ]
                for removed, handle in enumerate(ours):
                    kept[serial] = len(ours) - removed
                    session.destroy_object(handle)
                kept.pop(serial, None)
                self._note_removed(serial, len(ours))
            except CKRError as exc:
                self._unreached[serial] = f"it failed while they were removed: {exc}"
            finally:
                _quietly(session.logout)
                _quietly(session.close)
        self._reached.clear()
        for member in self.group.members:
            if member.serial in self._unreached:
                self.leftovers.append(
                    Leftovers(
                        member.serial,
                        kept.get(member.serial),
                        self._unreached[member.serial],
                        f"once it is: {tool} --token-label {member.label or member.serial} --login "
                        "--list-objects, then the same with --delete-object --type privkey, pubkey "
                        f"or secrkey --id <CKA_ID> for each object labelled {label}",
                    )
                )

    def _note_removed(self, serial: str, removed: int) -> None:
        for given in self.given_up:
            if given.member == serial:
                given.removed = removed

    def as_dict(self) -> dict[str, Any]:
        return {
            "given_up": [asdict(g) for g in self.given_up],
            "leftovers": [asdict(left) for left in self.leftovers],
        }


def _quietly(call) -> None:
    try:
        call()
    except CKRError:
        pass  # the member is out of service: its session ends with it
