"""All screen formatting in one place: the menu, status lines, tables and field lists."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from ..codes import CKR_OK, ckr_name
from .table import GROUPS, MENU, Entry


def menu_text(
    extra: Sequence[Entry] = (), extra_groups: Sequence = (), marks: Mapping[int, str] | None = None
) -> str:
    """CKDemo's menu; `marks` puts a one-character mark between a choice's number and title (99)."""
    lines: list[str] = []
    groups = list(GROUPS) + list(extra_groups)
    entries = list(MENU) + list(extra)
    for group in groups:
        members = [e for e in entries if e.group == group.heading]
        if not members:
            continue
        lines.append(group.heading)
        cells = [
            f"({e.number:2d}){(marks or {}).get(e.number, ' ')}{e.title:<{group.width}}" for e in members
        ]
        for i in range(0, len(cells), group.columns):
            lines.append("".join(cells[i : i + group.columns]).rstrip())
    lines.append("(0) Quit demo")
    return "\n".join(lines) + "\n"


SLOT_ROW = "  slot#{number} - {description}"  # CKDemo's slot list, one slot a line


def slot_row(number: int, description: str) -> str:
    return SLOT_ROW.format(number=number, description=description)


LUNA_ONLY_MISSING, LUNA_ONLY_EXPORTED = "*", "+"  # 99's marks in the menu


def luna_only_note(missing: Sequence[int], present: Sequence[int]) -> str:
    """What 99 adds under the menu: which choices need a Luna extension the loaded module lacks."""
    lines = []
    if missing or present:
        lines.append(
            f"(nn){LUNA_ONLY_MISSING} marks a Luna-only choice the loaded module lacks"
            + (f"; (nn){LUNA_ONLY_EXPORTED} one it exports (ckdemo does not call it yet)" if present else "")
            + ":"
        )
    if missing:
        lines.append(
            "Luna-only, not in the loaded module (CKR_FUNCTION_NOT_SUPPORTED): "
            + ", ".join(str(n) for n in missing)
        )
    if present:
        lines.append("Luna-only, exported by the loaded module: " + ", ".join(str(n) for n in present))
    return "\n".join(lines) + ("\n" if lines else "")


def status_line(ckr: int, function: str = "") -> str:
    if ckr == CKR_OK:
        return "Status: Doing great, no errors (CKR_OK)"
    return f"Status: {function or 'The last call'} returned error. ({ckr_name(ckr)} 0x{ckr:08X})"


def event_line(message: str) -> str:
    """An HA event (failed, recovered, ...) as the menu shows it, where it happened."""
    return f"  ({message})"


def table(rows: Iterable[Sequence], headers: Sequence[str]) -> str:
    from tabulate import tabulate  # ~20 ms to import; the first screen has no table

    return tabulate(list(rows), headers=list(headers), tablefmt="simple", disable_numparse=True)


def fields(pairs: Iterable[tuple[str, object]], indent: int = 3) -> str:
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{' ' * indent}{k:<{width}} : {v}" for k, v in pairs)


def version(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def flags(value: int, names: Sequence[str]) -> str:
    return f"0x{value:08X}" + (f" ({' | '.join(names)})" if names else "")
