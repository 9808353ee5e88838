"""HA groups and settings in Luna's own Chrystoki.conf names (VirtualToken, HAConfiguration)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..ha.policy import DEFAULT_RECOVERY_INTERVAL_S, DEFAULT_RECOVERY_RETRIES
from .chrystoki import ChrystokiConf

VIRTUAL_TOKEN = "VirtualToken"
HA_CONFIGURATION = "HAConfiguration"
HA_SYNCHRONIZE = "HASynchronize"
RECOVERY_MODE = "VirtualTokenActiveRecovery"  # lunacm: hagroup recoverymode (activeBasic, ...)
MAX_RECONNECT_ATTEMPTS = 2**31 - 1  # reconnAtt: -1 unlimited, 0 off, else 1 .. this
MAX_INTERVAL_S = 86400.0  # AutoReconnectInterval: more than 0 s, at most one day


def parse_retries(value: str, what: str = f"{HA_CONFIGURATION}.reconnAtt") -> int:
    """reconnAtt as written: a whole number, -1 (unlimited), 0 (off) or a count of attempts."""
    text = value.strip()
    try:
        count = int(text)
    except ValueError:
        try:
            float(text)
        except ValueError:
            raise ValueError(f"{what} = {value!r} is not a number") from None
        raise ValueError(
            f"{what} = {value!r} is not a whole number (-1 unlimited, 0 off, N attempts)"
        ) from None
    if not -1 <= count <= MAX_RECONNECT_ATTEMPTS:
        raise ValueError(
            f"{what} = {value!r} is out of range (-1 unlimited, 0 off, 1-{MAX_RECONNECT_ATTEMPTS} attempts)"
        )
    return count


def parse_interval(value: str, what: str = f"{HA_CONFIGURATION}.AutoReconnectInterval") -> float:
    """AutoReconnectInterval as written: seconds, more than 0 and at most MAX_INTERVAL_S (nan and
    inf are refused: with them recovery would silently never happen)."""
    try:
        seconds = float(value.strip())
    except ValueError:
        raise ValueError(f"{what} = {value!r} is not a number") from None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_INTERVAL_S):
        raise ValueError(
            f"{what} = {value!r} is out of range (seconds, more than 0 and at most {MAX_INTERVAL_S:g})"
        )
    return seconds


@dataclass(frozen=True)
class GroupConfig:
    index: int  # the NN in VirtualTokenNNLabel
    label: str
    serial: str
    members: list[str]  # member token serials, in order (the first is the primary)
    standby: list[str] = field(default_factory=list)  # members that are standby (addstandby)


@dataclass(frozen=True)
class HASettings:
    reconnect_attempts: int = DEFAULT_RECOVERY_RETRIES  # reconnAtt
    interval_s: float = DEFAULT_RECOVERY_INTERVAL_S  # AutoReconnectInterval
    ha_only: bool = False  # HAOnly
    log_enabled: bool = False  # haLogStatus
    log_path: str | None = None  # haLogPath (a folder in Luna; a file or folder here)
    recovery_mode: str = "activeBasic"  # VirtualToken.VirtualTokenActiveRecovery


def groups(conf: ChrystokiConf) -> list[GroupConfig]:
    section = conf.section(VIRTUAL_TOKEN)
    found = []
    for key, value in section.items():
        match = re.fullmatch(r"VirtualToken(\d+)Label", key)
        if not match:
            continue
        nn = match.group(1)
        members = [s.strip() for s in (section.get(f"VirtualToken{nn}Members") or "").split(",") if s.strip()]
        serial = section.get(f"VirtualToken{nn}SN") or ("1" + members[0] if members else "")
        standby = [
            s.strip()
            for s in (section.get(f"VirtualToken{nn}Standby") or "").split(",")
            if s.strip() in members
        ]
        found.append(GroupConfig(int(nn), value, serial, members, standby))
    return sorted(found, key=lambda g: g.index)


def set_group(conf: ChrystokiConf, label: str, members: list[str], index: int = 0) -> GroupConfig:
    nn = f"{index:02d}"
    serial = "1" + members[0]  # Luna: the group serial is 1 + the first member's serial
    conf.set(VIRTUAL_TOKEN, f"VirtualToken{nn}Label", label)
    conf.set(VIRTUAL_TOKEN, f"VirtualToken{nn}SN", serial)
    conf.set(VIRTUAL_TOKEN, f"VirtualToken{nn}Members", ",".join(members))
    return GroupConfig(index, label, serial, members)


def settings(conf: ChrystokiConf) -> HASettings:
    """The HAConfiguration section; a value ckdemo cannot use raises ValueError (one line)."""
    retries = conf.get(HA_CONFIGURATION, "reconnAtt")
    interval = conf.get(HA_CONFIGURATION, "AutoReconnectInterval")
    status = (conf.get(HA_CONFIGURATION, "haLogStatus") or "").strip().lower()
    for label, value in conf.section(HA_SYNCHRONIZE).items():
        if value.strip() not in ("0", "1"):  # nan, yes, 2 ...: not a switch Luna writes
            raise ValueError(f"{HA_SYNCHRONIZE}.{label} = {value!r} is not 1 (on) or 0 (off)")
    return HASettings(
        DEFAULT_RECOVERY_RETRIES if retries is None else parse_retries(retries),
        DEFAULT_RECOVERY_INTERVAL_S if interval is None else parse_interval(interval),
        (conf.get(HA_CONFIGURATION, "HAOnly") or "0").strip() == "1",
        status == "enabled",
        conf.get(HA_CONFIGURATION, "haLogPath"),
        recovery_mode(conf),
    )


def synchronize_on_recovery(conf: ChrystokiConf, label: str) -> bool:
    """HASynchronize = { <label> = 1; }: on unless the group's entry says 0."""
    return (conf.get(HA_SYNCHRONIZE, label) or "1").strip() != "0"


