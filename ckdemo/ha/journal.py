"""The group's journal of changes: which objects each change on the HA slot touched, by number.

Every change the HA slot makes on its members (create, generate, copy, unwrap, derive, destroy,
set attribute, and the copies `hagroup synchronize` makes) takes the next number of the group's
sequence before it touches any member, and records the identities it touched when it is made (replication.object_key, as the members hold
them). Every member that took the change is then marked with that number (marks.py). A member
that comes back marked N is exactly as the group was at N (or newer: a mark is written after
the change), so bringing it up to date needs only the objects touched after N: work that
follows what changed while it was away, not what the group holds (recovery.py).

The journal proves nothing, and the full comparison runs, when it does not hold every number
after N: it was overflowed (CAPACITY changes), another process made some of the changes (the
sequence is shared by every process on the home, the entries are this process's), a process was
killed in the middle of a change, this process started after N, or the member's mark is missing
or from another sequence.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Protocol

from ..codes import CKR_FUNCTION_FAILED, CKRError

CAPACITY = 4096  # changes kept; a member away for more is compared in full


class Sequence(Protocol):
    """Where the group's change numbers come from."""

    id: str  # names this sequence: a mark from another one proves nothing

    def next(self) -> int: ...
    def head(self) -> int: ...


class MemorySequence:
    """Numbers of this process only (no state folder): a new process proves nothing."""

    def __init__(self) -> None:
        self.id = os.urandom(6).hex()
        self._head = 0

    def next(self) -> int:
        self._head += 1
        return self._head

    def head(self) -> int:
        return self._head


class FileSequence:
    """Numbers shared by every process on the home: a file `<id> <head>` in the state folder,
    read and written under the state lock the changes already hold, so a number another process
    took is a hole in this process's journal (and proves nothing), never a number taken twice.
    Nothing is read or written before the first change or recovery (a read-only home starts)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._id: str | None = None

    @property
    def id(self) -> str:
        if self._id is None:
            with self._lock:
                self._id = self._read()[0]
        return self._id

    def _read(self) -> tuple[str, int]:
        try:
            text = self.path.read_text().split()
            return text[0], int(text[1])
        except (OSError, IndexError, ValueError):
            sequence_id = os.urandom(6).hex()  # new (or unreadable: every mark is unknown then)
            self._write(sequence_id, 0)
            return sequence_id, 0

    def _write(self, sequence_id: str, head: int) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temporary.write_text(f"{sequence_id} {head}\n")
            os.replace(temporary, self.path)
        except OSError as exc:  # a read-only home: one line, the call fails
            raise CKRError(
                CKR_FUNCTION_FAILED,
                "ckdemo journal",
                f"cannot write {self.path}: {exc.strerror or exc} (the home must be writable)",
            ) from None

    def next(self) -> int:
        with self._lock:
            sequence_id, head = self._read()
            self._id = sequence_id  # made anew meanwhile: this process's entries are void (Journal)
            self._write(sequence_id, head + 1)
            return head + 1

    def head(self) -> int:
        with self._lock:
            sequence_id, head = self._read()
            self._id = sequence_id
            return head


class Journal:
    """The last CAPACITY changes of this process: number -> identities touched."""

    def __init__(self, sequence: Sequence | None = None, capacity: int = CAPACITY) -> None:
        self.sequence = sequence or MemorySequence()
        self.capacity = capacity
        self.entries: OrderedDict[int, frozenset[tuple]] = OrderedDict()
        self._lock = threading.Lock()
        self._sequence_id: str | None = None  # (read at the first change: a read-only home starts)
        self.in_flight: set[int] = set()  # numbers of this process's changes under way

    def begin(self) -> int:
        """A change is about to be made (the state lock is held): its number, taken before any
        member is touched, so a process killed in the middle leaves a number no journal holds
        (a hole: recovery compares in full rather than trust a half-made change)."""
        with self._lock:
            number = self.sequence.next()
            if self.sequence.id != self._sequence_id:
                self.entries.clear()
                self._sequence_id = self.sequence.id
            self.in_flight.add(number)
            return number

    def end(self, number: int, keys: Iterable[tuple]) -> None:
        """The change is made (or refused: no identities): what it touched."""
        with self._lock:
            self.in_flight.discard(number)
            self.entries[number] = frozenset(keys)
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)

    def record(self, keys: Iterable[tuple]) -> int:
        """A change made at once: begin() and end()."""
        number = self.begin()
        self.end(number, keys)
        return number

    def mark(self, number: int | None = None) -> bytes:
        """What a member that took every change up to `number` is marked with; by default the
        last change made (a change of this process still under way is not: it may yet fail on
        that member)."""
        if number is None:
            number = self.head()
            with self._lock:
                if self.in_flight:
                    number = min(self.in_flight) - 1
        return f"{self.sequence.id}:{number}".encode()

    def head(self) -> int:
        return self.sequence.head()

    def since(self, mark: bytes | None) -> frozenset[tuple] | None:
        """Every identity touched after the change a member's mark names; None when the
        journal cannot tell (no mark, another sequence, or a number it does not hold: another
        process's change, or one a killed process left half made). This process's change under
        way is no hole: the member takes it when it serves again (or its mark stays before it)."""
        parsed = parse_mark(mark)
        if parsed is None:
            return None
        sequence_id, number = parsed
        head = self.head()
        with self._lock:
            if (
                sequence_id != self.sequence.id
                or number > head
                or head - number > len(self.entries) + len(self.in_flight)
            ):
                return None
            touched: set[tuple] = set()
            for wanted in range(number + 1, head + 1):
                keys = self.entries.get(wanted)
                if keys is None:
                    if wanted in self.in_flight:
                        continue
                    return None
                touched |= keys
            return frozenset(touched)


def parse_mark(mark: bytes | None) -> tuple[str, int] | None:
    try:
        sequence_id, number = bytes(mark).decode().split(":")
        return sequence_id, int(number)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
