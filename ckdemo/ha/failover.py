"""Failover in one place (as redis-py's retry.py): what a member failure is, and the error the
application sees when no member is left, with every member's own error chained to it.

The group's `call_member` runs one call on one member; a member-fatal result fails the member
and comes back as MemberFailed, which every caller handles the same way: try another member,
or leave that member out. Application answers (CKR_PIN_INCORRECT, CKR_MECHANISM_INVALID, ...)
pass through unchanged.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..codes import CKR_DEVICE_ERROR, CKRError

if TYPE_CHECKING:
    from .member import HAMember


class MemberFailed(CKRError):
    """The member gave a member-fatal result and has been failed; `cause` is its own error."""

    def __init__(self, member: "HAMember", cause: CKRError) -> None:
        super().__init__(cause.ckr, cause.function,
                         f"member {member.serial}" + (f": {cause.detail}" if cause.detail else ""))
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


class OnMember:
    """A member's session whose every call goes through the group's call_member, so a
    member-fatal result fails *that* member. A copy from one member to another calls both: a
    source that dies in the middle must not be blamed on the member the copy was going to."""

    def __init__(self, group, member: "HAMember") -> None:
        self.group = group
        self.member = member
        self.session = group.session_for(member)

    def __getattr__(self, name: str):
        attribute = getattr(self.session, name)
        if not callable(attribute):
            return attribute
        group, member = self.group, self.member

        def call(*args, **kwargs):
            return group.call_member(member, lambda: attribute(*args, **kwargs))
        return call