def set_synchronize(conf: ChrystokiConf, label: str, on: bool) -> None:
    """HASynchronize = { <label> = 1 or 0; } (lunacm: hagroup synchronize -group L, -enable or -disable)."""
    conf.set(HA_SYNCHRONIZE, label, "1" if on else "0")


RECOVERY_MODES = ("activeBasic", "activeEnhanced")


def recovery_mode(conf: ChrystokiConf) -> str:
    """VirtualTokenActiveRecovery as lunacm writes it (hagroup recoverymode): activeBasic (the
    default: recovery inside application calls) or activeEnhanced (in the background); any case."""
    value = (conf.get(VIRTUAL_TOKEN, RECOVERY_MODE) or "activeBasic").strip()
    for mode in RECOVERY_MODES:
        if value.lower() == mode.lower():
            return mode
    raise ValueError(f"{VIRTUAL_TOKEN}.{RECOVERY_MODE} = {value!r}: one of {', '.join(RECOVERY_MODES)}")


def set_recovery_mode(conf: ChrystokiConf, mode: str) -> None:
    """lunacm: hagroup recoverymode -mode activeBasic or -mode activeEnhanced."""
    conf.set(VIRTUAL_TOKEN, RECOVERY_MODE, mode)


def find_group(conf: ChrystokiConf, ref: str | None) -> GroupConfig:
    """The group a `hagroup` command names by label or serial; without a name, the only group."""
    found = groups(conf)
    if not found:
        raise ValueError("no HA group in the configuration (VirtualToken section)")
    if ref is None:
        if len(found) > 1:
            raise ValueError(
                f"{len(found)} HA groups are configured: name one with --group "
                f"({', '.join(g.label for g in found)})"
            )
        return found[0]
    matches = [g for g in found if ref in (g.label, g.serial)]
    if not matches:
        raise ValueError(f"no HA group {ref!r} (groups: {', '.join(g.label for g in found)})")
    if len(matches) > 1:
        raise ValueError(f"{ref!r} names {len(matches)} HA groups: use the group serial")
    return matches[0]


def add_member(conf: ChrystokiConf, group: GroupConfig, serial: str) -> GroupConfig:
    """The member joins the end of the list (lunacm: hagroup addmember); the group serial stays.
    A token is a member of one group only (each group logs in to it and keeps it current)."""
    if serial in group.members:
        raise ValueError(f"HSM {serial} is already a member of HA group {group.label}")
    _not_in_another_group(conf, serial, group.label)
    return _set_members(conf, group, group.members + [serial])


def _not_in_another_group(conf: ChrystokiConf, serial: str, label: str | None) -> None:
    for other in groups(conf):
        if other.label != label and serial in other.members:
            raise ValueError(
                f"HSM {serial} is a member of HA group {other.label} already: a token "
                "is in one group only (hagroup removemember it there first)"
            )


