"""The ${NAME} values a script sees: the harness's handles and slot numbers, then the environment
(and the config's test PINs), then the script's own @default lines.

Slot numbers differ from one set-up to the next (`init --members 2` moves the HA slot from
slot#5 to slot#4, HAOnly makes it slot#1), so portable scripts name them:
${HA_SLOT} (the HA virtual slot, when there is one group), ${HA_SLOT_<label>} (each group, the
label with every character other than a letter, digit or _ written as _) and ${MEMBER_SLOT_<n>}
(the n-th member of the HA group(s), in group order).
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

from .script import VARIABLE, HANDLE_PREFIX, Line, ScriptError


TOUR_SLOT = "TOUR_SLOT"  # the slot the shipped tours run on; `ckdemo run --token-label` sets it


def group_variable(label: str) -> str:
    return "HA_SLOT_" + re.sub(r"\W", "_", label)


def slot_numbers(slots: list[Any], groups: list[Any]) -> tuple[dict[str, int], dict[str, str]]:
    """({variable: slot number}, {variable: why it has none}) for the workspace's slot list."""
    numbers: dict[str, int] = {}
    missing: dict[str, str] = {}

    def number_of(slot: Any) -> int | None:
        return next((n for n, s in enumerate(slots, start=1) if s is slot), None)

    listed = [g for g in groups if number_of(g) is not None]
    for group in listed:
        numbers[group_variable(group.label)] = number_of(group)
    if len(listed) == 1:
        numbers["HA_SLOT"] = number_of(listed[0])
    elif listed:
        names = ", ".join("${" + group_variable(g.label) + "}" for g in listed)
        missing["HA_SLOT"] = f"{len(listed)} HA groups are configured: name one ({names})"
    else:
        missing["HA_SLOT"] = "no HA group is configured (VirtualToken section of the configuration)"
    members: list[Any] = []
    for group in listed:
        members += [m for m in group.members if all(m.serial != seen.serial for seen in members)]
    for position, member in enumerate(members, start=1):
        name = f"MEMBER_SLOT_{position}"
        number = number_of(member.slot) if member.slot is not None else None
        if number is not None:
            numbers[name] = number
        elif member.slot is not None:  # found, but not in the list
            missing[name] = (
                f"member {position} ({member.label or member.serial}) has no slot in the "
                "list: HAOnly lists only the HA virtual slots (ckdemo hagroup haonly off)"
            )
        else:
            missing[name] = (
                f"member {position} ({member.serial}) was not found when ckdemo started, "
                "so it has no slot number"
            )
    missing["MEMBER_SLOT_"] = (
        f"the HA group has {len(members)} member(s)"
        if members
        else "no HA group is configured, so there are no members to number"
    )
    return numbers, missing


class ScriptVariables(Mapping):
    """${NAME} -> value: handles as they are now, slot numbers, what the command line chose
    (`run --token-label`: ${TOUR_SLOT}), the environment, @default lines."""

    def __init__(
        self,
        secrets: Mapping[str, str],
        handles: Mapping[str, int],
        slots: Mapping[str, int] | None = None,
        missing: Mapping[str, str] | None = None,
        defaults: Mapping[str, str] | None = None,
        chosen: Mapping[str, str] | None = None,
    ) -> None:
        self.secrets, self.handles = secrets, handles
        self.slots, self.missing = dict(slots or {}), dict(missing or {})
        self.defaults = dict(defaults or {})
        self.chosen = dict(chosen or {})

    def __getitem__(self, name: str) -> str:
        return self._value(name, ())

    def _value(self, name: str, resolving: tuple[str, ...]) -> str:
        if name in resolving:  # @default X ${X}, or X -> Y -> X: no value, why_missing says why
            raise KeyError(name)
        if name in self.handles:
            return str(self.handles[name])
        if name in self.slots:
            return str(self.slots[name])
        if name in self.chosen:
            return self.chosen[name]
        if name in self.secrets:
            return self.secrets[name]
        if name in self.defaults:
            return VARIABLE.sub(lambda m: self._value(m.group(1), (*resolving, name)), self.defaults[name])
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        yield from self.handles
        yield from self.slots
        yield from self.chosen
        yield from (name for name in self.secrets if name not in self.chosen)
        yield from (name for name in self.defaults if name not in self.secrets and name not in self.chosen)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def why_missing(self, name: str, resolving: tuple[str, ...] = ()) -> str:
        """One line: why ${name} has no value here."""
        if name in self.defaults and name not in self.secrets and name not in self.chosen:
            inner = [m.group(1) for m in VARIABLE.finditer(self.defaults[name]) if m.group(1) not in self]
            if inner and inner[0] in (*resolving, name):
                cycle = " -> ".join("${" + n + "}" for n in (*resolving, name, inner[0]))
                return (
                    f"${{{resolving[0] if resolving else name}}} has no value: its @default "
                    f"lines refer back to themselves ({cycle})"
                )
            if inner and resolving:
                return self.why_missing(inner[0], (*resolving, name))
            if inner:
                return (
                    f"${{{name}}} is not set and its @default needs "
                    f"{self.why_missing(inner[0], (*resolving, name))} (or export {name}=...)"
                )
        if name in self.missing:
            return f"${{{name}}}: {self.missing[name]}"
        if name.startswith("MEMBER_SLOT_") and "MEMBER_SLOT_" in self.missing:
            return f"${{{name}}}: {self.missing['MEMBER_SLOT_']}"
        if name.startswith("HA_SLOT_"):
            known = ", ".join("${" + n + "}" for n in self.slots if n.startswith("HA_SLOT_")) or "none"
            return f"${{{name}}}: no HA group has that label (groups: {known})"
        return f"${{{name}}} is not set (export {name}=...)"


def check(lines: list[Line], variables: ScriptVariables, source: str) -> None:
    """Every ${NAME} the script uses has a value before anything runs (the harness's handles
    excepted: they come with the steps); ScriptError naming the first line that lacks one."""
    for line in lines:
        if line.is_directive:
            continue
        for name in VARIABLE.findall(line.text):
            if name.startswith(HANDLE_PREFIX) or name in variables:
                continue
            raise ScriptError(f"{source}:{line.number}: {variables.why_missing(name)}")
