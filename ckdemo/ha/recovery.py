"""Luna's detection and auto-recovery (docs/HA.md, docs/LUNA-HA.md): a member that fails is
disconnected; once the policy says so (every X s, N attempts), it is reconnected, checked to be
the same token, logged in again and brought up to date. Where the attempt runs is Luna's
recovery mode:

- activeBasic (Luna's documented rule, the default): at the start of an application's call on
  the HA slot;
- activeEnhanced: in a background thread of the group, with no application call needed
  (`BackgroundRecovery`); application calls then never carry a recovery.

Either way the attempt runs on a thread of its own (rejoin.py): reconnecting a member (an
in-process SoftHSM2 re-reads every object file of its token) and bringing it up to date cost in
proportion to what its token holds, and the member serves again only when it is done. The
application call that started the attempt waits for it at most CALL_BUDGET_S: a member with
little to catch up on is back inside the call, as Luna's documentation shows it; a longer one
goes on after the call has returned (a call with no member left to serve it waits longer:
ATTEMPT_WAIT_S; so does every call of the menu, where a person watches a CKDemo transcript). A
manual recovery (`hagroup recover`, menu 125) does it all at once and says how it went.

Recovery is an object the group owns; what it uses of the group is declared in GroupView.
"""

from __future__ import annotations

import atexit
import threading
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Callable, Protocol

from ..codes import CREDENTIALS_REJECTED, CKR_DEVICE_ERROR, CKR_USER_ALREADY_LOGGED_IN, CKRError
from ..model import CKU_USER
from . import catchup, comparison, rejoin, replication
from .cleanup import close_quietly, logout_quietly
from .member import HAMember, MemberRejected, MemberState

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
# how long an application call that reconnected a member waits for it to be brought up to date
# (the aim: a recovery costs an application call under 100 ms, whatever the token holds)
CALL_BUDGET_S = 0.05
# ... when the call must see the attempt's end: no member is left to serve it, or the menu shows
# the recovery inside the call that started it, as CKDemo does (menu/context.py)
ATTEMPT_WAIT_S = 30.0
# a member that generated keys while it was late (its orphans): how long its recovery lets such a
# late generation land before it looks for the orphans twice (catchup.settle_orphans)
ORPHAN_SETTLE_S = 0.25


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
    def holds_state_lock(self) -> bool: ...
    def lose_everything(self) -> None: ...


