"""Each member's journal mark: a public data object on the member token that names the last
change of the group (journal.py) the member took. It is written after every change on every
member that took it, so it lives and dies with the token's own files: a member whose token
files are restored from before, or whose process restarts on an older copy, comes back with
the older mark, and recovery replays every change after it (or compares in full when the
journal does not reach back that far). A mark can only lag behind what the member holds (it
is written after the change), and replaying a change the member has already taken changes
nothing.

The mark is the group's own object (found by its CKA_APPLICATION, the number in its label), as
the domain keys are: the HA slot does not show it. It
is public (readable before any login: a member is recovered before the user logs in) and
carries no secret; whoever changes it can only make recovery compare in full, or, set to a
newer number, make the group skip changes on that member (no more than destroying objects on
the member token straight away could do).
"""

from __future__ import annotations

from typing import Any

from ..codes import CKR_OBJECT_HANDLE_INVALID, CKRError
from ..model import CKA_APPLICATION, CKA_CLASS, CKA_LABEL, CKA_PRIVATE, CKA_TOKEN, CKA_VALUE, CKO_DATA

MARK_LABEL = "ckdemo HA journal mark"
# SoftHSM2 2.6.1 lets only CKA_LABEL of a data object change (CKA_VALUE, CKA_APPLICATION and
# CKA_OBJECT_ID answer CKR_ATTRIBUTE_READ_ONLY): the mark is found by its CKA_APPLICATION and
# carried in its label


def is_mark(ident: dict[int, Any]) -> bool:
    """Is this (replication.identity) the group's mark rather than an application object?"""
    label = ident.get(CKA_LABEL) or ""
    if isinstance(label, (bytes, bytearray)):
        label = bytes(label).decode("utf-8", "replace")
    return ident.get(CKA_CLASS) == CKO_DATA and str(label).startswith(MARK_LABEL)


def is_mark_key(key: tuple) -> bool:
    """Is this replication.object_key the group's mark?"""
    return key[0] == CKO_DATA and str(key[2]).startswith(MARK_LABEL)


class Marks:
    """Reads and writes one group's mark on its members; remembers each member's mark handle
    (valid for the member's generation: handles are void after a member restarts)."""

    def __init__(self, group_serial: str) -> None:
        self.application = f"{MARK_LABEL} {group_serial}"
        self._handles: dict[str, tuple[int, int]] = {}  # member serial -> (generation, handle)
        self._unmarked: dict[str, int] = {}  # member serial -> generation it was seen with no mark

    def _find(self, session) -> list[int]:
        return session.find_objects({CKA_CLASS: CKO_DATA, CKA_APPLICATION: self.application})

    @staticmethod
    def _label(value: bytes) -> str:
        return f"{MARK_LABEL} {value.decode()}"

    def read(self, session, member=None) -> bytes | None:
        found = self._find(session)
        if len(found) != 1:
            return None  # none, or two (a half-made write): nothing proves the member's state
        if member is not None:  # its next write needs no search
            self._handles[member.serial] = (member.generation, found[0])
        label = session.get_attributes(found[0], [CKA_LABEL]).get(CKA_LABEL) or ""
        if isinstance(label, (bytes, bytearray)):
            label = bytes(label).decode("utf-8", "replace")
        return label[len(MARK_LABEL) + 1 :].encode() if label.startswith(MARK_LABEL + " ") else None

    def advance(self, session, member, value: bytes) -> None:
        """A change the member took: its mark moves on, if it has one. A member with none was
        never shown to hold what the others hold (only a recovery or a clean synchronisation
        gives it its first mark, `write`), so a change alone does not mark it."""
        if self._unmarked.get(member.serial) == member.generation:
            return
        known = self._handles.get(member.serial)
        if known is None or known[0] != member.generation:
            if not self._find(session):
                self._unmarked[member.serial] = member.generation
                return
        self.write(session, member, value)

    def drop(self, session, member) -> None:
        """The member lacks what the others have: no mark vouches for it any more."""
        for handle in self._find(session):
            session.destroy_object(handle)
        self._handles.pop(member.serial, None)
        self._unmarked[member.serial] = member.generation

    def write(self, session, member, value: bytes) -> None:
        """The member holds what the group holds as of `value`: marked so (made if need be)."""
        self._unmarked.pop(member.serial, None)
        known = self._handles.get(member.serial)
        if known is not None and known[0] == member.generation:
            try:
                session.set_attributes(known[1], {CKA_LABEL: self._label(value)})
                return
            except CKRError as exc:
                if exc.ckr != CKR_OBJECT_HANDLE_INVALID:
                    raise
        found = self._find(session)
        for extra in found[1:]:
            session.destroy_object(extra)
        if found:
            session.set_attributes(found[0], {CKA_LABEL: self._label(value)})
            handle = found[0]
        else:
            handle = session.create_object(
                {
                    CKA_CLASS: CKO_DATA,
                    CKA_TOKEN: True,
                    CKA_PRIVATE: False,
                    CKA_APPLICATION: self.application,
                    CKA_LABEL: self._label(value),
                    CKA_VALUE: b"ckdemo",
                }
            )
        self._handles[member.serial] = (member.generation, handle)

    def forget(self, member) -> None:
        self._handles.pop(member.serial, None)
