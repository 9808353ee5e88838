"""HIGH AVAILABILITY RECOVERY FUNCTIONS (50-52) and ckdemo's HA test functions (120-122)."""

from __future__ import annotations

from typing import Any

from ..codes import ckr_name
from ..menu.context import Context, InputError
from ..menu.shown import HA_STATUS, HAStatusRow, HAStatusShown
from ..screens import (
    attempts_most,
    exhausted_notices,
    ha_status_row,
    member_state,
    recovering_notices,
    recovery_where,
    restored_line,
    standby_notices,
)
from ..model import CKU_USER


def _choose_group(ctx: Context) -> tuple[int, Any]:
    number, slot = ctx.choose_slot()
    if slot not in ctx.workspace.groups:
        raise InputError(f"slot#{number} is not an HA virtual slot.")
    return number, slot


def _choose_member(ctx: Context, group) -> Any:
    for n, member in enumerate(group.members, start=1):
        ctx.say(f"\t({n}) HSM {member.serial} {member.label}")
    n = ctx.ask_int("Select a member: ", 1, len(group.members))
    return group.members[n - 1]


def ha_init(ctx: Context) -> None:
    _, group = _choose_group(ctx)
    so_pin = ctx.ask_secret("Enter SO PIN (the same on every member) : ")
    for line in group.ha_init(so_pin).lines():
        ctx.say(line[0].upper() + line[1:] + ".")


def ha_login(ctx: Context) -> None:
    _, group = _choose_group(ctx)
    pin = ctx.ask_secret("Enter PIN : ")
    group.login(CKU_USER, pin)
    ctx.say(f"Logged in to {len(group.active_members())} member(s) of HA group {group.serial}.")


def ha_status(ctx: Context) -> None:
    _, group = _choose_group(ctx)
    report = group.status()
    ctx.say("")
    ctx.say(f"HA group {group.serial} status:")
    for member, code in report:
        ctx.say(ha_status_row(member.serial, code))
    ctx.record(
        HA_STATUS,
        HAStatusShown(
            group.serial,
            tuple(
                HAStatusRow(n, member.serial, member.label, ckr_name(code))
                for n, (member, code) in enumerate(report, start=1)
            ),
        ),
    )
    for line in standby_notices(report) + recovering_notices(report):
        ctx.say(line)
    _exhausted_notice(ctx, group)


def _exhausted_notice(ctx: Context, group) -> None:
    """Automatic recovery that has given up says so, with the way out (Luna: hagroup recover)."""
    # the verb recovers a serve's groups; without a serve only its own process's members
    for line in exhausted_notices(
        group.policy.retries,
        group.recovery_exhausted(),
        "125 Recover now or `ckdemo hagroup recover` beside a running `ckdemo serve`",
    ):
        ctx.say(line)


def _on_member(ctx: Context, action: str, said: str) -> None:
    """120, 121, 123, 124: pick the HA slot and a member, do `action` to it, say how it went."""
    _, group = _choose_group(ctx)
    member = _choose_member(ctx, group)
    how = getattr(group, action)(member)
    ctx.say(f"HSM {member.serial} ({member.label}) {said.format(how=how, x=group.policy.interval_s)}")


def fail_member(ctx: Context) -> None:
    _on_member(ctx, "fail_member", "is down: {how}.")


def restore_member(ctx: Context) -> None:
    _, group = _choose_group(ctx)
    member = _choose_member(ctx, group)
    how = group.restore_member(member)
    spent = any(m is member for m, _ in group.recovery_exhausted())
    ctx.say(
        restored_line(
            member,
            how,
            group.policy.interval_s,
            spent,
            "125 Recover now",
            group.recovery_mode == "activeEnhanced",
            group.policy.retries,
        )
    )


def hang_member(ctx: Context) -> None:
    _on_member(ctx, "hang_member", "hangs: {how}.")


def resume_member(ctx: Context) -> None:
    _on_member(ctx, "resume_member", "runs again: {how}.")


def recover_now(ctx: Context) -> None:
    _, group = _choose_group(ctx)
    tried = group.recover_now()
    if not tried:
        ctx.say("Every member is in service: nothing to recover.")
    for member, back in tried:
        ctx.say(f"HSM {member.serial} ({member.label}): {'recovered' if back else 'still down'}")


def member_stats(ctx: Context) -> None:
    _, group = _choose_group(ctx)
    rows = []
    retries = group.policy.retries
    most = attempts_most(retries)
    for n, m in enumerate(group.members, start=1):
        r = m.recovery
        rows.append(
            (
                n,
                m.serial,
                m.label,
                member_state(m, group.members),
                m.calls,
                f"{r.recover_attempt_count} of {most}" if r else "-",
            )
        )
    ctx.table(rows, ["#", "HSM", "Label", "State", "Calls", "Recovery attempts"])
    ctx.say(
        f"Recovery ({group.recovery_mode}, {recovery_where(group.recovery_mode)}): every {group.policy.interval_s:g} s, "
        f"{most} attempts; load balancing {'on' if group.balance else 'off'}."
    )
    _exhausted_notice(ctx, group)
