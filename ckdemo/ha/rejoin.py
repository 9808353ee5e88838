"""Bringing a reconnected member up to date off the application's calls, then letting it serve.

A recovery attempt (recovery.py: due after X, at most N) runs here, on a thread of its own,
while the member stays out of service ("recovering" in HA Status): what it costs grows with
what the member's token holds (an in-process SoftHSM2 re-reads every object file when it is
initialised again, and every search reads every object), so none of it runs in an
application's call (the call that started it waits at most recovery.CALL_BUDGET_S):

1. the member is reconnected, checked to be the same token and logged in; its domain keys are
   checked (a token re-initialised meanwhile is rejected);
2. with no lock held, it is made as the group is as of the journal's present mark: from the
   journal when its own mark proves where it stands (the changes after it), else by the full
   comparison;
3. still with no lock held, the changes the application made meanwhile are caught up from the
   journal, a few rounds while they keep coming;
4. under the state lock (no change can start), the last ones are; then, under the group's lock
   for a moment, the member serves again, marked with the present mark.

So no change is lost, and an application call does not wait for the work (the call that made
the attempt waits at most recovery.CALL_BUDGET_S): only a change made in the last round waits
for that round (the state lock). A user who logs in or out meanwhile makes it start again under
the new login. A failure, or a journal that cannot cover the time it took (another process's
change), is a failed attempt, retried after X with the auto-recovery rule's counters
(docs/HA.md). The same path serves activeBasic (the attempt made inside an application call)
and activeEnhanced (made by the group's background thread).
"""

from __future__ import annotations

import atexit
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from ..codes import CKR_FUNCTION_FAILED, CKRError
from .member import HAMember, MemberRejected

if TYPE_CHECKING:
    from .recovery import Recovery

ROUNDS = 3  # lock-free rounds over the changes made meanwhile before the last one, locked
LOGIN_CHANGES = 2  # times the HA login may change under a catch-up before the attempt fails


class Changed(CKRError):
    """What the catch-up started from changed under it: the attempt is made again after X."""


def start(recovery: "Recovery", member: HAMember) -> threading.Thread:
    """A recovery attempt on `member` (due, the group's lock held) on a thread of its own:
    reconnected, checked, logged in and brought up to date; it serves again when done, or the
    attempt fails (counted and said as Luna's documentation does)."""
    member.recovering = True
    if not recovery.catching_up:  # no member library is called while Python shuts down
        atexit.register(recovery.settle)
    thread = threading.Thread(
        target=_attempt, args=(recovery, member), name=f"ha-recover-{member.serial}", daemon=True
    )
    recovery.catching_up = [t for t in recovery.catching_up if t.is_alive()] + [thread]
    thread.start()
    return thread


def _attempt(recovery: "Recovery", target: HAMember) -> None:
    with recovery.one_at_a_time:  # members are recovered in turn, as in one call before
        _attempt_now(recovery, target)


def _attempt_now(recovery: "Recovery", target: HAMember) -> None:
    group = recovery.group
    assert target.recovery is not None
    attempt = target.recovery.recover_attempt_count + 1
    try:
        recovery.reconnect(target)
        source = group.source_member(exclude=target)
        if source is None or not group.synchronize_on_recovery:
            with group.lock:
                recovery.recovered(target, attempt)
            return
        with _reading(group, source):
            recovery.check_domain_keys(source, target)
        for _ in range(LOGIN_CHANGES + 1):
            if _caught_up(recovery, source, target, attempt, group.credentials):
                return
        raise Changed(
            CKR_FUNCTION_FAILED,
            "HA",
            "the HA login kept changing while the member was brought up to date: tried again",
        )
    except MemberRejected as exc:
        with group.lock:
            recovery.rejected(target, str(exc))
    except Exception as exc:  # never lost: the attempt fails, with the reason in the HA log
        error = exc if isinstance(exc, CKRError) else CKRError(CKR_FUNCTION_FAILED, "HA", repr(exc))
        with group.lock:
            recovery.background_failed(target, error, attempt)
    finally:
        target.recovering = False


def _caught_up(recovery: "Recovery", source: HAMember, target: HAMember, attempt: int, credentials) -> bool:
    """Steps 2-4 under one HA login; False when the login changed meanwhile (a user logged in
    or out: what the member's session could see was not what the group sees), the member's
    session then logged in as the group is now, to start again."""
    group = recovery.group
    since = group.journal.mark()  # the changes after this are caught up in rounds below
    with _reading(group, source):
        recovery.bring_up_to_date(source, target, background=True)
        for _ in range(ROUNDS):
            present = group.journal.mark()
            touched = _since(group, since)
            if not touched:
                break
            recovery.catch_up_changes(source, target, touched, since)
            since = present
    with group.state_lock():  # no change starts now: the last ones, then the member serves
        if group.credentials != credentials:
            recovery.log_in_as_the_group(target, credentials)
            return False
        touched = _since(group, since)
        if touched:
            with _reading(group, source):
                recovery.catch_up_changes(source, target, touched, since)
        if not target.active:  # (not taken back another way meanwhile)
            recovery.rejoined(target, attempt)
    return True


@contextmanager
def _reading(group, source: HAMember) -> Iterator[None]:
    """The source counts as one call in flight while it is read, so the least-busy balancing
    sends the application's calls to another member when there is one: a SoftHSM2 search holds
    the member's library (its lock) for the whole scan of the token."""
    with group.lock:
        source.outstanding += 1
    try:
        yield
    finally:
        with group.lock:
            source.outstanding -= 1


def _since(group, mark: bytes) -> frozenset:
    touched = group.journal.since(mark)
    if touched is None:
        raise Changed(
            CKR_FUNCTION_FAILED,
            "HA",
            "the journal does not hold every change made while "
            "the member was brought up to date (another process?): tried again",
        )
    return touched
