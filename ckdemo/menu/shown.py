"""What a step showed, as data beside its lines: a replay's expectations read this, not the screen
(`@expect-status` checks the HA Status rows of the step before it)."""

from __future__ import annotations

from dataclasses import dataclass

HA_STATUS = "ha_status"  # the key of HAStatusShown in a step's `shown`


@dataclass(frozen=True)
class HAStatusRow:
    number: int  # the member's number in the group, from 1
    serial: str
    label: str
    status: str  # the CKR_* name the row showed


@dataclass(frozen=True)
class HAStatusShown:
    group: str  # the HA group's serial
    rows: tuple[HAStatusRow, ...]
