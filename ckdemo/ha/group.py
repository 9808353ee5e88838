"""The HA virtual slot: load balancing, failover, detection and auto-recovery over members.

It offers the operations of a physical slot, so a handler cannot tell the two apart. Nothing
here knows the menu or python-pkcs11: members are physical slots from ckdemo.members.
"""
from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, TypeVar

from ..codes import (CKR_DEVICE_ERROR, CKR_FUNCTION_NOT_SUPPORTED, CKR_MECHANISM_INVALID,
                     CKR_NO_EVENT, CKR_USER_ALREADY_LOGGED_IN, CKR_USER_NOT_LOGGED_IN, SESSION_LOST,
                     CKRError, is_member_fatal)
from ..model import CKU_USER, LibraryInfo, MechanismInfo, SlotInfo, TokenInfo
from .admin import Administration
from .events import HALog
from .failover import MemberFailed, ObjectMissing, no_member_left
from .member import HAMember, MemberState
from .vault import Vault
from .pin_lock import PIN_FLAG_NAMES, PIN_FLAGS, PinLock
from .policy import RecoveryPolicy
from .recovery import Recovery
from .synchronization import Synchronizer
from .session import VirtualSession

T = TypeVar("T")
ACTIVE = MemberState.ACTIVE
HA_SLOT_DESCRIPTION = "HA Virtual Card Slot"  # seed: "slot#3 - HA Virtual Card Slot"


