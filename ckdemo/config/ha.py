"""HA groups and settings in Luna's own Chrystoki.conf names (VirtualToken, HAConfiguration)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..ha.policy import DEFAULT_RECOVERY_INTERVAL_S, DEFAULT_RECOVERY_RETRIES
from .chrystoki import ChrystokiConf

VIRTUAL_TOKEN = "VirtualToken"
HA_CONFIGURATION = "HAConfiguration"
HA_SYNCHRONIZE = "HASynchronize"


@dataclass(frozen=True)
class GroupConfig:
    index: int  # the NN in VirtualTokenNNLabel
    label: str
    serial: str
    members: list[str]  # member token serials, in order (the first is the primary)


@dataclass(frozen=True)
class HASettings:
    reconnect_attempts: int = DEFAULT_RECOVERY_RETRIES  # reconnAtt
    interval_s: float = DEFAULT_RECOVERY_INTERVAL_S  # AutoReconnectInterval
    ha_only: bool = False  # HAOnly
    log_enabled: bool = False  # haLogStatus
    log_path: str | None = None  # haLogPath (a folder in Luna; a file or folder here)


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
        found.append(GroupConfig(int(nn), value, serial, members))
    return sorted(found, key=lambda g: g.index)


def set_group(conf: ChrystokiConf, label: str, members: list[str], index: int = 0) -> GroupConfig:
    nn = f"{index:02d}"
    serial = "1" + members[0]  # Luna: the group serial is 1 + the first member's serial
    conf.set(VIRTUAL_TOKEN, f"VirtualToken{nn}Label", label)
    conf.set(VIRTUAL_TOKEN, f"VirtualToken{nn}SN", serial)
    conf.set(VIRTUAL_TOKEN, f"VirtualToken{nn}Members", ",".join(members))
    return GroupConfig(index, label, serial, members)


def settings(conf: ChrystokiConf) -> HASettings:
    def number(key: str, default: float) -> float:
        value = conf.get(HA_CONFIGURATION, key)
        try:
            return float(value) if value is not None else default
        except ValueError:
            raise ValueError(f"{HA_CONFIGURATION}.{key} = {value!r} is not a number") from None
    status = (conf.get(HA_CONFIGURATION, "haLogStatus") or "").strip().lower()
    return HASettings(int(number("reconnAtt", DEFAULT_RECOVERY_RETRIES)),
                      number("AutoReconnectInterval", DEFAULT_RECOVERY_INTERVAL_S),
                      (conf.get(HA_CONFIGURATION, "HAOnly") or "0").strip() == "1",
                      status == "enabled", conf.get(HA_CONFIGURATION, "haLogPath"))


def synchronize_on_recovery(conf: ChrystokiConf, label: str) -> bool:
    """HASynchronize = { <label> = 1; }: on unless the group's entry says 0."""
    return (conf.get(HA_SYNCHRONIZE, label) or "1").strip() != "0"


def set_retry(conf: ChrystokiConf, count: int) -> None:
    conf.set(HA_CONFIGURATION, "reconnAtt", str(count))


def set_interval(conf: ChrystokiConf, seconds: float) -> None:
    conf.set(HA_CONFIGURATION, "AutoReconnectInterval", f"{seconds:g}")
