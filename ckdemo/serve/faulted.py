"""Answering a request with the fault lab's faults applied: a wrapper around Connection.answer.

The request loop calls `FaultedAnswers.answer` instead of `Connection.answer` while the server's
FaultBook holds a rule or has had an event; with none, this module is not on the path at all.
What each fault does to the call:

- error: the call is not made; the application gets the code. A part of an operation that fails
  ends the operation, as on a token (PKCS#11 5.2: an error other than a size answer ends it), so
  the application's next C_*Init starts afresh.
- latency / hang: the call is made after the delay (a hang: until its time is up or the fault is
  cleared).
- disconnect: no reply, the connection closes (the call is not made).
- corrupt: the call is made and the last byte of its output is flipped.
- HSM restart: at this connection's next call, every session it had ends and its login is lost
  (the application sees CKR_SESSION_HANDLE_INVALID, and new session handles after that), and
  object handles change: from then on this connection sees every object under a new number
  (`Renumbered`), so a handle kept from before the restart is CKR_OBJECT_HANDLE_INVALID (or
  CKR_KEY_HANDLE_INVALID), as after an appliance reboot; a search finds the objects again.
- library reset: the same, and every call but C_Initialize answers CKR_CRYPTOKI_NOT_INITIALIZED
  until the application initializes again (p11-kit's client reconnects at C_Initialize).
- token removed: every session ends; the slot says no token (C_GetSlotInfo's flags, C_GetSlotList
  with tokenPresent), token calls answer CKR_TOKEN_NOT_PRESENT, and C_WaitForSlotEvent tells each
  connection of the removal, and later of the insertion, once.
- serial change: C_GetTokenInfo gives another serial number from then on (as a cluster whose
  nodes have different serials, or an HSM replaced behind the same address).
- slot change: the token is in another slot from then on (`SlotMoved`): C_GetSlotList and
  C_WaitForSlotEvent give other slot ids, C_GetSessionInfo says the new one, and a slot id kept
  from before is CKR_SLOT_ID_INVALID (an appliance whose partitions came back numbered anew; an
  application that chose its slot by number once, not by token label or serial, breaks here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from ..codes import CKR_CRYPTOKI_NOT_INITIALIZED, CKR_TOKEN_NOT_PRESENT, CKRError
from ..rpc.buffer import CodecError
from ..rpc.calls import BY_ID, CALL_ERROR
from ..rpc.codec import decode_request, decode_response, encode_error, encode_request, encode_response
from .faults import OUTPUT_CALLS, CallRecord, FaultBook, Injection
from .handle_names import HANDLE_ARGS, HANDLE_REPLIES

# the parts of an operation after its C_*Init: an error ends the operation
OPERATION_KINDS = {
    "C_Sign": "sign",
    "C_SignUpdate": "sign",
    "C_SignFinal": "sign",
    "C_Verify": "verify",
    "C_VerifyUpdate": "verify",
    "C_VerifyFinal": "verify",
    "C_Encrypt": "encrypt",
    "C_EncryptUpdate": "encrypt",
    "C_EncryptFinal": "encrypt",
    "C_Decrypt": "decrypt",
    "C_DecryptUpdate": "decrypt",
    "C_DecryptFinal": "decrypt",
    "C_Digest": "digest",
    "C_DigestUpdate": "digest",
    "C_DigestKey": "digest",
    "C_DigestFinal": "digest",
}


def call_name(body: bytes) -> str:
    """The PKCS#11 function a request body calls ('' when it names none)."""
    if len(body) < 4:
        return ""
    call = BY_ID.get(int.from_bytes(body[:4], "big"))
    return call.name if call is not None and call.id != CALL_ERROR else ""


def _size_query(body: bytes) -> bool:
    """A call asking for the size of its output only (the buffer it offers is NULL: p11-kit
    sends its length as 0)."""
    try:
        return decode_request(body).args[-1] == 0
    except (CodecError, CKRError, IndexError):
        return False


def corrupted(reply: bytes) -> bytes:
    """The reply with the last byte of its output flipped (an error reply stays as it is)."""
    if len(reply) < 5 or int.from_bytes(reply[:4], "big") == CALL_ERROR:
        return reply
    return reply[:-1] + bytes([reply[-1] ^ 0x01])


def _rewritten(reply: bytes, name: str, change) -> bytes:
    if int.from_bytes(reply[:4], "big") == CALL_ERROR:
        return reply
    try:
        return encode_response(name, change(decode_response(reply, name).args[0]))
    except (CodecError, IndexError):
        return reply


def _serial(serial: bytes | str, changes: int) -> str:
    """Another serial number of the same width (16 characters)."""
    text = serial.decode(errors="replace") if isinstance(serial, bytes) else serial
    suffix = f"-{changes}"
    return (text.strip()[: 16 - len(suffix)] + suffix).ljust(16)


def result_of(reply: bytes | None) -> int | None:
    """The CK_RV a reply carries (CKR_OK for a reply with results); None: no reply was sent."""
    if reply is None:
        return None
    if len(reply) >= 4 and int.from_bytes(reply[:4], "big") == CALL_ERROR:
        try:
            return int(decode_response(reply).args[0])
        except (CodecError, IndexError, ValueError):
            return None
    return 0


