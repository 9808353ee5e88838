"""The seed's detection and auto-recovery: a member that fails is disconnected; once the policy
says so (every X s, N attempts), it is reconnected, checked to be the same token, logged in
again and brought up to date. Where the attempt runs is Luna's recovery mode:

- activeBasic (the seed, the default): at the start of an application's call on the HA slot;
- activeEnhanced: in a background thread of the group, with no application call needed
  (`BackgroundRecovery`); application calls then never carry a recovery.

Recovery is an object the group owns; what it uses of the group is declared in GroupView.
"""
from __future__ import annotations

import atexit
import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Callable, Protocol

from ..codes import CREDENTIALS_REJECTED, CKR_DEVICE_ERROR, CKR_USER_ALREADY_LOGGED_IN, CKRError
from ..model import CKU_USER
from . import catchup, comparison, replication
from .cleanup import close_quietly
from .member import HAMember, MemberState
if TYPE_CHECKING:
    from .failover import Failover
    from .journal import Journal
    from .marks import Marks
from .events import HALog
from .policy import RecoveryPolicy
from .vault import Vault

_ACTIVE = MemberState.ACTIVE

ACTIVE_BASIC, ACTIVE_ENHANCED = "activeBasic", "activeEnhanced"  # lunacm: hagroup recoverymode
RECOVERY_MODES = (ACTIVE_BASIC, ACTIVE_ENHANCED)
BACKGROUND_POLL_S = 0.5  # how often the background thread looks (at most; X/4 when X is shorter)
BACKGROUND_STOP_S = 5.0  # how long stopping waits for an attempt under way


class GroupView(Protocol):
    """What recovery and synchronisation use of their HA group."""
    serial: str
    members: list[HAMember]
    policy: RecoveryPolicy
    log: HALog
    lock: AbstractContextManager
    state_lock: Callable[[], AbstractContextManager]
    credentials: tuple[int, str] | None
    synchronize_on_recovery: bool
    vault: Vault  # what is kept of each key (vault.py)
    orphans: dict[str, set[tuple]]  # member serial -> keys it made and failed before copying
    failover: Failover  # runs calls on members (failover.py)
    journal: Journal  # the group's changes by number (journal.py)
    marks: Marks  # each member's mark of the last change it took (marks.py)

    def active_members(self) -> list[HAMember]: ...
    def source_member(self, exclude: HAMember) -> HAMember | None: ...
    def session_for(self, member: HAMember): ...
    def is_member_failure(self, exc: CKRError) -> bool: ...
    def note_slot_event(self) -> None: ...
    def lose_everything(self) -> None: ...


class MemberRejected(Exception):
    """A member came back but must not rejoin silently (another token, or an emptied one)."""


