"""CKDemo's fixed screen formats that more than one front door prints (the menu's HA Status, 52,
and the running server's control channel, `ckdemo hagroup status`): one definition each."""

from __future__ import annotations

from .codes import ckr_name

HA_STATUS_SERIAL_WIDTH = 14  # Luna: "   HSM 599447001      - CKR_OK", "   HSM 78665001       - CKR_OK"


def ha_status_row(serial: str, ckr: int) -> str:
    """One member's line of HA Status (52), as CKDemo prints it."""
    return f"   HSM {serial:<{HA_STATUS_SERIAL_WIDTH}} - {ckr_name(ckr)}"


def restored_line(
    member,
    how: str,
    interval_s: float,
    exhausted: bool,
    way_out: str,
    background: bool = False,
    retries: int = -1,
) -> str:
    """What 121 and `ckdemo member restore` say of a member whose token is reachable again: it
    is not in service yet, so when the group takes it back, or that it will not by itself (its N
    recovery attempts are spent, or N is 0: it stays down until `way_out`)."""
    reachable = f"HSM {member.serial} ({member.label}): its token is reachable again ({how})"
    if exhausted:
        why = (
            "automatic recovery is off (0 attempts)"
            if retries == 0
            else "its automatic recovery attempts are spent"
        )
        return f"{reachable}, but it stays out of service; {why}: {way_out} takes it back."
    when = (
        f"within {interval_s:g} s (in the background)" if background else f"on a call after {interval_s:g} s"
    )
    return f"{reachable}; the HA group takes it back {when}."


def standby_notices(report) -> list[str]:
    """A line per standby member of an HA Status report ((member, code) pairs): idle while an
    active member serves, serving once none does (Luna: promoted)."""
    serving = any(code == 0 and not member.standby for member, code in report)
    return [
        f"HSM {member.serial}: standby member, "
        + (
            "idle while an active member serves"
            if serving or code != 0
            else "serving: every active member has failed"
        )
        for member, code in report
        if member.standby
    ]


def member_state(member, members) -> str:
    """A member's State in Member stats (122), worded as HA Status (52) words a standby member:
    `standby` while an active member serves, `standby (serving)` once every active member has
    failed (Luna: promoted), `<state> (standby)` when it is out of service itself."""
    if not member.standby:
        return member.state.value
    if not member.active:
        return f"{member.state.value} (standby)"
    serving = any(m.active and not m.standby for m in members)
    return "standby" if serving else "standby (serving)"


def recovering_notices(report) -> list[str]:
    """A line per member of an HA Status report that is back but not serving yet: reconnected
    and logged in, brought up to date off the application's calls (it serves when done)."""
    return [
        f"HSM {member.serial}: recovering: reconnected and logged in, being brought up to date "
        "in the background; it serves again when done"
        for member, _ in report
        if getattr(member, "recovering", False)
    ]


def exhausted_notices(retries: int, exhausted, way_out: str) -> list[str]:
    """A line per member automatic recovery has given up on ((member, attempts made) pairs; N
    attempts made, or N = 0), with the way out where the user reads it."""
    lines = []
    for member, attempts in exhausted:
        made = (
            "automatic recovery is off (0 attempts)"
            if retries == 0
            else f"recovery attempts exhausted ({attempts} of {retries})"
        )
        lines.append(f"HSM {member.serial}: {made}; {way_out}")
    return lines


def recovery_line(mode: str, interval_s: float, retries: int) -> str:
    """The group's recovery as `ckdemo serve` (at start) and `ckdemo hagroup status` say it:
    Luna's recovery mode, X and N."""
    return (
        f"recovery {mode} ({recovery_where(mode)}), every {interval_s:g} s, {attempts_most(retries)} attempts"
    )


def recovery_where(mode: str) -> str:
    """Where Luna's recovery mode tries a failed member."""
    return "in the background" if mode == "activeEnhanced" else "inside a call"


def attempts_most(retries: int) -> str:
    """Luna's N as a count of attempts: -1 is unlimited."""
    return "unlimited" if retries < 0 else str(retries)