CKF_TOKEN_PRESENT = 0x1
# what a slot without its token refuses (the slot itself still answers)
TOKEN_CALLS = frozenset(
    {"C_GetTokenInfo", "C_OpenSession", "C_GetMechanismList", "C_GetMechanismInfo", "C_InitToken"}
)


# where object handles travel, by call: request argument positions, reply field positions ("*":
# the field is a list of handles)
EPOCH_STEP = 1 << 32  # object handle n is seen as n + epoch x EPOCH_STEP after `epoch` restarts


class Renumbered:
    """This connection's object handles after `epoch` HSM restarts: the server's handle plus
    epoch x EPOCH_STEP; a handle from an earlier epoch is no handle (CK_INVALID_HANDLE, 0)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def request(self, name: str, body: bytes) -> bytes:
        places = HANDLE_ARGS.get(name)
        if not places:
            return body
        try:
            args = list(decode_request(body).args)
        except (CodecError, CKRError):
            return body  # the handler answers what is wrong with it
        for place in places:
            if place < len(args) and isinstance(args[place], int):
                args[place] = self._inward(args[place])
        return encode_request(name, *args)

    def reply(self, name: str, reply: bytes) -> bytes:
        places = HANDLE_REPLIES.get(name)
        if not places or int.from_bytes(reply[:4], "big") == CALL_ERROR:
            return reply
        try:
            fields = list(decode_response(reply, name).args)
        except (CodecError, IndexError):
            return reply
        offset = (self.epoch & 0xFFFF) * EPOCH_STEP
        for place in places:
            if place == "*":
                if isinstance(fields[0], (tuple, list)):
                    fields[0] = tuple(handle + offset for handle in fields[0])
            elif place < len(fields) and isinstance(fields[place], int) and fields[place]:
                fields[place] += offset
        return encode_response(name, *fields)

    def _inward(self, handle: int) -> int:
        # bits 32-47 (the bits above them are a connection's own names: handle_names.py)
        if (handle >> 32) & 0xFFFF != self.epoch & 0xFFFF:
            return 0  # a handle from before a restart: CK_INVALID_HANDLE
        return handle & ~(0xFFFF << 32)


SLOT_STEP = 0x100  # slot id n is seen as n + changes x SLOT_STEP after `changes` slot changes
NO_SLOT = 0xFFFFFFFF  # what a slot id from before a change becomes: no slot (CKR_SLOT_ID_INVALID)
SLOT_ARGS = frozenset(
    {
        "C_GetSlotInfo",
        "C_GetTokenInfo",
        "C_GetMechanismList",
        "C_GetMechanismInfo",
        "C_InitToken",
        "C_OpenSession",
        "C_CloseAllSessions",
        "C_WaitForSlotEvent",
    }
)


class SlotMoved:
    """The served slots' ids as this connection sees them after `changes` slot changes (the
    server's ids + changes x SLOT_STEP); an id from before is no slot."""

    def __init__(self, changes: int, served: frozenset[int]) -> None:
        self.offset = changes * SLOT_STEP
        self.served = served

    def outward(self, slot_id: int) -> int:
        return slot_id + self.offset

    def request(self, name: str, body: bytes) -> bytes:
        if name not in SLOT_ARGS or name == "C_WaitForSlotEvent":  # (its argument is flags)
            return body
        try:
            args = list(decode_request(body).args)
        except (CodecError, CKRError):
            return body  # the handler answers what is wrong with it
        if args and isinstance(args[0], int):
            inward = args[0] - self.offset
            args[0] = inward if inward in self.served else NO_SLOT
        return encode_request(name, *args)

    def reply(self, name: str, reply: bytes) -> bytes:
        if name == "C_GetSlotList":
            return _rewritten(
                reply,
                name,
                lambda ids: tuple(self.outward(i) for i in ids) if isinstance(ids, (tuple, list)) else ids,
            )
        if name == "C_WaitForSlotEvent":
            return _rewritten(reply, name, self.outward)
        if name == "C_GetSessionInfo":
            return _rewritten(reply, name, lambda info: replace(info, slot_id=self.outward(info.slot_id)))
        return reply


@dataclass
class Seen:
    """What this connection has been through of the server-wide events."""

    restarts: int
    resets: int
    removals: int
    insertions: int
    uninitialized: bool = False
    slot_events: list[int] = field(default_factory=list)  # slot ids still to tell C_WaitForSlotEvent


