"""Bringing a reconnected member up to date off the application's calls, then letting it serve.

A recovery attempt (recovery.py) only reconnects the member, checks it is the same token and
logs it in: calls that cost the same whatever the token holds. Everything that searches the
member's token (a SoftHSM2 search reads every object it holds) runs here, on a thread of its
own, while the member stays out of service ("recovering" in HA Status):

1. its domain keys are checked (a token re-initialised meanwhile is rejected);
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
change), is a failed attempt, retried after X with the seed's counters. The same path serves activeBasic (the attempt made
inside an application call) and activeEnhanced (made by the group's background thread).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..codes import CKR_FUNCTION_FAILED, CKRError
from .member import HAMember, MemberRejected

if TYPE_CHECKING:
    from .recovery import Recovery

ROUNDS = 3  # lock-free rounds over the changes made meanwhile before the last one, locked
LOGIN_CHANGES = 2  # times the HA login may change under a catch-up before the attempt fails


class Changed(CKRError):
    """What the catch-up started from changed under it: the attempt is made again after X."""


def start(recovery: "Recovery", source: HAMember, target: HAMember, attempt: int) -> threading.Thread:
    """Bring `target` (reconnected, logged in, out of service) up to date from `source` on a
    thread of its own; it serves again when done (or the attempt fails)."""
    target.recovering = True
    thread = threading.Thread(target=_run, args=(recovery, source, target, attempt),
                              name=f"ha-rejoin-{target.serial}", daemon=True)
    recovery.catching_up = [t for t in recovery.catching_up if t.is_alive()] + [thread]
    thread.start()
    return thread


def _run(recovery: "Recovery", source: HAMember, target: HAMember, attempt: int) -> None:
    group = recovery.group
    try:
        recovery.check_domain_keys(source, target)
        for _ in range(LOGIN_CHANGES + 1):
            if _caught_up(recovery, source, target, attempt, group.credentials):
                return
        raise Changed(CKR_FUNCTION_FAILED, "HA", "the HA login kept changing while the member was "
                      "brought up to date: tried again")
    except MemberRejected as exc:
        with group.lock:
            recovery.rejected(target, str(exc))
    except Exception as exc:  # never lost: the attempt fails, with the reason in the HA log
        error = exc if isinstance(exc, CKRError) else CKRError(CKR_FUNCTION_FAILED, "HA", repr(exc))
        with group.lock:
            recovery.background_failed(target, error, attempt)
    finally:
        target.recovering = False


def _caught_up(recovery: "Recovery", source: HAMember, target: HAMember, attempt: int,
               credentials) -> bool:
    """Steps 2-4 under one HA login; False when the login changed meanwhile (a user logged in
    or out: what the member's session could see was not what the group sees), the member's
    session then logged in as the group is now, to start again."""
    group = recovery.group
    since = group.journal.mark()  # the changes after this are caught up in rounds below
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
            recovery.catch_up_changes(source, target, touched, since)
        if not target.active:  # (not taken back another way meanwhile)
            recovery.rejoined(target, attempt)
    return True


def _since(group, mark: bytes) -> frozenset:
    touched = group.journal.since(mark)
    if touched is None:
        raise Changed(CKR_FUNCTION_FAILED, "HA", "the journal does not hold every change made while "
                      "the member was brought up to date (another process?): tried again")
    return touched
