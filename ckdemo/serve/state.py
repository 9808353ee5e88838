"""One application's state: its sessions, logins, object facts, operations' promises and slot
events told, in one object per connection, and the look-ups every group of calls shares.

The groups of calls (slot_calls, session_calls, object_calls, crypto_calls, key_calls) are
objects composed over this state (connection.Connection builds them); none of them keeps state
of its own. Client session handles are the connection's own; behind them, one slot session per
slot carries every call of this connection (so object handles are valid in all of its sessions,
as PKCS#11 wants). Login is enforced here (see logins.py): a connection that is not logged in
neither sees nor uses private objects, whoever else is logged in.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..codes import (
    CKR_KEY_HANDLE_INVALID,
    CKR_OBJECT_HANDLE_INVALID,
    CKR_SESSION_HANDLE_INVALID,
    CKR_SESSION_READ_ONLY,
    CKR_SLOT_ID_INVALID,
    CKR_USER_NOT_LOGGED_IN,
    CKRError,
)
from ..model import CKA_CLASS, CKA_ID, CKA_LABEL, CKA_PRIVATE, CKA_TOKEN, CKU_USER
from ..rpc.structs import Info
from ..slots import Session
from .attributes import naming
from .client_session import ClientSession
from .exposed import ExposedSlot
from .handle_names import HandleNames
from .operations import CONNECTION_BUFFERED, CONNECTION_LOST, REFUSED_OBJECT_BYTES, Budget


@dataclass(slots=True, eq=False)
class ConnectionState:
    """Everything one application has here; the calls' groups read and change it."""

    number: int
    order: list[ExposedSlot]  # the slots, in the order C_GetSlotList lists them
    info: Info
    log: Callable[[str], None]
    on_error: Callable[[str, BaseException], None]
    # multi-part input this application may hold, inside the server's (operations.Budget)
    budget: Budget = field(default_factory=lambda: Budget(CONNECTION_BUFFERED))
    # member memory its refused objects cost for good, inside the server's (making)
    lost: Budget = field(default_factory=lambda: Budget(CONNECTION_LOST))
    told_lost: bool = False
    slots: dict[int, ExposedSlot] = field(init=False)
    sessions: dict[int, ClientSession] = field(default_factory=dict)
    stores: dict[int, Session] = field(default_factory=dict)  # server slot id -> the slot session behind
    logged_in: dict[int, int] = field(default_factory=dict)  # server slot id -> user type
    private: dict[tuple[int, int], bool] = field(default_factory=dict)  # (slot id, object) -> CKA_PRIVATE
    identities: dict[tuple[int, int], tuple | None] = field(
        default_factory=dict
    )  # (slot id, object) -> identity
    key_facts: dict[tuple[int, int], object] = field(
        default_factory=dict
    )  # (slot id, key) -> key_checks.KeyFacts
    # slot events told to this application, per slot: it starts at what had happened when it
    # connected (events before that are not its own)
    events_told: dict[int, int] = field(init=False)
    calls: int = 0
    next_session: int = 1
    # work a reply promised, to do once it has gone (crypto_calls: a signature whose size was
    # answered first); the request loop calls Connection.run_after_reply() after each send
    after_reply: Callable[[], None] | None = None
    signature_sizes: dict[tuple, int] = field(default_factory=dict)  # (slot, key, mechanism, param) -> bytes
    # requests whose replies are known before they come (crypto_calls: the next calls of an
    # application that signs again and again); any other request ends them all
    predicted: dict[bytes, tuple[bytes, Callable[[], bool] | None]] = field(default_factory=dict)
    # object handles as a token would number them for this application (handle_names.py)
    names: HandleNames = field(init=False)

    def __post_init__(self) -> None:
        self.slots = {s.slot_id: s for s in self.order}
        self.events_told = {s.slot_id: s.collect_events() for s in self.order}  # never raises
        self.names = HandleNames(self._slot_of_session, self._is_private_here)

    def _slot_of_session(self, handle: int) -> int | None:
        session = self.sessions.get(handle)
        return None if session is None else session.slot.slot_id

    def _is_private_here(self, slot_id: int, session: int, handle: int) -> bool:
        """For HandleNames: a handle the slot no longer knows counts as private (renamed)."""
        try:
            return self.is_private(self.sessions[session], handle)
        except (CKRError, KeyError):
            return True

    def predict(self, request: bytes, reply: bytes, holds: Callable[[], bool] | None = None) -> None:
        """`reply` is the answer to `request` if it is the next request and holds() (when given)
        is still true then: predicted.PredictedAnswers may send it before handling the request."""
        self.predicted[request] = (reply, holds)

    # ---- look-ups ----------------------------------------------------------------------------
    def slot(self, slot_id: int, function: str):
        try:
            return self.slots[slot_id]
        except KeyError:
            raise CKRError(CKR_SLOT_ID_INVALID, function, f"no slot {slot_id:#x}") from None

    def session(self, handle: int, function: str) -> ClientSession:
        try:
            return self.sessions[handle]
        except KeyError:
            raise CKRError(CKR_SESSION_HANDLE_INVALID, function) from None

    def store(self, session: ClientSession) -> Session:
        return self.stores[session.slot.slot_id]

    def user(self, session: ClientSession) -> int | None:
        return self.logged_in.get(session.slot.slot_id)

    def sees_private(self, session: ClientSession) -> bool:
        """Private objects are the user's: the security officer sees and makes public objects
        only, as a connection with no login (SoftHSM2's haveRead/haveWrite)."""
        return self.user(session) == CKU_USER

    def is_private(self, session: ClientSession, handle: int) -> bool:
        key = (session.slot.slot_id, handle)
        if key not in self.private:
            try:
                found = self.store(session).get_attributes(handle, [CKA_PRIVATE])
            except CKRError as error:
                if error.ckr != CKR_USER_NOT_LOGGED_IN:
                    raise
                found = {}  # it takes a login to read it: a private object
            self.private[key] = bool(found.get(CKA_PRIVATE, True))
        return self.private[key]

    def usable(self, session: ClientSession, handle: int, function: str, invalid: int | None = None) -> None:
        """Another application's session object does not exist for this one; a private object
        is for a connection that logged in, not for one riding on another's: to one that is
        not (or no more) logged in, its handle is invalid, as a token forgets private objects'
        handles at C_Logout (SoftHSM2). An operation begun before a logout: not logged in.
        invalid: the code for an invalid handle (a wrapping key's has its own)."""
        invalid = invalid or _invalid(function)
        if not handle:  # CK_INVALID_HANDLE; also a name this application had before a logout
            raise CKRError(invalid, function, "no object 0 (CK_INVALID_HANDLE)")
        if session.slot.owners and not self.visible(session, handle):
            raise CKRError(invalid, function, f"no object {handle} here")
        if not self.sees_private(session) and self.is_private(session, handle):
            code = CKR_USER_NOT_LOGGED_IN if function in CONTINUED else invalid
            raise CKRError(
                code, function, f"object {handle} is private and this application is not logged in"
            )

    def may_create(self, session: ClientSession, token: bool, private: bool, function: str) -> None:
        if token and not session.rw:
            raise CKRError(CKR_SESSION_READ_ONLY, function)
        if private and not self.sees_private(session):
            raise CKRError(CKR_USER_NOT_LOGGED_IN, function, "a private object needs a logged-in application")

    def may_change(self, session: ClientSession, handle: int, function: str) -> None:
        self.usable(session, handle, function)
        if not session.rw:
            token = self.store(session).get_attributes(handle, [CKA_TOKEN]).get(CKA_TOKEN, True)
            if token:
                raise CKRError(CKR_SESSION_READ_ONLY, function)

    def created(self, session: ClientSession, handle: int, token: bool, private: bool | None) -> int:
        if private is not None:
            self.private[(session.slot.slot_id, handle)] = private
        if not token:
            session.session_objects.add(handle)
            identity = self.identity(session, handle)
            if identity is not None:
                owners = session.slot.owners.setdefault(identity, {})
                owners[self.number] = owners.get(self.number, 0) + 1  # objects of it, per connection
        return handle

    def identity(self, session: ClientSession, handle: int) -> tuple | None:
        """(class, CKA_ID, label) of a session object, None for a token object (read once)."""
        key = (session.slot.slot_id, handle)
        if key not in self.identities:
            found = self.store(session).get_attributes(handle, [CKA_TOKEN, CKA_CLASS, CKA_ID, CKA_LABEL])
            self.identities[key] = (
                None
                if found.get(CKA_TOKEN, True)
                else (found.get(CKA_CLASS), bytes(found.get(CKA_ID) or b""), found.get(CKA_LABEL) or "")
            )
        return self.identities[key]

    def visible(self, session: ClientSession, handle: int) -> bool:
        """Not another application's session object (nor one destroyed since it was found)."""
        try:
            identity = self.identity(session, handle)
        except CKRError as error:
            if error.ckr != CKR_OBJECT_HANDLE_INVALID:
                raise
            return False
        if identity is None:  # a token object: everyone's
            return True
        if any(handle in s.session_objects for s in self.sessions.values() if s.slot is session.slot):
            return True  # one of this application's own session objects
        return identity not in session.slot.owners  # else another application's, if any has one

    def own(self, session: ClientSession, found: list[int]) -> list[int]:
        """The objects a search may show this application."""
        if not session.slot.owners:
            return list(found)
        return [handle for handle in found if self.visible(session, handle)]

    @contextmanager
    def making(self, function: str) -> Iterator[None]:
        """Around a call that makes an object on the token. Each refusal costs member memory
        for good (operations.REFUSED_OBJECT_BYTES): reserved first, kept when the token
        refuses, given back when it makes the object; beyond this application's or the server's
        share, CKR_DEVICE_MEMORY before the token is asked."""
        try:
            self.lost.take(REFUSED_OBJECT_BYTES, function)
        except CKRError:
            if not self.told_lost:
                self.told_lost = True
                self.log(
                    f"connection {self.number}: {function} refused with CKR_DEVICE_MEMORY: "
                    "the member libraries keep memory for every object they refused to make "
                    "(SoftHSM2), and this application or the server has used its share; "
                    "restart ckdemo serve to reclaim it"
                )
            raise
        made = False
        try:
            with naming(function):
                yield
            made = True
        finally:
            if made:
                self.lost.give(REFUSED_OBJECT_BYTES)

    def forget(self, session: ClientSession, handle: int) -> None:
        slot_id = session.slot.slot_id
        self.private.pop((slot_id, handle), None)
        if handle in session.session_objects:
            session.session_objects.discard(handle)
            identity = self.identities.get((slot_id, handle))
            owners = session.slot.owners.get(identity)
            if owners is not None and self.number in owners:
                owners[self.number] -= 1  # (another object of the same identity may stay)
                if not owners[self.number]:
                    del owners[self.number]
                if not owners:
                    session.slot.owners.pop(identity, None)
        self.identities.pop((slot_id, handle), None)
        self.key_facts.pop((slot_id, handle), None)
        for key in [k for k in self.signature_sizes if k[0] == slot_id and k[1] == handle]:
            del self.signature_sizes[key]


# what a token answers for a handle it does not know, by function (SoftHSM2 2.6.1)
KEY_FUNCTIONS = frozenset(
    {
        "C_SignInit",
        "C_VerifyInit",
        "C_EncryptInit",
        "C_DecryptInit",
        "C_DigestKey",
        "C_WrapKey",
        "C_UnwrapKey",
        "C_DeriveKey",
    }
)
# the parts of an operation begun before a logout
CONTINUED = frozenset(
    {
        "C_Sign",
        "C_SignUpdate",
        "C_SignFinal",
        "C_Verify",
        "C_VerifyUpdate",
        "C_VerifyFinal",
        "C_Encrypt",
        "C_EncryptUpdate",
        "C_EncryptFinal",
        "C_Decrypt",
        "C_DecryptUpdate",
        "C_DecryptFinal",
        "C_DigestFinal",
    }
)


def _invalid(function: str) -> int:
    return CKR_KEY_HANDLE_INVALID if function in KEY_FUNCTIONS else CKR_OBJECT_HANDLE_INVALID
