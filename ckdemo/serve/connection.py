"""One client connection: one application, with its own sessions, login state and operations.

Every version-0 call is a method named after it (`C_Sign(...)`), taking the request's fields in
signature order and returning the reply's; dispatch.py says which answers which (a call it
does not list is answered CKR_FUNCTION_NOT_SUPPORTED). Client session handles are the connection's own; behind them, one
slot session per slot carries every call of this connection (so object handles are valid in all
of its sessions, as PKCS#11 wants). Login is enforced here (see logins.py): a connection that
is not logged in neither sees nor uses private objects, whoever else is logged in.

The calls are grouped as the PKCS#11 specification groups them, one module each: slot_calls,
session_calls, object_calls, crypto_calls, key_calls; this module holds the state they share.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from .. import codes
from ..codes import (CKR_FUNCTION_NOT_SUPPORTED, CKR_GENERAL_ERROR, CKR_KEY_HANDLE_INVALID,
                     CKR_OBJECT_HANDLE_INVALID, CKR_SESSION_HANDLE_INVALID, CKR_SESSION_READ_ONLY,
                     CKR_SLOT_ID_INVALID, CKR_USER_NOT_LOGGED_IN, CKRError)
from ..model import CKA_CLASS, CKA_ID, CKA_LABEL, CKA_PRIVATE, CKA_TOKEN, CKU_USER
from ..rpc.buffer import CodecError, UnknownCallError
from ..rpc.codec import decode_request, encode_error, encode_response
from ..rpc.structs import Info
from ..slots import Session
from .client_session import ClientSession
from .handle_names import HandleNames
from .crypto_calls import CryptoCalls
from .key_calls import KeyCalls
from .attributes import naming
from .object_calls import ObjectCalls
from .operations import CONNECTION_BUFFERED, CONNECTION_LOST, REFUSED_OBJECT_BYTES, Budget
from .session_calls import SessionCalls
from .slot_calls import SlotCalls


class Connection(SlotCalls, SessionCalls, ObjectCalls, CryptoCalls, KeyCalls):
    """One application's state, and the look-ups its calls share (the calls: *_calls.py)."""

    def __init__(self, number: int, slots: list, info: Info, log: Callable[[str], None],
                 on_error: Callable[[str, BaseException], None],
                 budget: Budget | None = None, lost: Budget | None = None,
                 handlers: dict[int, Callable] | None = None) -> None:
        self.number = number
        self.handlers = handlers or {}  # call id -> method (dispatch.BY_ID, handed in by the server)
        # multi-part input this application may hold, inside the server's (operations.Budget)
        self.budget = budget or Budget(CONNECTION_BUFFERED)
        # member memory its refused objects cost for good, inside the server's (_making)
        self.lost = lost or Budget(CONNECTION_LOST)
        self.told_lost = False
        self.order = slots
        self.slots = {s.slot_id: s for s in slots}
        self.info = info
        self.log = log
        self.on_error = on_error
        self.sessions: dict[int, ClientSession] = {}
        self.stores: dict[int, Session] = {}  # server slot id -> the slot session behind
        self.logged_in: dict[int, int] = {}  # server slot id -> user type
        self.private: dict[tuple[int, int], bool] = {}  # (slot id, object) -> CKA_PRIVATE
        self.identities: dict[tuple[int, int], tuple | None] = {}  # (slot id, object) -> _identity
        self.key_facts: dict[tuple[int, int], object] = {}  # (slot id, key) -> key_checks.KeyFacts
        # slot events told to this application, per slot: it starts at what had happened when
        # it connected (events before that are not its own)
        self.events_told = {s.slot_id: s.collect_events() for s in slots}  # never raises
        self.calls = 0
        self._next_session = 1
        self.names = HandleNames(self._slot_of_session, self._is_private_here)
        # work a reply promised, to do once it has gone (crypto_calls: a signature whose size
        # was answered first); the request loop calls run_after_reply() after each send
        self.after_reply: Callable[[], None] | None = None
        self.signature_sizes: dict[tuple, int] = {}  # (slot, key, mechanism, param) -> bytes
        # requests whose replies are known before they come (crypto_calls: the next calls of an
        # application that signs again and again); any other request ends them all
        self.predicted: dict[bytes, tuple[bytes, Callable[[], bool] | None]] = {}

    # ---- the request loop's entry ------------------------------------------------------------
    def answer(self, body: bytes) -> bytes:
        """The reply body to one request body; never raises for anything the client sent."""
        self.calls += 1
        try:
            request = decode_request(body)
        except UnknownCallError:
            return encode_error(CKR_FUNCTION_NOT_SUPPORTED)
        except CodecError:
            return encode_error(codes.CKR_DEVICE_ERROR)  # what p11-kit answers a parse error
        call_id, args = request
        handler = self.handlers.get(call_id)
        if handler is None:
            return encode_error(CKR_FUNCTION_NOT_SUPPORTED)
        try:
            if self.names.active:  # after a logout or a last close: this application's names
                args = self.names.inward(request.name, args)
                return encode_response(call_id, *self.names.outward(request.name, args, handler(self, *args)))
            return encode_response(call_id, *handler(self, *args))
        except CKRError as error:
            return encode_error(error.ckr or CKR_GENERAL_ERROR)
        except Exception as error:  # a ckdemo bug: this call fails, the connection lives on
            self.on_error(f"connection {self.number}: {request.name}", error)
            return encode_error(CKR_GENERAL_ERROR)

    def predict(self, request: bytes, reply: bytes, holds: Callable[[], bool] | None = None) -> None:
        """`reply` is the answer to `request` if it is the next request and holds() (when given)
        is still true then: predicted.PredictedAnswers may send it before handling the request."""
        self.predicted[request] = (reply, holds)

    def run_after_reply(self) -> None:
        """The work the last reply promised; never raises (a refusal is kept for the next call)."""
        work, self.after_reply = self.after_reply, None
        try:
            work()
        except Exception as error:  # a ckdemo bug: the promise is broken, the connection lives on
            self.on_error(f"connection {self.number}: work after a reply", error)

    def release(self) -> None:
        """Everything this application left: sessions, session objects, operations, login."""
        for session in list(self.sessions.values()):
            try:
                self._close(session)
            except Exception as error:  # one broken close must not keep the rest open
                self.sessions.pop(session.handle, None)
                self.on_error(f"connection {self.number}: cleanup", error)
        for slot_id in list(self.logged_in):
            self._logout(self.slots[slot_id])
        self.predicted.clear()

    # ---- look-ups ----------------------------------------------------------------------------
    def _slot(self, slot_id: int, function: str):
        try:
            return self.slots[slot_id]
        except KeyError:
            raise CKRError(CKR_SLOT_ID_INVALID, function, f"no slot {slot_id:#x}") from None

    def _session(self, handle: int, function: str) -> ClientSession:
        try:
            return self.sessions[handle]
        except KeyError:
            raise CKRError(CKR_SESSION_HANDLE_INVALID, function) from None

    def _store(self, session: ClientSession) -> Session:
        return self.stores[session.slot.slot_id]

    def _user(self, session: ClientSession) -> int | None:
        return self.logged_in.get(session.slot.slot_id)

    def _slot_of_session(self, handle: int) -> int | None:
        session = self.sessions.get(handle)
        return None if session is None else session.slot.slot_id

    def _is_private_here(self, slot_id: int, session: int, handle: int) -> bool:
        """For HandleNames: a handle the slot no longer knows counts as private (renamed)."""
        try:
            return self._is_private(self.sessions[session], handle)
        except (CKRError, KeyError):
            return True

    def _sees_private(self, session: ClientSession) -> bool:
        """Private objects are the user's: the security officer sees and makes public objects
        only, as a connection with no login (SoftHSM2's haveRead/haveWrite)."""
        return self._user(session) == CKU_USER

    def _is_private(self, session: ClientSession, handle: int) -> bool:
        key = (session.slot.slot_id, handle)
        if key not in self.private:
            try:
                found = self._store(session).get_attributes(handle, [CKA_PRIVATE])
            except CKRError as error:
                if error.ckr != CKR_USER_NOT_LOGGED_IN:
                    raise
                found = {}  # it takes a login to read it: a private object
            self.private[key] = bool(found.get(CKA_PRIVATE, True))
        return self.private[key]

    def _usable(self, session: ClientSession, handle: int, function: str, invalid: int | None = None) -> None:
        """Another application's session object does not exist for this one; a private object
        is for a connection that logged in, not for one riding on another's: to one that is
        not (or no more) logged in, its handle is invalid, as a token forgets private objects'
        handles at C_Logout (SoftHSM2). An operation begun before a logout: not logged in.
        invalid: the code for an invalid handle (a wrapping key's has its own)."""
        invalid = invalid or _invalid(function)
        if not handle:  # CK_INVALID_HANDLE; also a name this application had before a logout
            raise CKRError(invalid, function, "no object 0 (CK_INVALID_HANDLE)")
        if session.slot.owners and not self._visible(session, handle):
            raise CKRError(invalid, function, f"no object {handle} here")
        if not self._sees_private(session) and self._is_private(session, handle):
            code = CKR_USER_NOT_LOGGED_IN if function in CONTINUED else invalid
            raise CKRError(code, function,
                           f"object {handle} is private and this application is not logged in")

    def _may_create(self, session: ClientSession, token: bool, private: bool, function: str) -> None:
        if token and not session.rw:
            raise CKRError(CKR_SESSION_READ_ONLY, function)
        if private and not self._sees_private(session):
            raise CKRError(CKR_USER_NOT_LOGGED_IN, function,
                           "a private object needs a logged-in application")

    def _may_change(self, session: ClientSession, handle: int, function: str) -> None:
        self._usable(session, handle, function)
        if not session.rw:
            token = self._store(session).get_attributes(handle, [CKA_TOKEN]).get(CKA_TOKEN, True)
            if token:
                raise CKRError(CKR_SESSION_READ_ONLY, function)

    def _created(self, session: ClientSession, handle: int, token: bool, private: bool | None) -> int:
        if private is not None:
            self.private[(session.slot.slot_id, handle)] = private
        if not token:
            session.session_objects.add(handle)
            identity = self._identity(session, handle)
            if identity is not None:
                session.slot.owners.setdefault(identity, set()).add(self.number)
        return handle

    def _identity(self, session: ClientSession, handle: int) -> tuple | None:
        """(class, CKA_ID, label) of a session object, None for a token object (read once)."""
        key = (session.slot.slot_id, handle)
        if key not in self.identities:
            found = self._store(session).get_attributes(handle, [CKA_TOKEN, CKA_CLASS, CKA_ID, CKA_LABEL])
            self.identities[key] = None if found.get(CKA_TOKEN, True) else \
                (found.get(CKA_CLASS), bytes(found.get(CKA_ID) or b""), found.get(CKA_LABEL) or "")
        return self.identities[key]

    def _visible(self, session: ClientSession, handle: int) -> bool:
        """Not another application's session object (nor one destroyed since it was found)."""
        try:
            identity = self._identity(session, handle)
        except CKRError as error:
            if error.ckr != CKR_OBJECT_HANDLE_INVALID:
                raise
            return False
        owners = session.slot.owners.get(identity)
        return owners is None or self.number in owners

    def _own(self, session: ClientSession, found: list[int]) -> list[int]:
        """The objects a search may show this application."""
        if not session.slot.owners:
            return list(found)
        return [handle for handle in found if self._visible(session, handle)]

    @contextmanager
    def _making(self, function: str) -> Iterator[None]:
        """Around a call that makes an object on the token. Each refusal costs member memory
        for good (operations.REFUSED_OBJECT_BYTES): reserved first, kept when the token
        refuses, given back when it makes the object; beyond this application's or the server's
        share, CKR_DEVICE_MEMORY before the token is asked."""
        try:
            self.lost.take(REFUSED_OBJECT_BYTES, function)
        except CKRError:
            if not self.told_lost:
                self.told_lost = True
                self.log(f"connection {self.number}: {function} refused with CKR_DEVICE_MEMORY: "
                         "the member libraries keep memory for every object they refused to make "
                         "(SoftHSM2), and this application or the server has used its share; "
                         "restart ckdemo serve to reclaim it")
            raise
        made = False
        try:
            with naming(function):
                yield
            made = True
        finally:
            if made:
                self.lost.give(REFUSED_OBJECT_BYTES)

    def _forget(self, session: ClientSession, handle: int) -> None:
        slot_id = session.slot.slot_id
        self.private.pop((slot_id, handle), None)
        if handle in session.session_objects:
            session.session_objects.discard(handle)
            identity = self.identities.get((slot_id, handle))
            owners = session.slot.owners.get(identity)
            if owners is not None:
                owners.discard(self.number)
                if not owners:
                    session.slot.owners.pop(identity, None)
        self.identities.pop((slot_id, handle), None)
        self.key_facts.pop((slot_id, handle), None)
        for key in [k for k in self.signature_sizes if k[0] == slot_id and k[1] == handle]:
            del self.signature_sizes[key]


# what a token answers for a handle it does not know, by function (SoftHSM2 2.6.1)
KEY_FUNCTIONS = frozenset({"C_SignInit", "C_VerifyInit", "C_EncryptInit", "C_DecryptInit",
                           "C_DigestKey", "C_WrapKey", "C_UnwrapKey", "C_DeriveKey"})
# the parts of an operation begun before a logout
CONTINUED = frozenset({"C_Sign", "C_SignUpdate", "C_SignFinal", "C_Verify", "C_VerifyUpdate",
                       "C_VerifyFinal", "C_Encrypt", "C_EncryptUpdate", "C_EncryptFinal", "C_Decrypt",
                       "C_DecryptUpdate", "C_DecryptFinal", "C_DigestFinal"})


def _invalid(function: str) -> int:
    return CKR_KEY_HANDLE_INVALID if function in KEY_FUNCTIONS else CKR_OBJECT_HANDLE_INVALID
