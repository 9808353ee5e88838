"""What a handler gets: prompts that validate, slot and session pickers, and output helpers."""

from __future__ import annotations

import threading
from typing import Any, Iterable, Sequence

from ..uri import URIError, is_uri, matching_slots, parse as parse_uri
from ..codes import CKRError
from ..workspace import OpenSession, Workspace
from . import render
from .io import MenuIO


class InputError(Exception):
    """The answer cannot be used: one line for the user, the choice is abandoned."""


class Context:
    """Everything on the screen goes through one ordered channel: the menu's and the handlers'
    lines, and HA events as they happen (`event`), each written whole."""

    def __init__(self, workspace: Workspace, io: MenuIO) -> None:
        self.workspace = workspace
        self.io = io
        self._screen = threading.RLock()
        self._menu_thread = threading.get_ident()
        self._waiting = False  # a prompt waits for its answer
        self._held: list[str] = []  # event lines from other threads while a prompt waits
        self._shown: dict[str, Any] = {}  # what the step in progress showed, as data (shown.py)
        for group in workspace.groups:  # a person sees a recovery inside the call that started it
            if hasattr(group, "show_recovery_inside_calls"):
                group.show_recovery_inside_calls()

    # output
    def write(self, text: str) -> None:
        with self._screen:
            self._release_held()
            self.io.write(text)

    def say(self, text: str = "") -> None:
        self.write(text + "\n")

    def event(self, event: Any) -> None:
        """An HA event (anything with .message()), shown when it happens: between the lines of
        the call it happened in. From another thread while a prompt waits, it follows the answer
        instead of splitting the prompt's line."""
        line = render.event_line(event.message()) + "\n"
        with self._screen:
            if self._waiting and threading.get_ident() != self._menu_thread:
                self._held.append(line)
            else:
                self.io.write(line)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for line in held:
            self.io.write(line)

    def _answer(self, ask, *args, **kwargs) -> str:
        with self._screen:
            self._release_held()
            self._waiting = True
        try:
            return ask(*args, **kwargs)
        finally:
            with self._screen:
                self._waiting = False
                self._release_held()

    def record(self, name: str, value: Any) -> None:
        """Keep what the step shows as data beside its lines, for a replay's expectations."""
        self._shown[name] = value

    def take_shown(self) -> dict[str, Any]:
        """What the step recorded (and a clean slate for the next one)."""
        shown, self._shown = self._shown, {}
        return shown

    def table(self, rows: Iterable[Sequence], headers: Sequence[str]) -> None:
        self.say(render.table(rows, headers))

    def fields(self, pairs: Iterable[tuple[str, object]]) -> None:
        self.say(render.fields(pairs))

    # input
    def ask_menu_choice(self, prompt: str) -> str:
        return self._answer(self.io.ask_choice, prompt)

    def ask(self, prompt: str, default: str | None = None) -> str:
        answer = self._answer(self.io.ask, prompt).strip()
        if not answer and default is not None:
            return default
        return answer

    def ask_secret(self, prompt: str) -> str:
        answer = self._answer(self.io.ask, prompt, secret=True)
        if not answer:
            raise InputError("Invalid input: an empty PIN.")
        return answer

    def ask_int(
        self, prompt: str, minimum: int | None = None, maximum: int | None = None, default: int | None = None
    ) -> int:
        text = self.ask(prompt, None if default is None else str(default))
        try:
            value = int(text, 0)
        except ValueError:
            raise InputError(f"Invalid input ({text}): a number is needed.") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise InputError(f"Invalid input ({text}): choose {minimum}-{maximum}.")
        return value

    def ask_choice(self, prompt: str, options: Sequence[tuple[int, str]]) -> int:
        """Numbered options, e.g. [(0, 'SO'), (1, 'User')]; returns the number chosen."""
        text = ", ".join(f"{label} [{n}]" for n, label in options)
        value = self.ask_int(f"{prompt} {text} : ")
        if value not in {n for n, _ in options}:
            raise InputError(
                f"Invalid input ({value}): choose one of {', '.join(str(n) for n, _ in options)}."
            )
        return value

    def ask_yes_no(self, prompt: str, default: bool) -> bool:
        text = self.ask(f"{prompt} [{'Y/n' if default else 'y/N'}] : ", "y" if default else "n")
        if text.lower() in ("y", "yes", "1"):
            return True
        if text.lower() in ("n", "no", "0"):
            return False
        raise InputError(f"Invalid input ({text}): answer y or n.")

    # pickers
    def choose_slot(self) -> tuple[int, Any]:
        slots = self.workspace.slots
        if not slots:
            raise InputError("No slots available.")
        if len(slots) == 1:  # CKDemo picks a lone slot without asking
            lone_slot = getattr(self.io, "lone_slot", None)  # a replay skips the script's answer
            if lone_slot is not None:
                lone_slot()
            return 1, slots[0]
        self.say("Slots available:")
        for number, slot in enumerate(slots, start=1):
            self.say(render.slot_row(number, slot_label(slot)))
        text = self.ask("Select a slot: ")
        if is_uri(text):  # RFC 7512, as pkcs11-tool users write it: pkcs11:token=member2
            return self._slot_by_uri(text, slots)
        try:
            number = int(text, 0)
        except ValueError:
            raise InputError(
                f"Invalid input ({text}): a number is needed. A pkcs11: URI names a "
                "slot too (pkcs11:token=member2)."
            ) from None
        if not 1 <= number <= len(slots):
            raise InputError(f"Invalid input: there is no slot#{number} (slots are 1-{len(slots)}).")
        return number, slots[number - 1]

    @staticmethod
    def _slot_by_uri(text: str, slots) -> tuple[int, Any]:
        try:
            found = matching_slots(parse_uri(text), slots)
        except URIError as exc:
            raise InputError(f"Invalid input: {exc}") from None
        if len(found) != 1:
            raise InputError(
                f"Invalid input: {text} matches {len(found) or 'no'} slot(s)"
                + (": add serial= to choose one." if found else ".")
            )
        return found[0]

    def choose_session(self) -> OpenSession:
        handle = self.ask_int("Enter your session handle : ")
        matches = self.workspace.sessions_with_handle(handle)
        if not matches:
            open_ = ", ".join(str(s.handle) for s in self.workspace.sessions)
            raise InputError(
                f"Invalid input: no open session with handle {handle} "
                + (f"(open: {open_})." if open_ else "(none is open: use choice 1).")
            )
        if len(matches) == 1:
            return matches[0]
        numbers = sorted(s.slot_number for s in matches)
        slot = self.ask_int(f"Handle {handle} is open on slots {numbers}; which slot# : ")
        for match in matches:
            if match.slot_number == slot:
                return match
        raise InputError(f"Invalid input: session {handle} is not open on slot#{slot}.")


def slot_label(slot: Any) -> str:
    try:
        return slot.description()
    except CKRError as exc:  # a dead member still appears in the list, with why
        return f"{slot.fallback_description} ({exc.name})"
