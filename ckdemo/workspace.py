"""What the menu works on: the numbered slot list and the sessions opened through it.

Slots are physical member slots or HA virtual slots; both offer the same operations, so nothing
here (or in the handlers) can tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class OpenSession:
    slot_number: int
    slot: Any
    session: Any

    @property
    def handle(self) -> int:
        return self.session.handle


@dataclass
class Options:
    """Harness settings shown and changed by choice 98."""

    show_menu: bool = True  # redisplay the menu before every prompt (CKDemo's default)
    hex_echo: bool = True  # show data (random bytes, signatures) in hex
    verbose_errors: bool = True  # a failed choice also prints its detail line (which key, member...)
    token_objects: bool = True  # default answer to "Token object?" for keys made by 61, 63, 65


@dataclass
class Workspace:
    slots: list[Any]
    # the HA virtual slots among `slots`, as the harness built them: what the HA functions
    # (50-52, 120-125), the script's HA directives and `hagroup` act on
    groups: list[Any] = field(default_factory=list)
    sessions: list[OpenSession] = field(default_factory=list)
    options: Options = field(default_factory=Options)
    app_id: tuple[int, int] | None = None
    # handles the run made last, for scripts (${LAST_SESSION}, ${LAST_OBJECT}, ...): modules
    # number handles their own way, so a portable script names them this way
    last: dict[str, int] = field(default_factory=dict)

    def remember(self, **handles: int) -> None:
        self.last.update({f"LAST_{name.upper()}": value for name, value in handles.items()})

    def slot(self, number: int) -> Any:
        return self.slots[number - 1]

    def add_session(self, slot_number: int, session: Any) -> OpenSession:
        opened = OpenSession(slot_number, self.slot(slot_number), session)
        self.sessions.append(opened)
        self.remember(session=session.handle)
        return opened

    def sessions_with_handle(self, handle: int) -> list[OpenSession]:
        return [s for s in self.sessions if s.handle == handle]

    def forget_session(self, opened: OpenSession) -> None:
        self.sessions.remove(opened)

    def exports(self, symbol: str) -> list[str]:
        """Paths of the loaded libraries that export `symbol` (e.g. a Luna CA_* extension)."""
        paths: list[str] = []
        for slot in self.slots:
            paths += [p for p in slot.exports(symbol) if p not in paths]
        return paths
