"""Failover in one place (as redis-py's retry.py): the one engine that runs a call on the HA
group's members, what a member failure is, and the error the application sees when no member
is left, with every member's own error chained to it.

A member-fatal result fails the member and comes back as MemberFailed, which the engine handles
the same way everywhere: try another member, or leave that member out. Application answers
(CKR_PIN_INCORRECT, CKR_MECHANISM_INVALID, ...) pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..codes import CKR_DEVICE_ERROR, CKR_MECHANISM_INVALID, CKRError
from ..slots import fan_out
from .member import MemberState

if TYPE_CHECKING:
    from .member import HAMember

T = TypeVar("T")
_ACTIVE = MemberState.ACTIVE

# a member that answers a call SLOW_FACTOR times slower than the quickest other member (and
# slower than SLOW_FLOOR_S: ordinary differences between fast calls do not count) is passed over
# for that call while another member can serve it; every PROBE_EVERY-th time it is asked all the
# same, so that its time is known again once it has recovered. Times: smoothed (EWMA_WEIGHT).
SLOW_FLOOR_S = 0.02
SLOW_FACTOR = 4.0
PROBE_EVERY = 16
EWMA_WEIGHT = 0.3


class MemberFailed(CKRError):
    """The member gave a member-fatal result and has been failed; `cause` is its own error."""

    def __init__(self, member: "HAMember", cause: CKRError) -> None:
        super().__init__(
            cause.ckr,
            cause.function,
            f"member {member.serial}" + (f": {cause.detail}" if cause.detail else ""),
        )
        self.member = member
        self.cause = cause


class ObjectMissing(CKRError):
    """The object is not on this member (it could not be copied there): ask another member."""


def no_member_left(function: str, failures: list[MemberFailed] = ()) -> CKRError:
    """CKR_DEVICE_ERROR for the application; the failures of this call are named in the detail
    and chained as the cause (an ExceptionGroup of each member's own error)."""
    detail = "no HA group member is available"
    if failures:
        detail += f" ({'; '.join(f'{f.member.serial}: {f.name}' for f in failures)})"
    error = CKRError(CKR_DEVICE_ERROR, function, detail)
    if failures:
        error.__cause__ = ExceptionGroup("member errors", [f.cause for f in failures])
    return error


class Failover:
    """One HA group's failover engine (as redis-py's Retry): which member serves (least-busy
    round robin), the calls in flight on each, and the rule that tells a member's failure from
    the application's answer (handed in). Three entry points:

    - one(): a call on one member, moved to another when that member fails;
    - every(): a change on every active member, all or nothing: an answer that refuses it
      is undone on the members that had made it;
    - pinned(): a call on one given member, failed with it (on() pins every call of a session).

    An operation takes (session, member): the member's session (its login anchor) and the member.
    """

    def __init__(
        self,
        members: list["HAMember"],
        *,
        session_for: Callable[["HAMember"], Any],
        is_failure: Callable[[CKRError], bool],
        failed: Callable[["HAMember", CKRError], None],
        before_call: Callable[[], None],
        lock,
        balance: bool = True,
    ) -> None:
        self.members = members
        self.session_for = session_for
        self.is_failure = is_failure
        self.failed = failed
        self.before_call = before_call
        self.lock = lock
        self.balance = balance  # False: every call goes to the first active member (CKDemo nolb)
        self._next = 0

    def active(self) -> list["HAMember"]:
        return [m for m in self.members if m.state is _ACTIVE]

    # ---- one member ---------------------------------------------------------------------------
    def _pick(self, skip, mechanism: int | None, function: str = "") -> "HAMember | None":
        """Least-busy round robin (as Luna HA): of the active members not in `skip` and not
        known to refuse `mechanism` (standby members only when no other is left; members far
        slower than the others at `function` only when no other is left, or to probe them),
        the one with the fewest calls in flight, ties broken in turn; None when there is none.
        One caller thread gets plain round robin; several spread out. One pass under the lock:
        this runs on every load-balanced call."""
        members = self.members
        count = len(members)
        with self.lock:
            if self.balance and not skip:  # the usual case: the next in turn is free and able
                member = members[self._next]
                if (
                    member.state is _ACTIVE
                    and not member.outstanding
                    and mechanism not in member.refused
                    and not member.standby
                    and member.latency.get(function, 0.0) < SLOW_FLOOR_S
                ):
                    self._next = (member.index + 1) % count
                    member.outstanding = 1
                    return member
            start = self._next if self.balance else 0
            chosen = None
            # standby members serve only when no other member can (Luna: promoted when every
            # active member has failed)
            standby_serves = not any(m.state is _ACTIVE and not m.standby and m not in skip for m in members)
            able = [
                m
                for m in (members[(start + step) % count] for step in range(count))
                if m.state is _ACTIVE
                and m not in skip
                and mechanism not in m.refused
                and (standby_serves or not m.standby)
            ]
            if self.balance and len(able) > 1:
                quick = [m for m in able if not self._slow(m, function, able)]
                able = quick or able
            for member in able:
                if chosen is None or member.outstanding < chosen.outstanding:
                    chosen = member
                    if not self.balance or not member.outstanding:
                        break
            if chosen is not None:
                if self.balance:
                    self._next = (chosen.index + 1) % count
                chosen.outstanding += 1
            return chosen

    @staticmethod
    def _slow(member: "HAMember", function: str, able: list["HAMember"]) -> bool:
        """Far slower at `function` than the quickest other member able to serve it (the lock
        is held); every PROBE_EVERY-th time not, so that it is asked again."""
        took = member.latency.get(function, 0.0)
        if took < SLOW_FLOOR_S:
            return False
        others = [m.latency[function] for m in able if m is not member and function in m.latency]
        if not others or took <= SLOW_FACTOR * min(others):
            return False
        member.passed_over += 1
        if member.passed_over >= PROBE_EVERY:
            member.passed_over = 0
            return False
        return True

    @staticmethod
    def _timed(member: "HAMember", function: str, took: float) -> None:
        """The member answered `function` in `took` seconds: its smoothed time."""
        before = member.latency.get(function)
        member.latency[function] = took if before is None else before + (took - before) * EWMA_WEIGHT

    def one(
        self,
        function: str,
        op: Callable[[Any, "HAMember"], T],
        mechanism: int | None = None,
        exclude: Sequence["HAMember"] = (),
        session: bool = True,
    ) -> T:
        """op on one member, repeated on another when the member fails. session=False: a call
        on the member's slot, which needs no session (op gets None).

        A member that refuses the mechanism (a remote member's transport cannot carry its
        parameters) is not failed: the call goes to a member that can, and that member is
        skipped for the mechanism from then on. An object missing on a member (it could not be
        copied there) sends the call to another member."""
        self.before_call()
        failures: list[MemberFailed] = []
        refused: list["HAMember"] = []
        refused_error: CKRError | None = None
        missing: list["HAMember"] = []
        skip = exclude
        while True:
            member = self._pick(skip, mechanism, function)
            if member is None and mechanism is not None and not refused:
                member = self._pick(skip, None, function)  # every member refused it before: ask again
            if member is None:
                if refused_error is not None:
                    raise refused_error
                raise no_member_left(function, failures)
            started = perf_counter()
            try:
                result = op((member.anchor or self.session_for(member)) if session else None, member)
            except MemberFailed as exc:
                if exc.member is not member:
                    raise  # another member the operation used (a copy's source) failed
                failures.append(exc)
                continue
            except CKRError as exc:
                if self.is_failure(exc):
                    self.failed(member, exc)
                    failures.append(MemberFailed(member, exc))
                    continue
                if exc.ckr == CKR_MECHANISM_INVALID and mechanism is not None:
                    refused.append(member)
                    refused_error = exc
                    skip = [*exclude, *refused, *missing]
                    continue
                if isinstance(exc, ObjectMissing):
                    missing.append(member)
                    skip = [*exclude, *refused, *missing]
                    if len(missing) < len([m for m in self.active() if m not in exclude]):
                        continue
                raise
            finally:
                with self.lock:  # the member is free again (least-busy balancing)
                    member.outstanding -= 1
            member.calls += 1
            if self.balance:
                self._timed(member, function, perf_counter() - started)
            for other in refused:
                other.refused.add(mechanism)
            return result

    # ---- every member ---------------------------------------------------------------------------
    def every(
        self,
        function: str,
        op: Callable[[Any, "HAMember"], T],
        undo: Callable[[Any, "HAMember", T], None] | None = None,
        exclude: Sequence["HAMember"] = (),
        counted: bool = True,
    ) -> list[tuple["HAMember", T]]:
        """op on every active member (but `exclude`). A member failure fails only that member;
        an object a member never received is skipped there; any other refusal is undone (`undo`
        with what op returned) on the members that had done it, and raised: all or nothing.
        counted=False: the group's own housekeeping, not a call of the application's."""
        self.before_call()
        done: list[tuple["HAMember", T]] = []
        failures: list[MemberFailed] = []
        missing: ObjectMissing | None = None
        for member in self.active():
            if member in exclude:
                continue
            try:
                with fan_out():  # a member late by far may be given up: it is resynchronised
                    done.append((member, self.pinned(member, lambda: op(self.session_for(member), member))))
            except ObjectMissing as exc:
                missing = exc
                continue  # the object never reached this member: nothing to do there
            except MemberFailed as exc:
                if exc.member is not member:
                    raise
                failures.append(exc)
                continue
            except CKRError:
                if undo is not None:
                    for other, result in reversed(done):
                        try:
                            undo(self.session_for(other), other, result)
                        except CKRError:
                            pass  # best effort: the refusal is what the caller must see
                raise
            if counted:
                member.calls += 1
        if not done:
            if missing is not None and not failures:
                raise missing  # on no member (or, with no login, not seen on any): the token's answer
            raise no_member_left(function, failures)
        return done

    # ---- one given member -----------------------------------------------------------------------
    def pinned(self, member: "HAMember", fn: Callable[..., T], *args) -> T:
        """fn(*args) for one member. A member-fatal result fails the member and raises
        MemberFailed (chained to the member's own error); any other result is the
        application's answer."""
        try:
            return fn(*args)  # (a remote member's socket keeps the call's deadline)
        except MemberFailed:
            raise
        except CKRError as exc:
            if not self.is_failure(exc):
                raise
            self.failed(member, exc)
            raise MemberFailed(member, exc) from exc

    def on(self, member: "HAMember", fanned_out: bool = False) -> "OnMember":
        """The member's session with every call pinned to the member (fanned_out: the member is
        one target of a copy to every member, slots.fan_out)."""
        return OnMember(self, member, fanned_out)

    def stream(
        self,
        function: str,
        mechanism: int,
        chunks: Iterable[bytes],
        start: Callable[[Any, "HAMember", Iterator[bytes]], Iterator[bytes]],
    ) -> Iterator[bytes]:
        """A multi-part operation pinned to one member. Until it has produced output it can move
        to another member (the chunks read so far are kept): a member that refuses the mechanism
        or fails at the start costs nothing. After that, a failure goes back to the caller, who
        must restart the operation (as with Luna HA)."""
        source = iter(chunks)
        consumed: list[bytes] = []
        committed = False

        def feed() -> Iterator[bytes]:
            yield from consumed
            for piece in source:
                if not committed:
                    consumed.append(piece)
                yield piece

        tried: list["HAMember"] = []
        last_error: CKRError | None = None
        while True:
            if last_error is not None and all(m in tried for m in self.active()):
                raise last_error
            member = self.one(function, lambda s, m: m, mechanism=mechanism, exclude=tried)
            try:
                for piece in start(self.session_for(member), member, feed()):
                    committed = True
                    consumed.clear()
                    yield piece
                return
            except CKRError as exc:
                if self.is_failure(exc):
                    self.failed(member, exc)
                elif exc.ckr == CKR_MECHANISM_INVALID:
                    member.refused.add(mechanism)
                else:
                    raise
                if committed:
                    raise
                tried.append(member)
                last_error = exc


class OnMember:
    """A member's session whose every call is pinned to the member (Failover.pinned), so a
    member-fatal result fails *that* member. A copy from one member to another calls both: a
    source that dies in the middle must not be blamed on the member the copy was going to."""

    def __init__(self, failover: Failover, member: "HAMember", fanned_out: bool = False) -> None:
        self.failover = failover
        self.member = member
        self.session = failover.session_for(member)
        self.fanned_out = fanned_out  # the member is one target of a copy to every member

    def __getattr__(self, name: str):
        attribute = getattr(self.session, name)
        if not callable(attribute):
            return attribute
        failover, member = self.failover, self.member

        if self.fanned_out:

            def call(*args, **kwargs):
                with fan_out():
                    return failover.pinned(member, attribute, *args, **kwargs)

            return call

        def call(*args, **kwargs):
            return failover.pinned(member, attribute, *args, **kwargs)

        return call
