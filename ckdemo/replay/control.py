"""HA directives of a script (@fail, @restore, @ha-interval, @ha-retry) on the running groups."""

from __future__ import annotations

from ..codes import CKRError
from ..workspace import Workspace
from .script import Directive, ScriptError, number


class HAControl:
    def __init__(self, workspace: Workspace) -> None:
        self.groups = workspace.groups

    def __call__(self, d: Directive) -> str:
        if not self.groups:
            raise ScriptError(f"line {d.line}: @{d.name}: no HA group is configured")
        if d.name == "ha-interval":
            seconds = number(d.name, d.argument)  # checked when the script was read
            for group in self.groups:
                group.policy.configure(interval_s=seconds)
            return f"recovery interval {seconds:g} s"
        if d.name == "ha-retry":
            count = number(d.name, d.argument)
            for group in self.groups:
                group.policy.configure(retries=count)
            return f"recovery attempts {count}"
        for group in self.groups:
            try:
                member = group.member(d.argument)
            except KeyError:
                continue
            action = {
                "fail": group.fail_member,
                "restore": group.restore_member,
                "hang": group.hang_member,
                "resume": group.resume_member,
            }[d.name]
            try:
                return f"HSM {member.serial} ({member.label}): {action(member)}"
            except CKRError as exc:
                raise ScriptError(f"line {d.line}: @{d.name} {d.argument}: {exc.detail}") from None
        raise ScriptError(
            f"line {d.line}: @{d.name} {d.argument}: no such HA member "
            "(use its label, serial or number in the group)"
        )