def create_group(conf: ChrystokiConf, label: str, serial: str) -> GroupConfig:
    """lunacm: hagroup creategroup -label L -serial S: a new group whose first member is S (its
    serial: 1 + S, as Luna makes it)."""
    if not label.strip() or not re.fullmatch(r"[\w.-]{1,32}", label):
        raise ValueError(f"a group label is 1 to 32 letters, digits, '.', '-' or '_', not {label!r}")
    found = groups(conf)
    if any(g.label == label for g in found):
        raise ValueError(f"an HA group {label!r} exists already")
    _not_in_another_group(conf, serial, None)
    index = max((g.index for g in found), default=-1) + 1
    return set_group(conf, label, [serial], index)


def delete_group(conf: ChrystokiConf, group: GroupConfig) -> None:
    """lunacm: hagroup deletegroup -label L: the group's entries leave the file (its members'
    tokens and keys are untouched)."""
    nn = f"{group.index:02d}"
    for key in ("Label", "SN", "Members", "Standby"):
        conf.remove(VIRTUAL_TOKEN, f"VirtualToken{nn}{key}")
    conf.remove(HA_SYNCHRONIZE, group.label)


def remove_member(conf: ChrystokiConf, group: GroupConfig, serial: str) -> GroupConfig:
    """The member leaves the list; the last member cannot leave (a group needs one), and the
    group serial stays what it was even when the first member leaves (the virtual slot's
    identity must not change under the applications using it)."""
    if serial not in group.members:
        raise ValueError(
            f"HSM {serial} is not a member of HA group {group.label} (members: {', '.join(group.members)})"
        )
    if len(group.members) == 1:
        raise ValueError(
            f"HSM {serial} is the last member of HA group {group.label}: a group "
            "needs one member (`ckdemo hagroup deletegroup -label L` deletes the group)"
        )
    return _set_members(conf, group, [m for m in group.members if m != serial])


def _set_members(conf: ChrystokiConf, group: GroupConfig, members: list[str]) -> GroupConfig:
    nn = f"{group.index:02d}"
    conf.set(VIRTUAL_TOKEN, f"VirtualToken{nn}SN", group.serial)  # written out if it was implied
    conf.set(VIRTUAL_TOKEN, f"VirtualToken{nn}Members", ",".join(members))
    standby = [s for s in group.standby if s in members]  # a member that leaves is no standby
    if standby != group.standby:
        if standby:
            conf.set(VIRTUAL_TOKEN, f"VirtualToken{nn}Standby", ",".join(standby))
        else:
            conf.remove(VIRTUAL_TOKEN, f"VirtualToken{nn}Standby")
    return GroupConfig(group.index, group.label, group.serial, members, standby)


def set_retry(conf: ChrystokiConf, count: int) -> None:
    conf.set(HA_CONFIGURATION, "reconnAtt", str(parse_retries(str(count), "reconnAtt")))


def set_interval(conf: ChrystokiConf, seconds: float) -> None:
    conf.set(
        HA_CONFIGURATION,
        "AutoReconnectInterval",
        f"{parse_interval(repr(seconds), 'AutoReconnectInterval'):g}",
    )


def set_standby(conf: ChrystokiConf, group: GroupConfig, serial: str, standby: bool) -> GroupConfig:
    """lunacm: hagroup addstandby / removestandby -group L -serial S (S a member already):
    VirtualToken<NN>Standby lists the group's standby members (ckdemo's name for the key)."""
    if serial not in group.members:
        raise ValueError(
            f"{serial} is not a member of {group.label}: add it first "
            "(hagroup addmember), then make it standby"
        )
    chosen = [s for s in group.standby if s != serial] + ([serial] if standby else [])
    if standby and len(set(chosen)) == len(group.members):
        raise ValueError(f"every member of {group.label} would be standby: one must stay active")
    nn = f"{group.index:02d}"
    if chosen:
        conf.set(VIRTUAL_TOKEN, f"VirtualToken{nn}Standby", ",".join(chosen))
    else:
        conf.remove(VIRTUAL_TOKEN, f"VirtualToken{nn}Standby")
    return GroupConfig(group.index, group.label, group.serial, group.members, chosen)