class Recovery:
    """Detection and recovery of one HA group's members."""

    def __init__(self, group: GroupView) -> None:
        self.group = group
        self.in_calls = True  # activeBasic; activeEnhanced: the background thread recovers
        self.replays = 0  # recoveries brought up to date from the journal
        self.full_comparisons = 0  # ... by comparing every key and data object
        # when the journal cannot prove a member's state, a recovery off the application's calls
        # (activeEnhanced's thread) compares it with no lock held (comparison.py)
        self.background_comparison = True
        self.comparisons: list[threading.Thread] = []  # under way (joined when recovery stops)

    def before_call(self) -> None:
        if self.in_calls:
            self.recover_due()

    def recover_due(self) -> None:
        """Every member whose attempt is due (the policy's X and N) is tried now."""
        members = self.group.members
        for member in members:
            if member.state is not _ACTIVE:
                break
        else:
            return  # the common case costs one pass, no call and no lock
        if not any(self._due(m) for m in members):
            return
        with self.group.state_lock(), self.group.lock:
            self._recover_due()

    def _due(self, member: HAMember) -> bool:
        recovery = member.recovery
        return member.down and recovery is not None and not member.comparing \
            and self.group.policy.due(recovery)

    def _recover_due(self) -> None:
        for member in self.group.members:
            if self._due(member):
                self._attempt_recovery(member, background=not self.in_calls)

    def recover_now(self) -> list[tuple[HAMember, bool]]:
        """Manual recovery (Luna: `hagroup recover`): every member that is down is tried now,
        whatever X and N say; a success resets its counters as an automatic one does."""
        tried = []
        with self.group.state_lock(), self.group.lock:
            for member in self.group.members:
                if member.down and member.recovery:
                    self._attempt_recovery(member)
                    tried.append((member, member.active))
        return tried

    def member_failed(self, member: HAMember, error: CKRError) -> None:
        with self.group.lock:
            if not member.active:
                return
            member.last_error = error
            self.disconnect(member, f"{error.function} returned {error.name}"
                             + (f": {error.detail}" if error.detail else ""))

    def disconnect(self, member: HAMember, why: str) -> None:
        self.group.note_slot_event()
        was_serving = any(m.active for m in self.group.members)
        member.fail(self.group.policy.disconnected())
        self.group.log.record(self.group.serial, member.serial, "failed", why)
        if was_serving and not any(m.active for m in self.group.members):
            self.group.lose_everything()

    def _attempt_recovery(self, member: HAMember, background: bool = False) -> None:
        assert member.recovery is not None
        attempt = member.recovery.recover_attempt_count + 1
        try:
            self._reconnect(member, background)
        except CKRError as exc:
            self._failed_attempt(member, exc, attempt)
            return
        except MemberRejected as exc:
            self.group.policy.attempted(member.recovery, recovered=False)
            member.reject()
            self.group.log.record(self.group.serial, member.serial, "rejected", str(exc))
            return
        except comparison.CompareInBackground as deferred:
            self.full_comparisons += 1
            self.group.log.record(self.group.serial, member.serial, "resynchronising",
                                  f"{deferred.why}: compared in full in the background; it serves "
                                  "again when done")
            source = self.group.source_member(exclude=member)
            comparison.compare_in_background(self, source, member, deferred, attempt)
            return
        self._recovered(member, attempt)

    def _recovered(self, member: HAMember, attempt: int) -> None:
        assert member.recovery is not None
        self.group.policy.attempted(member.recovery, recovered=True)
        member.rejoin()
        self.group.log.record(self.group.serial, member.serial, "recovered", f"after {attempt} attempt(s)")
        self.group.note_slot_event()

    def _failed_attempt(self, member: HAMember, exc: CKRError, attempt: int) -> None:
        assert member.recovery is not None
        self.group.policy.attempted(member.recovery, recovered=False)
        self.group.log.record(self.group.serial, member.serial, "recovery-attempt",
                              f"#{attempt} failed: {exc}")
        if 0 < self.group.policy.retries == member.recovery.recover_attempt_count:  # said once
            self.group.log.record(self.group.serial, member.serial, "recovery-exhausted",
                                  f"{attempt} of {self.group.policy.retries} attempts made: no "
                                  "more automatic recovery (hagroup recover, or menu 125, "
                                  "takes it back)")

    def finish_background(self, source: HAMember, target: HAMember, touched: frozenset,
                          since: bytes, attempt: int) -> None:
        """After a full comparison in the background (the locks are held): the changes made
        meanwhile, caught up from the journal; then the member serves again."""
        self._replay(source, target, touched, since)
        if self._user_logged_in():
            self.group.marks.write(target.anchor, target, self.group.journal.mark())
        target.private_unsynced = not self._user_logged_in()
        self._recovered(target, attempt)

    def background_failed(self, target: HAMember, error: CKRError, attempt: int) -> None:
        if target.active or target.recovery is None:
            return
        anchor, target.anchor = target.anchor, None
        if anchor is not None:
            close_quietly(anchor)
        self._failed_attempt(target, error, attempt)

    def _reconnect(self, member: HAMember, background: bool = False) -> None:
        if member.slot is None:
            raise CKRError(CKR_DEVICE_ERROR, "C_GetSlotList", "member slot not found")
        member.slot.reconnect(member.serial)  # re-initialises a member's own module only
        info = member.slot.token_info()
        if info.serial_number != member.serial:
            raise MemberRejected(f"slot now holds token {info.serial_number}, not {member.serial}")
        anchor = member.slot.open_session(rw=True)
        try:
            # the domain key is a public object: checked before any login, so an emptied token
            # (no user PIN) is recognised as such and not retried forever
            source = self.group.source_member(exclude=member)
            wanted = replication.domain_keys(self.group.session_for(source)).current if source else None
            if wanted is not None and wanted not in replication.domain_keys(anchor).complete:
                raise MemberRejected(f"came back without the HA domain keys (generation {wanted}; "
                                     "token re-initialised?): run HA Init (50) to admit it again")
            if self.group.credentials:
                try:
                    anchor.login(*self.group.credentials)
                except CKRError as exc:
                    if exc.ckr in CREDENTIALS_REJECTED:
                        raise MemberRejected(f"the HA login is refused there ({exc.name})") from None
                    if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                        raise
            member.anchor = anchor
            if source is not None and self.group.synchronize_on_recovery:
                self._resynchronise(source, member, in_call=not background)
                member.private_unsynced = not self._user_logged_in()
        except comparison.CompareInBackground:
            raise  # the member keeps its session: the comparison uses it
        except BaseException:
            member.anchor = None
            close_quietly(anchor)
            raise

    def _user_logged_in(self) -> bool:
        return self.group.credentials is not None and self.group.credentials[0] == CKU_USER

    def resynchronise_private(self) -> None:
        """At a user login: members that came back while no user was logged in are made as a
        member that did not miss anything (copies and destructions alike). Completing objects
        as a union instead would bring back a key destroyed while such a member was down."""
        for member in self.group.active_members():
            if not member.private_unsynced:
                continue
            source = next((m for m in self.group.active_members()
                           if m is not member and not m.private_unsynced), None)
            if source is None:
                continue  # every member missed something: the union is all there is to go by
            try:
                self._resynchronise(source, member)
            except CKRError as exc:
                if self.group.is_member_failure(exc):
                    self.member_failed(member, exc)
                    continue
                raise
            member.private_unsynced = False

    def _resynchronise(self, source: HAMember, target: HAMember, in_call: bool = True) -> None:
        """Copy objects created while the member was away, destroy those destroyed meanwhile:
        from the journal when the member's mark proves where it stands (work as large as what
        changed), else by comparing every key object on both. The member is marked up to date
        after, unless only its public objects could be seen (no user logged in)."""
        dst = target.anchor
        mark = self.group.marks.read(dst, target)
        touched = self.group.journal.since(mark)
        if touched is None:
            why = ("the member has no journal mark" if mark is None else
                   f"the journal does not hold every change after the member's mark ({mark.decode(errors='replace')})")
            if self.background_comparison and not in_call:
                # compared with no lock held, caught up from the journal after (comparison.py)
                raise comparison.CompareInBackground(why, self.group.journal.mark())
            self.full_comparisons += 1
            comparison.compare_in_full(self.group, source, target, why)
        else:
            self._replay(source, target, touched, mark)
        if self._user_logged_in():
            self.group.marks.write(dst, target, self.group.journal.mark())

    def _replay(self, source: HAMember, target: HAMember, touched: frozenset, mark: bytes) -> None:
        """The identities touched since the member's mark, its lost session objects and the
        keys it generated and failed before copying, made on it as they are on the source."""
        src, dst = self.group.session_for(source), target.anchor
        orphans = self.group.orphans.get(target.serial, set())
        keys = set(touched) | set(catchup.session_objects(src)) | orphans
        outcome = catchup.catch_up(src, dst, keys, self.group.vault, replace=orphans,
                                   is_member_failure=self.group.is_member_failure)
        self.group.orphans.pop(target.serial, None)
        self.replays += 1
        if outcome.destroyed or outcome.replaced:  # handles kept of this member name objects gone now
            target.generation += 1
        if outcome.changed:
            self.group.log.record(self.group.serial, target.serial, "resynchronised",
                                  f"{outcome.copied} object(s) copied, "
                                  f"{outcome.destroyed} destroyed"
                                  + (f", {outcome.updated} updated" if outcome.updated else "")
                                  + (f" ({outcome.replaced} of the copies replace another key under "
                                     "the same class, CKA_ID and label)" if outcome.replaced else "")
                                  + (f"; not copied: {', '.join(outcome.refused)}" if outcome.refused else "")
                                  + f" (journal: {len(touched)} object(s) changed after "
                                    f"{mark.decode(errors='replace')})")
        if outcome.refused:  # never in service without an object the others have (its mark stays)
            raise comparison.held_out(outcome.refused)

