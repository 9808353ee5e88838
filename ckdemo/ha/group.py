"""The HA virtual slot: load balancing, failover, detection and auto-recovery over members.

It offers the operations of a physical slot, so a handler cannot tell the two apart. Nothing
here knows the menu or python-pkcs11: members are physical slots from ckdemo.members.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Iterator

from ..codes import (
    CKR_DEVICE_ERROR,
    CKR_FUNCTION_NOT_SUPPORTED,
    CKR_NO_EVENT,
    CKR_USER_ALREADY_LOGGED_IN,
    CKR_USER_NOT_LOGGED_IN,
    SESSION_LOST,
    CKRError,
    is_member_fatal,
)
from ..model import CKU_USER, LibraryInfo, MechanismInfo, SlotInfo, TokenInfo
from ..slots import LoginCounter, Slot, fan_out
from .admin import Administration
from .events import HALog
from .failover import Failover, MemberFailed
from .journal import Journal
from .marks import Marks
from .member import HAMember
from .vault import Vault
from .pin_lock import PIN_FLAG_NAMES, PIN_FLAGS, PinLock
from .policy import RecoveryPolicy
from .recovery import (
    ACTIVE_BASIC,
    ACTIVE_ENHANCED,
    ATTEMPT_WAIT_S,
    RECOVERY_MODES,
    BackgroundRecovery,
    Recovery,
)
from .synchronization import Synchronizer
from .session import VirtualSession

HA_SLOT_DESCRIPTION = "HA Virtual Card Slot"  # CKDemo on Luna: "slot#3 - HA Virtual Card Slot"


class HAGroup(Slot):
    fallback_description = HA_SLOT_DESCRIPTION

    def __init__(
        self,
        label: str,
        serial: str,
        members: list[HAMember],
        policy: RecoveryPolicy,
        log: HALog | None = None,
        slot_id: int = 0,
        balance: bool = True,
        state_lock: Callable[[], AbstractContextManager] = nullcontext,
        synchronize_on_recovery: bool = True,
        pin_lock: PinLock | None = None,
        vault: Vault | None = None,
        recovery_mode: str = ACTIVE_BASIC,
        journal: Journal | None = None,
    ) -> None:
        self.label = label
        self.serial = serial
        self.members = members
        self.policy = policy
        self.log = log or HALog()
        self.slot_id = slot_id
        # serialises changes to what the members hold with every other process on the state
        # folder (replication, synchronization, recovery); always taken before self.lock; a
        # group with no state folder serialises its own threads (a member rejoins under it)
        if state_lock is nullcontext:
            own = threading.RLock()
            state_lock = lambda: own  # noqa: E731
        self._state_lock = state_lock
        self._holding = threading.local()  # how deep this thread holds the state lock
        self.credentials: tuple[int, str] | None = None  # HA login, kept in memory only
        self.epoch = 0  # sessions opened before every member was lost are void (lose_everything)
        # member serial -> identities of keys it generated and failed before they were copied:
        # another member made the key the application got; these are replaced when it is back
        self.orphans: dict[str, set[tuple]] = {}
        self.pin_lock = pin_lock or PinLock()  # wrong user PINs in a row, and the lock after N
        # what one token would answer of each key, and the blobs of unextractable keys (vault.py)
        self.vault = vault if vault is not None else Vault()
        self.sessions: dict[int, Any] = {}
        # the changes made on members, and each member's mark of the last one it took: a member
        # that comes back is brought up to date in what changed meanwhile (journal.py, marks.py)
        self.journal = journal if journal is not None else Journal()
        self.marks = Marks(serial)
        # identity -> its place in searches: the order the group made or first saw each object
        self.order: dict[tuple, int] = {}
        self._places = itertools.count(1)
        # identity -> CKA_ALWAYS_AUTHENTICATE of a private key (its uses log in on members)
        self.reauthenticated: dict[tuple, bool] = {}
        self.lock = threading.RLock()  # member state, round robin and anchors across threads
        self.slot_events = 0  # member failures and recoveries not yet reported as slot events
        # HASynchronize: bring a recovered member up to date (and complete objects at HA login)
        self.synchronize_on_recovery = synchronize_on_recovery
        self.completed_at_login = 0  # objects the last HA login copied to members that lacked them
        self.recovery = Recovery(self)
        self.admin = Administration(self)  # HA Init, HA login, HA Status, fault injection
        # which member serves each call, and what a member failure is (failover.py)
        self.failover = Failover(
            members,
            session_for=self.session_for,
            is_failure=self.is_member_failure,
            failed=self.member_failed,
            before_call=self.recovery.before_call,
            lock=self.lock,
            balance=balance,
        )
        self.synchronizer = Synchronizer(self)
        for index, member in enumerate(members):
            member.index = index
            if not member.active:
                self.recovery.disconnect(member, "not found at start")
        self.background: BackgroundRecovery | None = None
        self.recovery_mode = ACTIVE_BASIC
        self.set_recovery_mode(recovery_mode)

    def set_recovery_mode(self, mode: str) -> None:
        """activeBasic: recovery inside application calls (Luna's documented rule); activeEnhanced:
        in the background, with no call needed (lunacm: hagroup recoverymode -mode ...)."""
        if mode not in RECOVERY_MODES:
            raise ValueError(f"recovery mode {mode!r}: one of {', '.join(RECOVERY_MODES)}")
        if mode == self.recovery_mode and (mode == ACTIVE_BASIC or self.background is not None):
            return
        if self.background is not None:
            self.background.stop()
            self.background = None
        self.recovery_mode = mode
        if mode == ACTIVE_ENHANCED:
            self.background = BackgroundRecovery(
                self.recovery,
                self.policy,
                self.serial,
                log=lambda line: self.log.record(self.serial, "-", "background-recovery", line),
            ).start()

    def show_recovery_inside_calls(self) -> None:
        """A call that starts a recovery attempt waits for its end, so a person at the menu sees
        the recovery inside that call as CKDemo shows it (an application's call waits at most
        recovery.CALL_BUDGET_S, and the member serves again when its catch-up is done)."""
        self.recovery.call_budget_s = ATTEMPT_WAIT_S

    def close(self) -> None:
        """Stop what runs in the background (activeEnhanced's recovery thread, members being
        brought up to date)."""
        if self.background is not None:
            self.background.stop()
            self.background = None
        self.recovery.settle()

    # ---- members ------------------------------------------------------------------------------
    @property
    def balance(self) -> bool:
        """False: every call goes to the first active member (CKDemo nolb)."""
        return self.failover.balance

    @balance.setter
    def balance(self, on: bool) -> None:
        self.failover.balance = on

    def active_members(self) -> list[HAMember]:
        return self.failover.active()

    def primary(self) -> HAMember:
        self.before_call()
        active = self.active_members()
        if not active:
            raise CKRError(CKR_DEVICE_ERROR, "HA", "no HA group member is available")
        return next((m for m in active if not m.standby), active[0])

    # ---- recovery and synchronisation: owned objects (recovery.py, synchronization.py) ---------
    def before_call(self) -> None:
        """Luna's auto-recovery, at the start of every call on the HA slot."""
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
        self.log.record(
            self.serial,
            "*",
            "lost",
            "every member is lost: the login and every session are gone (the "
            "application must C_Finalize, C_Initialize and log in again)",
        )

    @contextmanager
    def change(self) -> Iterator[list[tuple]]:
        """A change made on every active member, under the state lock: numbered in the journal
        before any member is touched; the caller adds the identities it touched to the list
        yielded. Every member that took it is then marked with its number. A member recovered
        before a user login is not: its private objects are not up to date yet."""
        with self.state_lock():
            number = self.journal.begin()
            touched: list[tuple] = []
            try:
                yield touched
            finally:
                self.journal.end(number, touched)
                # (a change that touched nothing, or was refused and undone, is marked too: a
                # number left unmarked would be a hole for every other process's journal)
                self._mark_members(self.journal.mark(number))

    @contextmanager
    def state_lock(self) -> Iterator[None]:
        with self._state_lock():
            self._holding.depth = getattr(self._holding, "depth", 0) + 1
            try:
                yield
            finally:
                self._holding.depth -= 1

    def holds_state_lock(self) -> bool:
        """Does this thread hold the state lock (a change, a login, a recovery)?"""
        return getattr(self._holding, "depth", 0) > 0

    def vouch(self, members, lacking) -> None:
        """After a synchronisation (the state lock is held): the members that now hold what the
        others hold get a mark (their first, maybe); those that lack something lose theirs."""
        mark = self.journal.mark()
        for member in members:
            try:
                with fan_out():  # (as _mark_members)
                    self._vouch_one(member, lacking, mark)
            except MemberFailed:
                continue
            except CKRError as exc:
                self.log.record(self.serial, member.serial, "journal-mark", f"not written: {exc}")

    def _vouch_one(self, member, lacking, mark: bytes) -> None:
        if member in lacking:
            self.failover.pinned(member, self.marks.drop, self.session_for(member), member)
        elif not member.private_unsynced:
            self.failover.pinned(member, self.marks.write, self.session_for(member), member, mark)

    def _mark_members(self, mark: bytes) -> None:
        for member in self.active_members():
            if member.private_unsynced:
                continue
            try:
                with fan_out():  # one of several members marked alike: a member late by far is failed
                    self.failover.pinned(member, self.marks.advance, self.session_for(member), member, mark)
            except MemberFailed:
                continue  # failed now: it comes back with the older mark, and gets this change
            except CKRError as exc:  # its mark lags: its next recovery replays more, or compares all
                self.log.record(self.serial, member.serial, "journal-mark", f"not written: {exc}")

    def place(self, key: tuple) -> int:
        """The next place in search order, for an object the group makes or sees first."""
        with self.lock:
            place = self.order[key] = self.order.get(key) or next(self._places)
        return place

    def note_slot_event(self) -> None:
        """A member failed or came back: one more event for C_WaitForSlotEvent."""
        with self.lock:
            self.slot_events += 1

    def source_member(self, exclude: HAMember) -> HAMember | None:
        for member in self.active_members():
            if member is not exclude:
                return member
        return None

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

    # ---- HA functions (admin.py) ----------------------------------------------------------------
    def ha_init(self, so_pin: str):
        return self.admin.ha_init(so_pin)

    def login(self, user_type: int, pin: str) -> None:
        self.admin.login(user_type, pin)

    def logout(self) -> None:
        self.admin.logout()

    def pin_failed(self) -> CKRError:
        return self.admin.pin_failed()

    def pin_unlocked(self) -> int:
        return self.admin.pin_unlocked()

    def status(self) -> list[tuple[HAMember, int]]:
        return self.admin.status()

    def recovery_exhausted(self) -> list[tuple[HAMember, int]]:
        return self.admin.recovery_exhausted()

    def member(self, ref: str) -> HAMember:
        return self.admin.member(ref)

    def fail_member(self, member: HAMember) -> str:
        return self.admin.fail_member(member)

    def restore_member(self, member: HAMember) -> str:
        return self.admin.restore_member(member)

    def hang_member(self, member: HAMember) -> str:
        return self.admin.hang_member(member)

    def resume_member(self, member: HAMember) -> str:
        return self.admin.resume_member(member)

    # ---- the slot interface --------------------------------------------------------------------
    def description(self) -> str:
        return HA_SLOT_DESCRIPTION

    def slot_info(self) -> SlotInfo:
        self.before_call()
        return SlotInfo(
            self.slot_id, HA_SLOT_DESCRIPTION, "ckdemo HA", 0x1, ("CKF_TOKEN_PRESENT",), (1, 0), (1, 0)
        )

    def token_info(self) -> TokenInfo:
        info = self.failover.one("C_GetTokenInfo", lambda _, m: m.slot.token_info(), session=False)
        rw = sum(1 for s in self.sessions.values() if s.rw)
        flags = (info.flags & ~PIN_FLAGS) | self.pin_lock.flags()  # the HA slot's own count
        names = tuple(n for n in info.flag_names if n not in PIN_FLAG_NAMES.values()) + tuple(
            name for bit, name in PIN_FLAG_NAMES.items() if flags & bit
        )
        return TokenInfo(
            self.label,
            "ckdemo HA",
            "HA virtual token",
            self.serial,
            flags,
            names,
            info.max_session_count,
            len(self.sessions),
            info.max_rw_session_count,
            rw,
            info.max_pin_len,
            info.min_pin_len,
            info.total_public_memory,
            info.free_public_memory,
            info.total_private_memory,
            info.free_private_memory,
            info.hardware_version,
            info.firmware_version,
            info.utc_time,
        )

    def mechanisms(self) -> list[tuple[int, str]]:
        return self.failover.one("C_GetMechanismList", lambda _, m: m.slot.mechanisms(), session=False)

    def mechanism_info(self, mechanism: int) -> MechanismInfo:
        return self.failover.one(
            "C_GetMechanismInfo", lambda _, m: m.slot.mechanism_info(mechanism), session=False
        )

    def library_info(self) -> LibraryInfo:
        info = self.failover.one("C_GetInfo", lambda _, m: m.slot.library_info(), session=False)
        return LibraryInfo(
            info.cryptoki_version,
            "ckdemo HA",
            f"HA group {self.label} over {len(self.members)} members",
            (1, 0),
            info.path,
        )

    def init_token(self, so_pin: str, label: str) -> None:
        raise CKRError(
            CKR_FUNCTION_NOT_SUPPORTED,
            "C_InitToken",
            "the HA virtual slot cannot be initialised; initialise each member's slot",
        )

    def login_counter(self) -> "HALoginCounter":
        return HALoginCounter(self)

    def extractability_note(self, extractable: bool) -> str:
        """Every HA key is generated CKA_EXTRACTABLE with CKA_WRAP_WITH_TRUSTED, so that members
        can copy it: say what "Extractable? n" still promises."""
        if extractable:
            return ""
        return (
            "HA slot: no one holding the user PIN can read or wrap this key in the clear; "
            "members copy it only wrapped under the group's domain keys, CKA_WRAP_WITH_TRUSTED, "
            "which unwrap nothing but sensitive, trusted-only keys"
        )

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

    def member_calls(self) -> dict[str, int]:
        return {m.serial: m.calls for m in self.members}

    def exports(self, symbol: str) -> list[str]:
        """Libraries behind any member that export `symbol` (vendor extension detection)."""
        paths: list[str] = []
        for member in self.members:
            if member.slot is not None:
                paths += [p for p in member.slot.exports(symbol) if p not in paths]
        return paths

    def __repr__(self) -> str:
        return f"HAGroup({self.label}, {self.serial}, {self.members})"


class HALoginCounter(LoginCounter):
    """The HA slot's count of wrong user PINs, for a server that checked a PIN itself."""

    def __init__(self, group: HAGroup) -> None:
        self.group = group

    def check(self, function: str = "C_Login") -> None:
        self.group.pin_lock.check(function)

    def failed(self, function: str = "C_Login") -> CKRError:
        return self.group.pin_failed()

    def succeeded(self) -> None:
        self.group.pin_lock.succeeded()