class Recovery:
    """Detection and recovery of one HA group's members."""

    def __init__(self, group: GroupView) -> None:
        self.group = group
        self.in_calls = True  # activeBasic; activeEnhanced: the background thread recovers
        self.replays = 0  # recoveries brought up to date from the journal
        self.full_comparisons = 0  # ... by comparing every key and data object
        self.catching_up: list[threading.Thread] = []  # members brought up to date (rejoin.py)
        self.call_budget_s = CALL_BUDGET_S
        self.one_at_a_time = threading.Lock()  # one member's attempt at a time (rejoin.py)
        self.sleep: Callable[[float], None] = time.sleep  # (a test's own: settle_orphans)

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
        with self.group.lock:
            started = [rejoin.start(self, m) for m in members if self._due(m)]
        if started and self.in_calls and not self.group.holds_state_lock():
            # (not when this thread holds the state lock the catch-up ends under)
            wait = self.call_budget_s if any(m.active for m in members) else ATTEMPT_WAIT_S
            deadline = time.monotonic() + wait
            for thread in started:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _due(self, member: HAMember) -> bool:
        recovery = member.recovery
        return (
            member.down and recovery is not None and not member.recovering and self.group.policy.due(recovery)
        )

    def recover_now(self) -> list[tuple[HAMember, bool]]:
        """Manual recovery (Luna: `hagroup recover`): every member that is down is tried now,
        whatever X and N say, and brought up to date before this returns (a catch-up under way
        ends first); a success resets its counters as an automatic one does."""
        self.settle()
        tried = []
        with self.group.state_lock(), self.group.lock:
            for member in self.group.members:
                if member.down and member.recovery and not member.recovering:
                    self._attempt_recovery(member)
                    tried.append((member, member.active))
        return tried

    def settle(self, timeout: float = BACKGROUND_STOP_S) -> bool:
        """Wait (at most `timeout` a member) for the members being brought up to date; True
        when none is left."""
        for thread in list(self.catching_up):
            if thread is not threading.current_thread():
                thread.join(timeout)
        return not any(t.is_alive() for t in self.catching_up)

    def member_failed(self, member: HAMember, error: CKRError) -> None:
        with self.group.lock:
            if not member.active:
                return
            member.last_error = error
            self.disconnect(
                member,
                f"{error.function} returned {error.name}" + (f": {error.detail}" if error.detail else ""),
            )

    def disconnect(self, member: HAMember, why: str) -> None:
        self.group.note_slot_event()
        was_serving = any(m.active for m in self.group.members)
        member.fail(self.group.policy.disconnected())
        self.group.log.record(self.group.serial, member.serial, "failed", why)
        if was_serving and not any(m.active for m in self.group.members):
            self.group.lose_everything()

    def _attempt_recovery(self, member: HAMember) -> None:
        """A manual recovery attempt, all of it here (the locks are held): reconnect, check and
        log in the member, bring it up to date, and it serves again."""
        assert member.recovery is not None
        attempt = member.recovery.recover_attempt_count + 1
        try:
            self.reconnect(member)
            source = self.group.source_member(exclude=member)
            if source is not None and self.group.synchronize_on_recovery:
                try:
                    self.check_domain_keys(source, member)
                    self.bring_up_to_date(source, member)
                except BaseException:
                    anchor, member.anchor = member.anchor, None
                    close_quietly(anchor)
                    raise
        except CKRError as exc:
            self._failed_attempt(member, exc, attempt)
            return
        except MemberRejected as exc:
            self.rejected(member, str(exc))
            return
        self._recovered(member, attempt)

    def rejected(self, member: HAMember, why: str) -> None:
        """Came back as another or an emptied token: kept out until HA Init, said why."""
        assert member.recovery is not None
        anchor, member.anchor = member.anchor, None
        if anchor is not None:
            close_quietly(anchor)
        self.group.policy.attempted(member.recovery, recovered=False)
        member.reject()
        self.group.log.record(self.group.serial, member.serial, "rejected", why)

    def recovered(self, member: HAMember, attempt: int) -> None:
        """Back in service (the group's lock is held)."""
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
        self.group.log.record(
            self.group.serial, member.serial, "recovery-attempt", f"#{attempt} failed: {exc}"
        )
        if 0 < self.group.policy.retries == member.recovery.recover_attempt_count:  # said once
            self.group.log.record(
                self.group.serial,
                member.serial,
                "recovery-exhausted",
                f"{attempt} of {self.group.policy.retries} attempts made: no "
                "more automatic recovery (hagroup recover, or menu 125, "
                "takes it back)",
            )

    def rejoined(self, target: HAMember, attempt: int) -> None:
        """The member holds what the group holds (the state lock is held): marked so, and it
        serves again."""
        if self._user_logged_in():
            self.group.marks.write(target.anchor, target, self.group.journal.mark())
        target.private_unsynced = not self._user_logged_in()
        with self.group.lock:
            self._recovered(target, attempt)

    def background_failed(self, target: HAMember, error: CKRError, attempt: int) -> None:
        if target.active or target.recovery is None:
            return
        anchor, target.anchor = target.anchor, None
        if anchor is not None:
            close_quietly(anchor)
        self._failed_attempt(target, error, attempt)

    def reconnect(self, member: HAMember) -> None:
        """The first part of an attempt: the member's module re-initialised, the token checked
        to be the same one, a session opened and logged in (under the state lock: two processes
        logging in to one SoftHSM2 token at once can fail). No search: a search reads every
        object of a SoftHSM2 token."""
        if member.slot is None:
            raise CKRError(CKR_DEVICE_ERROR, "C_GetSlotList", "member slot not found")
        member.slot.reconnect(member.serial)  # re-initialises a member's own module only
        info = member.slot.token_info()
        if info.serial_number != member.serial:
            raise MemberRejected(f"slot now holds token {info.serial_number}, not {member.serial}")
        anchor = member.slot.open_session(rw=True)
        try:
            member.anchor = anchor
            with self.group.state_lock():
                self._log_in(member, anchor)
        except BaseException:
            member.anchor = None
            close_quietly(anchor)
            raise

    def _log_in(self, member: HAMember, anchor) -> None:
        if not self.group.credentials:
            return
        try:
            anchor.login(*self.group.credentials)
        except CKRError as exc:
            if exc.ckr in CREDENTIALS_REJECTED:
                source = self.group.source_member(exclude=member)
                if source is not None:  # an emptied token (no user PIN) is named as such
                    self.check_domain_keys(source, member)
                raise MemberRejected(f"the HA login is refused there ({exc.name})") from None
            if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                raise

    def log_in_as_the_group(self, target: HAMember, was) -> None:
        """The HA login changed while the member was out of service (the state lock is held):
        its session logged out of the old one and into the group's present one."""
        if was is not None:
            logout_quietly(target.anchor)
        if self.group.credentials:
            try:
                target.anchor.login(*self.group.credentials)
            except CKRError as exc:
                if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                    raise

    def check_domain_keys(self, source: HAMember, target: HAMember) -> None:
        """The member holds the group's domain keys (public objects: checked with no login), or
        it was re-initialised and must be admitted again by HA Init."""
        wanted = replication.domain_keys(self.group.session_for(source)).current
        if wanted is not None and wanted not in replication.domain_keys(target.anchor).complete:
            raise MemberRejected(
                f"came back without the HA domain keys (generation {wanted}; "
                "token re-initialised?): run HA Init (50) to admit it again"
            )

    def bring_up_to_date(self, source: HAMember, target: HAMember, background: bool = False) -> None:
        """The member made as the group is now (from the journal, or by the full comparison).
        In the background (no lock held) it is marked only as of where the catch-up started:
        the changes made meanwhile are not on it yet (rejoin.py)."""
        since = self.group.journal.mark()
        self._resynchronise(source, target, background=background)
        if background and self._user_logged_in():
            self.group.marks.write(target.anchor, target, since)  # (its next write needs no search)
        target.private_unsynced = not self._user_logged_in()

    def catch_up_changes(self, source: HAMember, target: HAMember, touched: frozenset, since: bytes) -> None:
        """The identities changed after `since`, made on the member as on the source."""
        outcome = catchup.catch_up(
            self.group.session_for(source),
            target.anchor,
            touched,
            self.group.vault,
            is_member_failure=self.group.is_member_failure,
        )
        self._said(target, outcome, touched, since)

    def _user_logged_in(self) -> bool:
        return self.group.credentials is not None and self.group.credentials[0] == CKU_USER

    def resynchronise_private(self) -> None:
        """At a user login: members that came back while no user was logged in are made as a
        member that did not miss anything (copies and destructions alike). Completing objects
        as a union instead would bring back a key destroyed while such a member was down. So
        are members whose journal mark is behind another member's, which is at the group's
        last change: one that came back in a process that ended before a user logged in (a key
        it made while it hung, the others making the application's, is another key under the
        same name: only a user's login lets a comparison see it)."""
        behind = self._behind()
        for member in self.group.active_members():
            if not member.private_unsynced and member not in behind:
                continue
            source = next(
                (
                    m
                    for m in self.group.active_members()
                    if m is not member and not m.private_unsynced and m not in behind
                ),
                None,
            )
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

    def _behind(self) -> list[HAMember]:
        """Active members marked before the group's last change while another is marked at it
        (none when no member is: a change under way, or a sequence no member has taken)."""
        try:
            present = self.group.journal.mark()
        except CKRError:  # a home that cannot hold the group's sequence: nothing to go by
            return []
        marks = {}
        for member in self.group.active_members():
            try:
                marks[member] = self.group.marks.read(member.anchor, member)
            except CKRError:
                continue  # (a member failing now is failed by the calls that meet it)
        if present not in marks.values():
            return []
        return [member for member, mark in marks.items() if mark != present]

    def _resynchronise(self, source: HAMember, target: HAMember, background: bool = False) -> None:
        """Copy objects created while the member was away, destroy those destroyed meanwhile:
        from the journal when the member's mark proves where it stands (work as large as what
        changed), else by comparing every key object on both. The member is marked up to date
        after (not in the background: rejoin.py marks it), unless only its public objects could
        be seen (no user logged in)."""
        dst = target.anchor
        mark = self.group.marks.read(dst, target)
        touched = self.group.journal.since(mark)
        if touched is None:
            why = (
                "the member has no journal mark"
                if mark is None
                else f"the journal does not hold every change after the member's mark ({mark.decode(errors='replace')})"
            )
            self.full_comparisons += 1
            if background and not self.in_calls:  # (said as activeEnhanced always has)
                self.group.log.record(
                    self.group.serial,
                    target.serial,
                    "resynchronising",
                    f"{why}: compared in full in the background; it serves again when done",
                )
                why += "; compared in the background"
            comparison.compare_in_full(self.group, source, target, why)
        else:
            self._replay(source, target, touched, mark)
        if self._user_logged_in():  # its keys were seen: the orphans are replaced (else kept
            orphans = self.group.orphans.pop(target.serial, None)  # for the login, which sees them)
            if orphans:
                self.sleep(ORPHAN_SETTLE_S)  # (a late generation lands when its server runs again)
                src = self.group.session_for(source)
                if catchup.settle_orphans(src, dst, orphans, self.group.vault):
                    target.generation += 1  # handles kept of this member name objects gone now
        if not background and self._user_logged_in():
            self.group.marks.write(dst, target, self.group.journal.mark())

    def _replay(self, source: HAMember, target: HAMember, touched: frozenset, mark: bytes) -> None:
        """The identities touched since the member's mark, its lost session objects and the
        keys it generated and failed before copying, made on it as they are on the source."""
        src, dst = self.group.session_for(source), target.anchor
        orphans = self.group.orphans.get(target.serial, set())
        keys = set(touched) | set(catchup.session_objects(src)) | orphans
        outcome = catchup.catch_up(
            src, dst, keys, self.group.vault, replace=orphans, is_member_failure=self.group.is_member_failure
        )
        self.replays += 1
        self._said(target, outcome, touched, mark)

    def _said(self, target: HAMember, outcome: catchup.Outcome, touched: frozenset, mark: bytes) -> None:
        """After a catch-up: handles kept of the member voided if it lost objects, the HA log
        told what changed; a member that could not take every object is held out."""
        if outcome.destroyed or outcome.replaced:  # handles kept of this member name objects gone now
            target.generation += 1
        if outcome.changed:
            self.group.log.record(
                self.group.serial,
                target.serial,
                "resynchronised",
                f"{outcome.copied} object(s) copied, "
                f"{outcome.destroyed} destroyed"
                + (f", {outcome.updated} updated" if outcome.updated else "")
                + (
                    f" ({outcome.replaced} of the copies replace another key under "
                    "the same class, CKA_ID and label)"
                    if outcome.replaced
                    else ""
                )
                + (f"; not copied: {', '.join(outcome.refused)}" if outcome.refused else "")
                + f" (journal: {len(touched)} object(s) changed after "
                f"{mark.decode(errors='replace')})",
            )
        if outcome.refused:  # never in service without an object the others have (its mark stays)
            raise comparison.held_out(outcome.refused)


class BackgroundRecovery:
    """activeEnhanced: a thread that tries the members whose attempt is due (the same X and N,
    the same counters), so a failed member comes back with no application call. Stopped by
    stop() and at interpreter exit (no member library is called while Python shuts down)."""

    def __init__(
        self, recovery: Recovery, policy, name: str, log: Callable[[str], None] = lambda line: None
    ) -> None:
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
        self.recovery.settle()  # a member being brought up to date ends first
        self.recovery.in_calls = True
        atexit.unregister(self.stop)

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.wait(
            self.poll_s or min(BACKGROUND_POLL_S, max(0.01, self.policy.interval_s / 4))
        ):
            self.passes += 1
            try:
                if any(self.recovery._due(m) for m in self.recovery.group.members):
                    self.attempts += 1
                    self.recovery.recover_due()
            except Exception as error:  # never end the thread: the next pass tries again
                self.log(f"background recovery: {type(error).__name__}: {error}")
