"""One client connection: one application, with its own sessions, login state and operations.

Every version-0 call is a method named after it (`C_Sign(...)`), taking the request's fields in
signature order and returning the reply's; a call without a method is answered
CKR_FUNCTION_NOT_SUPPORTED. Client session handles are the connection's own; behind them, one
slot session per slot carries every call of this connection (so object handles are valid in all
of its sessions, as PKCS#11 wants). Login is enforced here (see logins.py): a connection that
is not logged in neither sees nor uses private objects, whoever else is logged in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .. import codes
from ..codes import (CKR_ARGUMENTS_BAD, CKR_FUNCTION_NOT_SUPPORTED, CKR_GENERAL_ERROR,
                     CKR_MECHANISM_INVALID, CKR_NO_EVENT, CKR_OPERATION_NOT_INITIALIZED,
                     CKR_PIN_INCORRECT, CKR_PIN_INVALID, CKR_SESSION_EXISTS,
                     CKR_SESSION_HANDLE_INVALID, CKR_SESSION_PARALLEL_NOT_SUPPORTED,
                     CKR_SESSION_READ_ONLY, CKR_SESSION_READ_ONLY_EXISTS,
                     CKR_SESSION_READ_WRITE_SO_EXISTS, CKR_SLOT_ID_INVALID,
                     CKR_TEMPLATE_INCOMPLETE, CKR_USER_ALREADY_LOGGED_IN,
                     CKR_USER_ANOTHER_ALREADY_LOGGED_IN, CKR_USER_NOT_LOGGED_IN,
                     CKR_USER_TYPE_INVALID, CKRError)
from ..model import (CKA_CLASS, CKA_KEY_TYPE, CKA_PRIVATE, CKA_TOKEN, CKA_VALUE_LEN,
                     CKU_CONTEXT_SPECIFIC, CKU_SO, CKU_USER)
from ..rpc.buffer import CodecError, UnknownCallError
from ..rpc.calls import BY_ID, HANDSHAKE
from ..rpc.codec import decode_request, encode_error, encode_response
from ..rpc.structs import BufferSize, Info, SessionInfo
from ..slots import Session
from . import keygen, wire
from .attributes import UnnamedAttribute, naming, read_attributes
from .operations import DECRYPT, DIGEST, ECB_BLOCK, ENCRYPT, SIGN, VERIFY, Operation, Operations

CKF_RW_SESSION, CKF_SERIAL_SESSION = 0x2, 0x4
CKF_DONT_BLOCK = 0x1
RO_PUBLIC, RO_USER, RW_PUBLIC, RW_USER, RW_SO = range(5)  # CKS_*


@dataclass
class ClientSession:
    handle: int
    slot: "ExposedSlot"  # noqa: F821  (server.ExposedSlot)
    rw: bool
    operations: Operations = field(default_factory=Operations)
    found: list[int] | None = None
    session_objects: set[int] = field(default_factory=set)  # CKA_TOKEN false, made here
    wrapped: tuple | None = None  # (request, output) kept for a C_WrapKey size query


def _bytes(value) -> bytes:
    """An `ay` argument: bytes, or a NULL array (BufferSize) of length 0."""
    return b"" if isinstance(value, BufferSize) else bytes(value)


class Connection:
    def __init__(self, number: int, slots: list, info: Info, log: Callable[[str], None],
                 on_error: Callable[[str, BaseException], None]) -> None:
        self.number = number
        self.order = slots
        self.slots = {s.slot_id: s for s in slots}
        self.info = info
        self.log = log
        self.on_error = on_error
        self.sessions: dict[int, ClientSession] = {}
        self.stores: dict[int, Session] = {}  # server slot id -> the slot session behind
        self.logged_in: dict[int, int] = {}  # server slot id -> user type
        self.private: dict[tuple[int, int], bool] = {}  # (slot id, object) -> CKA_PRIVATE
        self.calls = 0
        self._next_session = 1

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
        handler = _HANDLERS.get(call_id)
        if handler is None:
            return encode_error(CKR_FUNCTION_NOT_SUPPORTED)
        try:
            return encode_response(call_id, *handler(self, *args))
        except CKRError as error:
            return encode_error(error.ckr or CKR_GENERAL_ERROR)
        except Exception as error:  # a ckdemo bug: this call fails, the connection lives on
            self.on_error(f"connection {self.number}: {request.name}", error)
            return encode_error(CKR_GENERAL_ERROR)

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

    def _is_private(self, session: ClientSession, handle: int) -> bool:
        key = (session.slot.slot_id, handle)
        if key not in self.private:
            found = self._store(session).get_attributes(handle, [CKA_PRIVATE])
            self.private[key] = bool(found.get(CKA_PRIVATE, True))
        return self.private[key]

    def _usable(self, session: ClientSession, handle: int, function: str) -> None:
        """A private object is for a connection that logged in, not for one riding on another's."""
        if self._user(session) is None and self._is_private(session, handle):
            raise CKRError(CKR_USER_NOT_LOGGED_IN, function,
                           f"object {handle} is private and this application is not logged in")

    def _may_create(self, session: ClientSession, token: bool, private: bool, function: str) -> None:
        if token and not session.rw:
            raise CKRError(CKR_SESSION_READ_ONLY, function)
        if private and self._user(session) is None:
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
        return handle

    def _forget(self, session: ClientSession, handle: int) -> None:
        self.private.pop((session.slot.slot_id, handle), None)
        session.session_objects.discard(handle)

    # ---- general purpose, slots and tokens ---------------------------------------------------
    def C_Initialize(self, handshake, reserved_present, reserved) -> tuple:
        if handshake != HANDSHAKE:  # rpc-server.c answers a wrong handshake this way
            raise CKRError(CKR_GENERAL_ERROR, "C_Initialize", "bad RPC handshake string")
        return ()

    def C_Finalize(self) -> tuple:
        self.release()
        return ()

    def C_GetInfo(self) -> tuple:
        return (self.info,)

    def C_GetSlotList(self, token_present, offered) -> tuple:
        ids = tuple(s.slot_id for s in self.order if not token_present or s.token_present())
        return (ids if offered >= len(ids) else BufferSize(len(ids)),)

    def C_GetSlotInfo(self, slot_id) -> tuple:
        exposed = self._slot(slot_id, "C_GetSlotInfo")
        return (wire.slot_info(exposed.slot.slot_info(), exposed.description()),)

    def C_GetTokenInfo(self, slot_id) -> tuple:
        exposed = self._slot(slot_id, "C_GetTokenInfo")
        with exposed.lock:
            return (wire.token_info(exposed.slot.token_info()),)

    def C_GetMechanismList(self, slot_id, offered) -> tuple:
        codes_ = tuple(self._slot(slot_id, "C_GetMechanismList").mechanisms(refresh=True))
        return (codes_ if offered >= len(codes_) else BufferSize(len(codes_)),)

    def C_GetMechanismInfo(self, slot_id, mechanism) -> tuple:
        exposed = self._slot(slot_id, "C_GetMechanismInfo")
        return (wire.mechanism_info(exposed.slot.mechanism_info(mechanism)),)

    def C_InitToken(self, slot_id, pin, label) -> tuple:
        exposed = self._slot(slot_id, "C_InitToken")
        with exposed.lock:
            if exposed.sessions or exposed.login.holders:
                raise CKRError(CKR_SESSION_EXISTS, "C_InitToken")
            exposed.slot.init_token(self._pin(pin, "C_InitToken"),
                                    (label or b"").rstrip(b"\0 ").decode("utf-8", "replace"))
        return ()

    def C_WaitForSlotEvent(self, flags) -> tuple:
        if not flags & CKF_DONT_BLOCK:  # blocking would hold this connection's every call
            raise CKRError(CKR_FUNCTION_NOT_SUPPORTED, "C_WaitForSlotEvent",
                           "only CKF_DONT_BLOCK is served")
        answer = CKR_FUNCTION_NOT_SUPPORTED
        for exposed in self.order:
            try:
                exposed.slot.wait_for_event()
                return (exposed.slot_id,)
            except CKRError as error:
                if error.ckr == CKR_NO_EVENT:
                    answer = CKR_NO_EVENT
        raise CKRError(answer, "C_WaitForSlotEvent")

    # ---- sessions and login ------------------------------------------------------------------
    def C_OpenSession(self, slot_id, flags) -> tuple:
        exposed = self._slot(slot_id, "C_OpenSession")
        if not flags & CKF_SERIAL_SESSION:
            raise CKRError(CKR_SESSION_PARALLEL_NOT_SUPPORTED, "C_OpenSession")
        rw = bool(flags & CKF_RW_SESSION)
        if not rw and self.logged_in.get(slot_id) == CKU_SO:
            raise CKRError(CKR_SESSION_READ_WRITE_SO_EXISTS, "C_OpenSession")
        with exposed.lock:
            if slot_id not in self.stores:
                self.stores[slot_id] = exposed.slot.open_session(rw=True)
            exposed.sessions += 1
        handle, self._next_session = self._next_session, self._next_session + 1
        self.sessions[handle] = ClientSession(handle, exposed, rw)
        return (handle,)

    def C_CloseSession(self, handle) -> tuple:
        self._close(self._session(handle, "C_CloseSession"))
        return ()

    def C_CloseAllSessions(self, slot_id) -> tuple:
        exposed = self._slot(slot_id, "C_CloseAllSessions")
        for session in [s for s in self.sessions.values() if s.slot is exposed]:
            self._close(session)
        return ()

    def _close(self, session: ClientSession) -> None:
        session.operations.clear()
        store = self.stores.get(session.slot.slot_id)
        for handle in sorted(session.session_objects):
            _quietly(lambda: store.destroy_object(handle))
            self.private.pop((session.slot.slot_id, handle), None)
        self.sessions.pop(session.handle, None)
        exposed = session.slot
        with exposed.lock:
            exposed.sessions -= 1
        if any(s.slot is exposed for s in self.sessions.values()):
            return
        # the application's last session with the token: its login ends too (PKCS#11)
        with exposed.lock:
            store = self.stores.pop(exposed.slot_id, None)
            if store is not None:
                _quietly(store.close)
        self.private = {k: v for k, v in self.private.items() if k[0] != exposed.slot_id}
        if exposed.slot_id in self.logged_in:
            self._logout(exposed)

    def C_GetSessionInfo(self, handle) -> tuple:
        session = self._session(handle, "C_GetSessionInfo")
        user = self._user(session)
        if user == CKU_SO:
            state = RW_SO
        elif user is None:
            state = RW_PUBLIC if session.rw else RO_PUBLIC
        else:
            state = RW_USER if session.rw else RO_USER
        flags = CKF_SERIAL_SESSION | (CKF_RW_SESSION if session.rw else 0)
        return (SessionInfo(session.slot.slot_id, state, flags, 0),)

    @staticmethod
    def _pin(pin, function: str) -> str:
        if isinstance(pin, BufferSize):
            raise CKRError(CKR_ARGUMENTS_BAD, function, "no PIN given (protected authentication "
                                                        "path is not served)")
        try:
            return bytes(pin).decode("utf-8")
        except UnicodeDecodeError:
            raise CKRError(CKR_PIN_INVALID, function, "the PIN is not UTF-8") from None

    def C_Login(self, handle, user_type, pin) -> tuple:
        session = self._session(handle, "C_Login")
        exposed, pin = session.slot, self._pin(pin, "C_Login")
        user = self._user(session)
        if user_type == CKU_CONTEXT_SPECIFIC:
            if user is None:
                raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_Login")
            if not exposed.login.check_pin(pin):
                raise CKRError(CKR_PIN_INCORRECT, "C_Login")
            return ()
        if user_type not in (CKU_SO, CKU_USER):
            raise CKRError(CKR_USER_TYPE_INVALID, "C_Login")
        if user is not None:
            raise CKRError(CKR_USER_ALREADY_LOGGED_IN if user == user_type
                           else CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "C_Login")
        if user_type == CKU_SO and any(s.slot is exposed and not s.rw for s in self.sessions.values()):
            raise CKRError(CKR_SESSION_READ_ONLY_EXISTS, "C_Login")
        exposed.login.login(self.number, user_type, pin)
        self.logged_in[exposed.slot_id] = user_type
        self.log(f"connection {self.number}: logged in as {'SO' if user_type == CKU_SO else 'user'} "
                 f"on slot {exposed.slot_id:#x}")
        return ()

    def C_Logout(self, handle) -> tuple:
        session = self._session(handle, "C_Logout")
        if self._user(session) is None:
            raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_Logout")
        self._logout(session.slot)
        return ()

    def _logout(self, exposed) -> None:
        self.logged_in.pop(exposed.slot_id, None)
        try:
            exposed.login.logout(self.number)
        except CKRError:
            pass  # not a holder any more: nothing of ours to undo
        self.log(f"connection {self.number}: logged out of slot {exposed.slot_id:#x}")

    def C_InitPIN(self, handle, pin) -> tuple:
        session = self._session(handle, "C_InitPIN")
        if self._user(session) != CKU_SO:
            raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_InitPIN", "C_InitPIN needs the SO logged in")
        if not session.rw:
            raise CKRError(CKR_SESSION_READ_ONLY, "C_InitPIN")
        self._store(session).init_pin(self._pin(pin, "C_InitPIN"))
        return ()

    def C_SetPIN(self, handle, old_pin, new_pin) -> tuple:
        session = self._session(handle, "C_SetPIN")
        if not session.rw:
            raise CKRError(CKR_SESSION_READ_ONLY, "C_SetPIN")
        new = self._pin(new_pin, "C_SetPIN")
        self._store(session).set_pin(self._pin(old_pin, "C_SetPIN"), new)
        session.slot.login.pin_changed(self._user(session) or CKU_USER, new)
        return ()

    # ---- objects -----------------------------------------------------------------------------
    def C_CreateObject(self, handle, attributes) -> tuple:
        session = self._session(handle, "C_CreateObject")
        template = wire.template(attributes, "C_CreateObject")
        token, private = bool(template.get(CKA_TOKEN, False)), bool(template.get(CKA_PRIVATE, True))
        self._may_create(session, token, private, "C_CreateObject")
        with naming("C_CreateObject"):
            made = self._store(session).create_object(template)
        return (self._created(session, made, token, private),)

    def C_CopyObject(self, handle, source, attributes) -> tuple:
        session = self._session(handle, "C_CopyObject")
        self._usable(session, source, "C_CopyObject")
        template = wire.template(attributes, "C_CopyObject")
        store = self._store(session)
        found = store.get_attributes(source, [CKA_TOKEN, CKA_PRIVATE])
        token = bool(template.get(CKA_TOKEN, found.get(CKA_TOKEN, True)))
        private = bool(template.get(CKA_PRIVATE, found.get(CKA_PRIVATE, True)))
        self._may_create(session, token, private, "C_CopyObject")
        with naming("C_CopyObject"):
            made = store.copy_object(source, template)
        return (self._created(session, made, token, private),)

    def C_DestroyObject(self, handle, target) -> tuple:
        session = self._session(handle, "C_DestroyObject")
        self._may_change(session, target, "C_DestroyObject")
        self._store(session).destroy_object(target)
        self._forget(session, target)
        return ()

    def C_GetObjectSize(self, handle, target) -> tuple:
        session = self._session(handle, "C_GetObjectSize")
        self._usable(session, target, "C_GetObjectSize")
        return (self._store(session).object_size(target),)

    def C_GetAttributeValue(self, handle, target, wanted) -> tuple:
        session = self._session(handle, "C_GetAttributeValue")
        self._usable(session, target, "C_GetAttributeValue")
        return read_attributes(self._store(session), target, wanted)

    def C_SetAttributeValue(self, handle, target, attributes) -> tuple:
        session = self._session(handle, "C_SetAttributeValue")
        self._may_change(session, target, "C_SetAttributeValue")
        template = wire.template(attributes, "C_SetAttributeValue")
        if template.get(CKA_PRIVATE) is False and self._user(session) is None:
            raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_SetAttributeValue")
        with naming("C_SetAttributeValue"):
            self._store(session).set_attributes(target, template)
        self.private.pop((session.slot.slot_id, target), None)
        return ()

    def C_FindObjectsInit(self, handle, attributes) -> tuple:
        session = self._session(handle, "C_FindObjectsInit")
        if session.found is not None:
            raise CKRError(codes.CKR_OPERATION_ACTIVE, "C_FindObjectsInit")
        template = wire.template(attributes, "C_FindObjectsInit")
        if self._user(session) is None:  # public objects only, whoever else logged in
            if template.get(CKA_PRIVATE) is True:
                session.found = []
                return ()
            template[CKA_PRIVATE] = False
        try:
            with naming("C_FindObjectsInit"):
                session.found = list(self._store(session).find_objects(template))
        except UnnamedAttribute:  # no object has a type the slot cannot name (SoftHSM2: none found)
            session.found = []
        if self._user(session) is None:
            for found in session.found:
                self.private[(session.slot.slot_id, found)] = False
        return ()

    def C_FindObjects(self, handle, most) -> tuple:
        session = self._session(handle, "C_FindObjects")
        if session.found is None:
            raise CKRError(CKR_OPERATION_NOT_INITIALIZED, "C_FindObjects")
        batch, session.found = session.found[:most], session.found[most:]
        return (tuple(batch),)

    def C_FindObjectsFinal(self, handle) -> tuple:
        session = self._session(handle, "C_FindObjectsFinal")
        if session.found is None:
            raise CKRError(CKR_OPERATION_NOT_INITIALIZED, "C_FindObjectsFinal")
        session.found = None
        return ()

    # ---- cryptography: Init keeps the operation, the last call does it on the slot ------------
    def _init(self, handle, mechanism, key, kind: str, function: str) -> tuple:
        session = self._session(handle, function)
        if key is not None:
            self._usable(session, key, function)
        if not session.slot.offers(mechanism.type):
            raise CKRError(CKR_MECHANISM_INVALID, function,
                           f"mechanism {mechanism.type:#x} is not offered by this slot")
        session.operations.start(Operation(kind, mechanism.type, wire.mechanism_param(mechanism), key),
                                 function)
        return ()

    def _single(self, handle, kind: str, function: str, data, offered: int, compute) -> tuple:
        session = self._session(handle, function)

        def body(operation: Operation):
            if operation.multi:
                raise CKRError(codes.CKR_OPERATION_ACTIVE, function, "a multi-part operation is going on")
            output = operation.output(_bytes(data), lambda d: compute(session, operation, d))
            return (session.operations.deliver(kind, output, offered),)
        return session.operations.run(kind, function, body)

    def _update(self, handle, kind: str, function: str, data) -> tuple:
        session = self._session(handle, function)
        session.operations.run(kind, function, lambda operation: operation.add(_bytes(data), function))
        return ()

    def _final(self, handle, kind: str, function: str, offered: int, compute) -> tuple:
        session = self._session(handle, function)

        def body(operation: Operation):
            data = operation.collected() + operation.carry
            if operation.mechanism in ECB_BLOCK and operation.multi and not data:
                output = b""  # every block went out with its Update
            else:
                output = operation.output(data, lambda d: compute(session, operation, d))
            return (session.operations.deliver(kind, output, offered),)
        return session.operations.run(kind, function, body)

    def _keyed(self, session: ClientSession, operation: Operation, function: str) -> Session:
        self._usable(session, operation.key, function)  # still, after a logout in between
        return self._store(session)

    def _sign(self, session, op, data):
        return self._keyed(session, op, "C_Sign").sign(op.key, op.mechanism, data, op.param)

    def _encrypt(self, session, op, data):
        return self._keyed(session, op, "C_Encrypt").encrypt(op.key, op.mechanism, data, op.param)

    def _decrypt(self, session, op, data):
        return self._keyed(session, op, "C_Decrypt").decrypt(op.key, op.mechanism, data, op.param)

    def _digest(self, session, op, data):
        if not op.keys:
            return self._store(session).digest(op.mechanism, data)
        if len(op.keys) == 1 and not op.parts:
            op.key = op.keys[0]
            return self._keyed(session, op, "C_DigestKey").digest_key(op.mechanism, op.key)
        raise CKRError(CKR_FUNCTION_NOT_SUPPORTED, "C_DigestFinal",
                       "C_DigestKey mixed with other parts is not served (the slots digest one key alone)")

    def C_SignInit(self, handle, mechanism, key) -> tuple:
        return self._init(handle, mechanism, key, SIGN, "C_SignInit")

    def C_Sign(self, handle, data, offered) -> tuple:
        return self._single(handle, SIGN, "C_Sign", data, offered, self._sign)

    def C_SignUpdate(self, handle, data) -> tuple:
        return self._update(handle, SIGN, "C_SignUpdate", data)

    def C_SignFinal(self, handle, offered) -> tuple:
        return self._final(handle, SIGN, "C_SignFinal", offered, self._sign)

    def C_VerifyInit(self, handle, mechanism, key) -> tuple:
        return self._init(handle, mechanism, key, VERIFY, "C_VerifyInit")

    def _verify(self, handle, function: str, data, signature) -> tuple:
        session = self._session(handle, function)

        def body(op: Operation):
            if data is not None and op.multi:
                raise CKRError(codes.CKR_OPERATION_ACTIVE, function, "a multi-part operation is going on")
            message = op.collected() if data is None else _bytes(data)
            self._keyed(session, op, function).verify(op.key, op.mechanism, message,
                                                      _bytes(signature), op.param)
            session.operations.end(VERIFY)
            return ()
        return session.operations.run(VERIFY, function, body)

    def C_Verify(self, handle, data, signature) -> tuple:
        return self._verify(handle, "C_Verify", data, signature)

    def C_VerifyUpdate(self, handle, data) -> tuple:
        return self._update(handle, VERIFY, "C_VerifyUpdate", data)

    def C_VerifyFinal(self, handle, signature) -> tuple:
        return self._verify(handle, "C_VerifyFinal", None, signature)

    def C_EncryptInit(self, handle, mechanism, key) -> tuple:
        return self._init(handle, mechanism, key, ENCRYPT, "C_EncryptInit")

    def C_Encrypt(self, handle, data, offered) -> tuple:
        return self._single(handle, ENCRYPT, "C_Encrypt", data, offered, self._encrypt)

    def C_EncryptUpdate(self, handle, data, offered) -> tuple:
        return self._collect(handle, ENCRYPT, "C_EncryptUpdate", data, offered)

    def C_EncryptFinal(self, handle, offered) -> tuple:
        return self._final(handle, ENCRYPT, "C_EncryptFinal", offered, self._encrypt)

    def C_DecryptInit(self, handle, mechanism, key) -> tuple:
        return self._init(handle, mechanism, key, DECRYPT, "C_DecryptInit")

    def C_Decrypt(self, handle, data, offered) -> tuple:
        return self._single(handle, DECRYPT, "C_Decrypt", data, offered, self._decrypt)

    def C_DecryptUpdate(self, handle, data, offered) -> tuple:
        return self._collect(handle, DECRYPT, "C_DecryptUpdate", data, offered)

    def C_DecryptFinal(self, handle, offered) -> tuple:
        return self._final(handle, DECRYPT, "C_DecryptFinal", offered, self._decrypt)

    def _collect(self, handle, kind: str, function: str, data, offered: int) -> tuple:
        """An Update with output: the data is kept, the output comes at Final. A size query
        (buffer length 0) consumes nothing, as with p11-kit's server (the module gets NULL)."""
        session = self._session(handle, function)
        operation = session.operations.get(kind, function)
        block = ECB_BLOCK.get(operation.mechanism)
        if block is None:  # kept for Final
            if offered == 0:
                return (BufferSize(0),)
            self._update(handle, kind, function, data)
            return (b"",)
        pending = operation.carry + _bytes(data)
        whole = len(pending) // block * block
        if offered < whole or offered == 0:  # a size query or a buffer too small: nothing used
            return (BufferSize(whole),)
        compute = self._encrypt if kind == ENCRYPT else self._decrypt

        def body(op: Operation):
            op.multi = True
            output = compute(session, op, pending[:whole]) if whole else b""
            op.carry = pending[whole:]
            return (output,)
        return session.operations.run(kind, function, body)

    def C_DigestInit(self, handle, mechanism) -> tuple:
        return self._init(handle, mechanism, None, DIGEST, "C_DigestInit")

    def C_Digest(self, handle, data, offered) -> tuple:
        return self._single(handle, DIGEST, "C_Digest", data, offered, self._digest)

    def C_DigestUpdate(self, handle, data) -> tuple:
        return self._update(handle, DIGEST, "C_DigestUpdate", data)

    def C_DigestKey(self, handle, key) -> tuple:
        session = self._session(handle, "C_DigestKey")
        self._usable(session, key, "C_DigestKey")

        def add(operation: Operation) -> None:
            operation.multi = True
            operation.keys.append(key)
        session.operations.run(DIGEST, "C_DigestKey", add)
        return ()

    def C_DigestFinal(self, handle, offered) -> tuple:
        return self._final(handle, DIGEST, "C_DigestFinal", offered, self._digest)

    # ---- keys --------------------------------------------------------------------------------
    def C_GenerateKey(self, handle, mechanism, attributes) -> tuple:
        session = self._session(handle, "C_GenerateKey")
        template = wire.template(attributes, "C_GenerateKey")
        spec = keygen.secret_key_spec(mechanism.type, template)
        self._may_create(session, spec.token, True, "C_GenerateKey")  # generate() makes it private
        made = self._generate(session, spec, [template], "C_GenerateKey")
        return (self._created(session, made[0], spec.token, None),)

    def C_GenerateKeyPair(self, handle, mechanism, public_attributes, private_attributes) -> tuple:
        session = self._session(handle, "C_GenerateKeyPair")
        public = wire.template(public_attributes, "C_GenerateKeyPair")
        private = wire.template(private_attributes, "C_GenerateKeyPair")
        spec = keygen.key_pair_spec(mechanism.type, public, private)
        self._may_create(session, spec.token, True, "C_GenerateKeyPair")
        made = self._generate(session, spec, [public, private], "C_GenerateKeyPair")
        return tuple(self._created(session, h, spec.token, None) for h in made)

    def _generate(self, session: ClientSession, spec, templates: list[dict], function: str) -> list[int]:
        """generate(), then what the KeySpec could not say set on each new key; a key that
        cannot be made as asked is destroyed again (on every member) and the refusal returned."""
        store = self._store(session)
        with naming(function):
            made = store.generate(spec)
        try:
            for key, template in zip(made, templates):
                wanted = keygen.beyond_spec(template)
                if wanted:
                    with naming(function):
                        have = store.get_attributes(key, list(wanted))
                        differ = {a: v for a, v in wanted.items() if have.get(a) != v}
                        if differ:
                            store.set_attributes(key, differ)
        except CKRError as error:
            for key in made:
                _quietly(lambda: store.destroy_object(key))
            raise CKRError(error.ckr, function, "the new key could not take every attribute of "
                           "the template, so it was destroyed" + (f": {error.detail}" if error.detail else "")) from error
        return made

    def C_WrapKey(self, handle, mechanism, wrapping, key, offered) -> tuple:
        session = self._session(handle, "C_WrapKey")
        self._usable(session, wrapping, "C_WrapKey")
        self._usable(session, key, "C_WrapKey")
        request = (wrapping, key, mechanism)
        if session.wrapped is None or session.wrapped[0] != request:
            output = self._store(session).wrap_key(wrapping, key, mechanism.type,
                                                   wire.mechanism_param(mechanism))
            session.wrapped = (request, output)
        output = session.wrapped[1]
        if offered == 0 or offered < len(output):
            return (BufferSize(len(output)),)
        session.wrapped = None
        return (output,)

    def C_UnwrapKey(self, handle, mechanism, unwrapping, wrapped, attributes) -> tuple:
        session = self._session(handle, "C_UnwrapKey")
        self._usable(session, unwrapping, "C_UnwrapKey")
        template = wire.template(attributes, "C_UnwrapKey")
        if CKA_CLASS not in template or CKA_KEY_TYPE not in template:
            raise CKRError(CKR_TEMPLATE_INCOMPLETE, "C_UnwrapKey", "CKA_CLASS and CKA_KEY_TYPE are needed")
        object_class, key_type = int(template.pop(CKA_CLASS)), int(template.pop(CKA_KEY_TYPE))
        token, private = bool(template.get(CKA_TOKEN, False)), bool(template.get(CKA_PRIVATE, True))
        self._may_create(session, token, private, "C_UnwrapKey")
        with naming("C_UnwrapKey"):
            made = self._store(session).unwrap_key(unwrapping, object_class, key_type, _bytes(wrapped),
                                                   mechanism.type, template, wire.mechanism_param(mechanism))
        return (self._created(session, made, token, private),)

    def C_DeriveKey(self, handle, mechanism, base, attributes) -> tuple:
        session = self._session(handle, "C_DeriveKey")
        self._usable(session, base, "C_DeriveKey")
        template = wire.template(attributes, "C_DeriveKey")
        if CKA_KEY_TYPE not in template:
            raise CKRError(CKR_TEMPLATE_INCOMPLETE, "C_DeriveKey", "CKA_KEY_TYPE is needed")
        template.pop(CKA_CLASS, None)
        key_type, length = int(template.pop(CKA_KEY_TYPE)), int(template.pop(CKA_VALUE_LEN, 0))
        token, private = bool(template.get(CKA_TOKEN, False)), bool(template.get(CKA_PRIVATE, True))
        self._may_create(session, token, private, "C_DeriveKey")
        with naming("C_DeriveKey"):
            made = self._store(session).derive_key(base, mechanism.type, wire.mechanism_param(mechanism),
                                                   key_type, length, template)
        return (self._created(session, made, token, private),)

    # ---- random ------------------------------------------------------------------------------
    def C_SeedRandom(self, handle, seed) -> tuple:
        session = self._session(handle, "C_SeedRandom")
        self._store(session).seed_random(_bytes(seed))
        return ()

    def C_GenerateRandom(self, handle, length) -> tuple:
        session = self._session(handle, "C_GenerateRandom")
        if length == 0:  # an empty array, not a NULL one: the client would say BUFFER_TOO_SMALL
            return (b"",)
        return (self._store(session).generate_random(length),)


def _quietly(call) -> None:
    try:
        call()
    except CKRError:
        pass  # gone already (a failed member, a closed session): the state we wanted


# call id -> the method answering it (a version-0 call without one is CKR_FUNCTION_NOT_SUPPORTED)
_HANDLERS = {call.id: getattr(Connection, call.name) for call in BY_ID.values()
             if call.name.startswith("C_") and callable(getattr(Connection, call.name, None))}