class FaultedAnswers:
    """One connection's requests with faults applied (one per connection, in its thread)."""

    def __init__(self, connection, book: FaultBook) -> None:
        self.connection = connection  # answers, and releases what the application holds
        self.state = connection.state
        self.book = book
        self.seen = Seen(book.restarts, book.resets, book.removals, book.insertions)
        self.renumbered: Renumbered | None = None  # after this connection's first HSM restart
        # when the work the last reply promised began (a signature computed after its size was
        # answered): the application's next call, sent meanwhile, waited from then
        self._waiting_since: float | None = None

    def run_after_reply(self) -> None:
        self._waiting_since = time.monotonic()
        self.connection.run_after_reply()

    def answer(self, body: bytes) -> bytes | None:
        """The reply to `body`; None: close the connection without one. With journals on the
        book, every call is told to them with its fault and result."""
        journals = self.book.journals
        since, self._waiting_since = self._waiting_since, None
        if not journals:
            return self._answer(body)[0]
        started = time.monotonic()  # when the request came: the step windows go by it
        reply, name, injection = self._answer(body)
        record = CallRecord(
            self.state.number,
            name,
            started,
            time.monotonic() - (started if since is None else since),
            injection,
            result_of(reply),
        )
        for journal in journals:
            journal(record)
        return reply

    def _answer(self, body: bytes) -> tuple[bytes | None, str, Injection | None]:
        connection, state = self.connection, self.state
        state.predicted.clear()  # replies sent ahead would go round the faults
        self._events_due()
        name = call_name(body)
        if self.seen.uninitialized:
            if name != "C_Initialize":
                state.calls += 1
                return encode_error(CKR_CRYPTOKI_NOT_INITIALIZED), name, None
            self.seen.uninitialized = False
        token = self._token_answer(name, body)
        if token is not None:
            state.calls += 1
            return token, name, None
        if self.renumbered is not None:  # after an HSM restart objects have other numbers
            body = self.renumbered.request(name, body)
        if self.book.slot_changes:  # the token is in another slot
            body = self._moved().request(name, body)
        injection = self.book.for_call(state.number, name, name in OUTPUT_CALLS and _size_query(body))
        if injection is None:
            return self._renumber(name, self._changed(name, connection.answer(body))), name, None
        self.book.wait_out(injection)
        if injection.disconnect:
            state.calls += 1
            return None, name, injection
        if injection.error is not None:
            state.calls += 1
            self._end_operation(name, body)
            return encode_error(injection.error), name, injection
        reply = self._renumber(name, self._changed(name, connection.answer(body)))
        return (corrupted(reply) if injection.corrupt else reply), name, injection

    def _renumber(self, name: str, reply: bytes) -> bytes:
        if self.book.slot_changes:
            reply = self._moved().reply(name, reply)
        return reply if self.renumbered is None else self.renumbered.reply(name, reply)

    def _moved(self) -> SlotMoved:
        return SlotMoved(self.book.slot_changes, frozenset(s.slot_id for s in self.state.order))

    def _events_due(self) -> None:
        book, seen, connection, state = self.book, self.seen, self.connection, self.state
        if book.restarts > seen.restarts:
            self.renumbered = Renumbered(
                (self.renumbered.epoch if self.renumbered else 0) + book.restarts - seen.restarts
            )
            seen.restarts = book.restarts
            connection.release()
            state.log(f"connection {state.number}: HSM restart: its sessions and login are gone")
        if book.resets > seen.resets:
            seen.resets = book.resets
            connection.release()
            seen.uninitialized = True
            state.log(
                f"connection {state.number}: library reset: CKR_CRYPTOKI_NOT_INITIALIZED until C_Initialize"
            )
        if book.removals > seen.removals:
            seen.removals = book.removals
            connection.release()
            seen.slot_events += [s.slot_id for s in state.order]
            state.log(f"connection {state.number}: token removed: its sessions are gone")
        if book.insertions > seen.insertions:
            seen.insertions = book.insertions
            seen.slot_events += [s.slot_id for s in state.order]

    def _token_answer(self, name: str, body: bytes) -> bytes | None:
        """The answer of a slot whose token is out, or a slot event due; None: answer as usual."""
        if name == "C_WaitForSlotEvent" and self.seen.slot_events:
            slot_id = self.seen.slot_events.pop(0)
            return encode_response(
                "C_WaitForSlotEvent", self._moved().outward(slot_id) if self.book.slot_changes else slot_id
            )
        if not self.book.removed:
            return None
        if name in TOKEN_CALLS:
            return encode_error(CKR_TOKEN_NOT_PRESENT)
        if name == "C_GetSlotList":
            try:
                token_present = decode_request(body).args[0]
            except (CodecError, CKRError, IndexError):
                return None
            return encode_response("C_GetSlotList", ()) if token_present else None
        return None

    def _changed(self, name: str, reply: bytes) -> bytes:
        """A slot's flags without its token, a token's changed serial number."""
        book = self.book
        if name == "C_GetSlotInfo" and book.removed:
            return _rewritten(reply, name, lambda info: replace(info, flags=info.flags & ~CKF_TOKEN_PRESENT))
        if name == "C_GetTokenInfo" and book.serial_changes:
            return _rewritten(
                reply,
                name,
                lambda info: replace(info, serial_number=_serial(info.serial_number, book.serial_changes)),
            )
        return reply

    def _end_operation(self, name: str, body: bytes) -> None:
        kind = OPERATION_KINDS.get(name)
        if kind is None:
            return
        try:
            handle = decode_request(body).args[0]
        except (CodecError, CKRError, IndexError):
            return  # the call would have been refused for its request: nothing began
        session = self.state.sessions.get(handle)
        if session is not None:
            session.operations.end(kind)
