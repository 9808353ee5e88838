"""What `hagroup show` and `hagroup listgroups` print: the groups as the configuration file sets
them (no library needed, as on a Luna client machine without the Luna library), and the members'
live state only when the PKCS#11 library loads here."""

from __future__ import annotations

from typing import Callable

from tabulate import tabulate

from ..codes import CKR_OK, ckr_name
from ..config import ha
from .common import Fail

LiveState = list[list[tuple[object, int]]]  # per configured group, in file order: (member, ckr)


def live_reports(settings, build: Callable) -> tuple[LiveState | None, str | None]:
    """Each group's HA Status, or None and why the members could not be reached."""
    try:
        workspace = build(settings)
    except Fail as exc:
        return None, exc.message
    return [group.status() for group in workspace.groups], None


def _retries(count: int) -> str:
    return "unlimited" if count < 0 else "off" if count == 0 else "attempts"


def _not_live(why: str | None) -> list[str]:
    return [f"Members' live state not shown: {why}."] if why else []


def _recovery_mode_note(conf) -> list[str]:
    mode = ha.recovery_mode(conf)
    return [
        f"Recovery mode:     {mode} ("
        + (
            "in the background, no application call needed"
            if mode == "activeEnhanced"
            else "inside an application call"
        )
        + ")"
    ]


def groups_with_members(settings, live: LiveState | None) -> list[tuple] | str:
    """Each configured group with its members' (n, serial, label, found, status code): live
    state when the library loaded, else what the file says (found and code None); or the line
    saying there is no group."""
    groups = ha.groups(settings.conf)
    if not groups:
        return f"No HA group in {settings.config_path}."
    labels = {serial: label for label, serial in settings.member_serials().items()}
    found = []
    for number, group in enumerate(groups):
        if live is not None and number < len(live):
            members = [
                (n, m.serial, m.label or "-", m.slot is not None, code)
                for n, (m, code) in enumerate(live[number], start=1)
            ]
        else:
            members = [
                (n, serial, labels.get(serial, "-"), None, None)
                for n, serial in enumerate(group.members, start=1)
            ]
        found.append((group, members))
    return found


def render_show(settings, live: LiveState | None, why: str | None) -> list[str]:
    conf = settings.conf
    groups = groups_with_members(settings, live)
    if isinstance(groups, str):
        return [groups]
    lines = []
    for group, members in groups:
        roles = bool(group.standby)  # a Role column only where a member is standby
        rows = [
            (n, serial, label)
            + ((("standby" if serial in group.standby else "active"),) if roles else ())
            + ("-" if found is None else ("yes" if found else "no"), "-" if code is None else ckr_name(code))
            for n, serial, label, found, code in members
        ]
        lines.append(f"HA group {group.label}  serial {group.serial}")
        lines += tabulate(
            rows,
            headers=["#", "HSM", "Label"] + (["Role"] if roles else []) + ["Found", "Status"],
            disable_numparse=True,
        ).splitlines()
        if not ha.synchronize_on_recovery(conf, group.label):
            lines.append(
                f"HASynchronize {group.label} = 0: HA login and recovery copy nothing; "
                "`ckdemo hagroup synchronize` copies now"
            )
    cfg = ha.settings(conf)
    lines.append("")
    lines.append(
        f"reconnAtt = {cfg.reconnect_attempts} ({_retries(cfg.reconnect_attempts)}); "
        f"AutoReconnectInterval = {cfg.interval_s:g} s; HAOnly = {int(cfg.ha_only)}; "
        f"haLogStatus = {'enabled' if cfg.log_enabled else 'disabled'}"
        + (f"; haLogPath = {cfg.log_path}" if cfg.log_path else "")
    )
    lines += _recovery_mode_note(conf) + _not_live(why)
    lines.append("Per-member call counts belong to a running session: menu choice 122.")
    return lines


def render_listgroups(
    settings, live: LiveState | None, why: str | None, only: str | None = None
) -> list[str]:
    conf = settings.conf
    groups = groups_with_members(settings, live)
    if isinstance(groups, str):
        return [groups]
    lines = []
    for group, members in groups:
        if only is not None and only not in (group.label, group.serial):
            continue
        sync = ha.synchronize_on_recovery(conf, group.label)
        lines += [
            f"HA Group Label:   {group.label}",
            f"HA Group Number:  {group.serial}",
            f"Synchronization:  {'enabled' if sync else 'disabled'} (HASynchronize)",
            f"Group Members:    {', '.join(m for m in group.members if m not in group.standby) or '<none>'}",
            f"Standby Members:  {', '.join(group.standby) or '<none>'}",
            "",
        ]
        rows = [
            (
                n,
                serial,
                label,
                "not known"
                if code is None
                else ("alive" if code == CKR_OK else "down") + f" ({ckr_name(code)})",
            )
            for n, serial, label, _, code in members
        ]
        lines += tabulate(
            rows, headers=["#", "Member S/N", "Member Label", "Status"], disable_numparse=True
        ).splitlines()
        lines.append("")
    cfg = ha.settings(conf)
    count = cfg.reconnect_attempts
    recovery = (
        "disabled (reconnAtt = 0)"
        if count == 0
        else f"enabled, {'unlimited' if count < 0 else count} attempts, every {cfg.interval_s:g} s"
    )
    lines += [
        f"HA auto recovery:  {recovery}",
        f"HA only:           {'enabled' if cfg.ha_only else 'disabled'} (HAOnly)",
        f"HA log:            {'enabled' if cfg.log_enabled else 'disabled'}"
        + (f", {cfg.log_path}" if cfg.log_path else ""),
    ]
    return lines + _recovery_mode_note(conf) + _not_live(why)