class BackgroundRecovery:
    """activeEnhanced: a thread that tries the members whose attempt is due (the same X and N,
    the same counters), so a failed member comes back with no application call. Stopped by
    stop() and at interpreter exit (no member library is called while Python shuts down)."""

    def __init__(self, recovery: Recovery, policy, name: str,
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.recovery = recovery
        self.policy = policy
        self.log = log
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"ha-recovery-{name}", daemon=True)
        self.poll_s: float | None = None  # how often it looks (None: X/4, at most BACKGROUND_POLL_S)
        self.passes = 0  # times it looked
        self.attempts = 0  # ... and found a member due

    def start(self) -> "BackgroundRecovery":
        self.recovery.in_calls = False
        self.thread.start()
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(BACKGROUND_STOP_S)
        for comparing in self.recovery.comparisons:  # a full comparison under way ends first
            if comparing is not threading.current_thread():
                comparing.join(BACKGROUND_STOP_S)
        self.recovery.in_calls = True
        atexit.unregister(self.stop)

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s or min(BACKGROUND_POLL_S, max(0.01, self.policy.interval_s / 4))):
            self.passes += 1
            try:
                if any(self.recovery._due(m) for m in self.recovery.group.members):
                    self.attempts += 1
                    self.recovery.recover_due()
            except Exception as error:  # never end the thread: the next pass tries again
                self.log(f"background recovery: {type(error).__name__}: {error}")