class HAGroup(Administration):
    fallback_description = HA_SLOT_DESCRIPTION

    def __init__(self, label: str, serial: str, members: list[HAMember], policy: RecoveryPolicy,
                 log: HALog | None = None, slot_id: int = 0, balance: bool = True,
                 state_lock: Callable[[], AbstractContextManager] = nullcontext,
                 synchronize_on_recovery: bool = True, pin_lock: PinLock | None = None,
                 vault: Vault | None = None) -> None:
        self.label = label
        self.serial = serial
        self.members = members
        self.policy = policy
        self.log = log or HALog()
        self.slot_id = slot_id
        self.balance = balance  # False: every call goes to the first active member (CKDemo nolb)
        # serialises changes to what the members hold with every other process on the state
        # folder (replication, synchronization, recovery); always taken before self.lock
        self.state_lock = state_lock
        self.credentials: tuple[int, str] | None = None  # HA login, kept in memory only
        self.epoch = 0  # sessions opened before every member was lost are void (lose_everything)
        # member serial -> identities of keys it generated and failed before they were copied:
        # another member made the key the application got; these are replaced when it is back
        self.orphans: dict[str, set[tuple]] = {}
        self.pin_lock = pin_lock or PinLock()  # wrong user PINs in a row, and the lock after N
        # what one token would answer of each key, and the blobs of unextractable keys (vault.py)
        self.vault = vault if vault is not None else Vault()
        self.sessions: dict[int, Any] = {}
        self._next_member = 0
        self.lock = threading.RLock()  # member state, round robin and anchors across threads
        self.slot_events = 0  # member failures and recoveries not yet reported as slot events
        # HASynchronize: bring a recovered member up to date (and complete objects at HA login)
        self.synchronize_on_recovery = synchronize_on_recovery
        self.completed_at_login = 0  # objects the last HA login copied to members that lacked them
        self.recovery = Recovery(self)
        self.synchronizer = Synchronizer(self)
        for index, member in enumerate(members):
            member.index = index
            if not member.active:
                self.recovery.disconnect(member, "not found at start")

    # ---- choosing members and running calls with failover -----------------------------------
    def active_members(self) -> list[HAMember]:
        return [m for m in self.members if m.active]

    def primary(self) -> HAMember:
        self.before_call()
        active = self.active_members()
        if not active:
            raise CKRError(CKR_DEVICE_ERROR, "HA", "no HA group member is available")
        return active[0]

    # ---- recovery and synchronisation: owned objects (recovery.py, synchronization.py) ---------
    def before_call(self) -> None:
        """The seed's auto-recovery, at the start of every call on the HA slot."""
        self.recovery.before_call()

    def member_failed(self, member: HAMember, error: CKRError) -> None:
        self.recovery.member_failed(member, error)

    def recover_now(self) -> list[tuple[HAMember, bool]]:
        return self.recovery.recover_now()

    def synchronize(self, why: str = "synchronised") -> int:
        return self.synchronizer.synchronize(why)

    def incomplete(self) -> int:
        return self.synchronizer.incomplete()

    def complete_objects(self) -> int:
        return self.synchronizer.complete_objects()

    def lose_everything(self) -> None:
        """Every member is lost: as on Luna, the login and every session go with them. Members
        that come back are not logged in; the application must finalize, initialize (open new
        sessions) and log in again (docs/HA.md, "Losing every member")."""
        with self.lock:
            self.credentials = None
            self.epoch += 1
        self.log.record(self.serial, "*", "lost",
                        "every member is lost: the login and every session are gone (the "
                        "application must C_Finalize, C_Initialize and log in again)")

    def note_slot_event(self) -> None:
        """A member failed or came back: one more event for C_WaitForSlotEvent."""
        with self.lock:
            self.slot_events += 1

    def source_member(self, exclude: HAMember) -> HAMember | None:
        for member in self.active_members():
            if member is not exclude:
                return member
        return None

    def _pick(self, skip, mechanism: int | None) -> HAMember | None:
        """Least-busy round robin (as Luna HA): of the active members not in `skip` and not
        known to refuse `mechanism`, the one with the fewest calls in flight, ties broken in
        turn; None when there is none. One caller thread gets plain round robin; several
        spread out. One pass under the lock: this runs on every load-balanced call."""
        members = self.members
        count = len(members)
        with self.lock:
            if self.balance and not skip:  # the usual case: the next in turn is free and able
                member = members[self._next_member]
                if member.state is ACTIVE and not member.outstanding and mechanism not in member.refused:
                    self._next_member = (member.index + 1) % count
                    member.outstanding = 1
                    return member
            start = self._next_member if self.balance else 0
            chosen = None
            for step in range(count):
                member = members[(start + step) % count]
                if member.state is not ACTIVE or member in skip or mechanism in member.refused:
                    continue
                if chosen is None or member.outstanding < chosen.outstanding:
                    chosen = member
                    if not self.balance or not member.outstanding:
                        break
            if chosen is not None:
                if self.balance:
                    self._next_member = (chosen.index + 1) % count
                chosen.outstanding += 1
            return chosen

    def run(self, function: str, op: Callable[[HAMember], T], mechanism: int | None = None,
            exclude: list[HAMember] = ()) -> T:
        """A single-part call on one member, repeated on another when the member fails.

        A member that refuses the mechanism (a remote member's transport cannot carry its
        parameters) is not failed: the call goes to a member that can, and that member is
        skipped for the mechanism from then on."""
        self.recovery.before_call()  # (before_call() spelt out: this runs on every balanced call)
        failures: list[MemberFailed] = []
        refused: list[HAMember] = []
        refused_error: CKRError | None = None
        missing: list[HAMember] = []
        skip = exclude
        while True:
            member = self._pick(skip, mechanism)
            if member is None and mechanism is not None and not refused:
                member = self._pick(skip, None)  # every member refused it before: ask again
            if member is None:
                if refused_error is not None:
                    raise refused_error
                raise no_member_left(function, failures)
            try:
                result = self.call_member(member, op, member)
            except MemberFailed as exc:
                failures.append(exc)
                continue
            except CKRError as exc:
                if exc.ckr == CKR_MECHANISM_INVALID and mechanism is not None:
                    refused.append(member)
                    refused_error = exc
                    skip = [*exclude, *refused, *missing]
                    continue
                if isinstance(exc, ObjectMissing):
                    missing.append(member)
                    skip = [*exclude, *refused, *missing]
                    if len(missing) < len([m for m in self.active_members() if m not in exclude]):
                        continue
                raise
            finally:
                with self.lock:  # the member is free again (least-busy balancing)
                    member.outstanding -= 1
            member.calls += 1
            if refused:
                for other in refused:
                    other.refused.add(mechanism)
            return result

    def on_all(self, function: str, op: Callable[[HAMember], T]) -> list[tuple[HAMember, T]]:
        """A key-management call on every active member; a member failure fails only the member."""
        with self.state_lock():
            return self._on_all(function, op)

    def _on_all(self, function: str, op: Callable[[HAMember], T]) -> list[tuple[HAMember, T]]:
        self.before_call()
        done = []
        failures: list[MemberFailed] = []
        for member in self.active_members():
            try:
                done.append((member, self.call_member(member, op, member)))
            except ObjectMissing:
                continue  # the object never reached this member: nothing to do there
            except MemberFailed as exc:
                failures.append(exc)
            member.calls += 1
        if not done:
            raise no_member_left(function, failures)
        return done

    def call_member(self, member: HAMember, fn: Callable[..., T], *args) -> T:
        """fn(*args) on one member. A member-fatal result fails the member and raises
        MemberFailed (chained to the member's own error); any other result is the
        application's answer."""
        try:
            return fn(*args)  # (a remote member's socket keeps the call's deadline)
        except MemberFailed:
            raise
        except CKRError as exc:
            if not self.is_member_failure(exc):
                raise
            self.member_failed(member, exc)
            raise MemberFailed(member, exc) from exc

    def is_member_failure(self, exc: CKRError) -> bool:
        if is_member_fatal(exc.ckr):
            return True
        # a member that forgot our sessions or login was restarted behind our back; "not logged
        # in" means that only under a user login: the SO is refused private objects as an answer
        # (an SO's C_GenerateKey of a private key once took every member out of the group)
        if exc.ckr == CKR_USER_NOT_LOGGED_IN:
            return self.credentials is not None and self.credentials[0] == CKU_USER
        return exc.ckr in SESSION_LOST

    def session_for(self, member: HAMember):
        """The member's anchor session (opened on demand; it carries the login)."""
        anchor = member.anchor
        if anchor is not None:
            return anchor
        with self.lock:
            if member.anchor is not None:
                return member.anchor
            member.anchor = member.slot.open_session(rw=True)
            if self.credentials:
                try:
                    member.anchor.login(*self.credentials)
                except CKRError as exc:
                    if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                        raise
        return member.anchor

    # ---- the slot interface --------------------------------------------------------------------
    def description(self) -> str:
        return HA_SLOT_DESCRIPTION

    def slot_info(self) -> SlotInfo:
        self.before_call()
        return SlotInfo(self.slot_id, HA_SLOT_DESCRIPTION, "ckdemo HA", 0x1, ("CKF_TOKEN_PRESENT",),
                        (1, 0), (1, 0))

    def token_info(self) -> TokenInfo:
        info = self.run("C_GetTokenInfo", lambda m: m.slot.token_info())
        rw = sum(1 for s in self.sessions.values() if s.rw)
        flags = (info.flags & ~PIN_FLAGS) | self.pin_lock.flags()  # the HA slot's own count
        names = tuple(n for n in info.flag_names if n not in PIN_FLAG_NAMES.values()) + tuple(
            name for bit, name in PIN_FLAG_NAMES.items() if flags & bit)
        return TokenInfo(self.label, "ckdemo HA", "HA virtual token", self.serial, flags,
                         names, info.max_session_count, len(self.sessions),
                         info.max_rw_session_count, rw, info.max_pin_len, info.min_pin_len,
                         info.total_public_memory, info.free_public_memory,
                         info.total_private_memory, info.free_private_memory,
                         info.hardware_version, info.firmware_version, info.utc_time)

    def mechanisms(self) -> list[tuple[int, str]]:
        return self.run("C_GetMechanismList", lambda m: m.slot.mechanisms())

    def mechanism_info(self, mechanism: int) -> MechanismInfo:
        return self.run("C_GetMechanismInfo", lambda m: m.slot.mechanism_info(mechanism))

    def library_info(self) -> LibraryInfo:
        info = self.run("C_GetInfo", lambda m: m.slot.library_info())
        return LibraryInfo(info.cryptoki_version, "ckdemo HA",
                           f"HA group {self.label} over {len(self.members)} members",
                           (1, 0), info.path)

    def init_token(self, so_pin: str, label: str) -> None:
        raise CKRError(CKR_FUNCTION_NOT_SUPPORTED, "C_InitToken",
                       "the HA virtual slot cannot be initialised; initialise each member's slot")

    def login_counter(self) -> "HALoginCounter":
        return HALoginCounter(self)

    def extractability_note(self, extractable: bool) -> str:
        """Every HA key is generated CKA_EXTRACTABLE with CKA_WRAP_WITH_TRUSTED, so that members
        can copy it: say what "Extractable? n" still promises."""
        if extractable:
            return ""
        return ("HA slot: no one holding the user PIN can read or wrap this key in the clear; "
                "members copy it only wrapped under the group's domain keys, CKA_WRAP_WITH_TRUSTED, "
                "which unwrap nothing but sensitive, trusted-only keys")

    def wait_for_event(self) -> int:
        """The virtual slot's events are its members' comings and goings: one event for each
        member that failed or came back since the last wait (C_WaitForSlotEvent, no blocking)."""
        self.before_call()
        with self.lock:
            if self.slot_events:
                self.slot_events -= 1
                return self.slot_id
        raise CKRError(CKR_NO_EVENT, "C_WaitForSlotEvent")

    def open_session(self, rw: bool = True) -> VirtualSession:
        self.primary()  # fails like a device when no member is left
        session = VirtualSession(self, rw)  # its handle is unique in the process (handles.py)
        with self.lock:
            self.sessions[session.handle] = session
        return session

    def exports(self, symbol: str) -> list[str]:
        """Libraries behind any member that export `symbol` (vendor extension detection)."""
        paths: list[str] = []
        for member in self.members:
            if member.slot is not None:
                paths += [p for p in member.slot.exports(symbol) if p not in paths]
        return paths

    def __repr__(self) -> str:
        return f"HAGroup({self.label}, {self.serial}, {self.members})"


class HALoginCounter:
    """The HA slot's count of wrong user PINs, for a server that checked a PIN itself."""

    def __init__(self, group: HAGroup) -> None:
        self.group = group

    def check(self, function: str = "C_Login") -> None:
        self.group.pin_lock.check(function)

    def failed(self, function: str = "C_Login") -> CKRError:
        return self.group.pin_failed()

    def succeeded(self) -> None:
        self.group.pin_lock.succeeded()
