"""Sessions and login of a connection: each connection logs in on its own."""

from __future__ import annotations

from dataclasses import dataclass

from ..codes import (
    CKR_SESSION_PARALLEL_NOT_SUPPORTED,
    CKR_SESSION_READ_ONLY,
    CKR_SESSION_READ_ONLY_EXISTS,
    CKR_SESSION_READ_WRITE_SO_EXISTS,
    CKR_USER_ALREADY_LOGGED_IN,
    CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    CKR_OPERATION_NOT_INITIALIZED,
    CKR_USER_NOT_LOGGED_IN,
    CKR_USER_TYPE_INVALID,
    CKRError,
)
from ..model import CKU_CONTEXT_SPECIFIC, CKU_SO, CKU_USER
from ..rpc.structs import SessionInfo
from .client_session import (
    CKF_RW_SESSION,
    CKF_SERIAL_SESSION,
    RO_PUBLIC,
    RO_USER,
    RW_PUBLIC,
    RW_SO,
    RW_USER,
    ClientSession,
    pin_text,
    quietly,
)
from .operations import Operations
from .state import ConnectionState


@dataclass(slots=True)
class SessionCalls:
    """C_OpenSession ... C_SetPIN."""

    state: ConnectionState

    def C_OpenSession(self, slot_id, flags) -> tuple:
        exposed = self.state.slot(slot_id, "C_OpenSession")
        if not flags & CKF_SERIAL_SESSION:
            raise CKRError(CKR_SESSION_PARALLEL_NOT_SUPPORTED, "C_OpenSession")
        rw = bool(flags & CKF_RW_SESSION)
        if not rw and self.state.logged_in.get(slot_id) == CKU_SO:
            raise CKRError(CKR_SESSION_READ_WRITE_SO_EXISTS, "C_OpenSession")
        with exposed.lock:
            if slot_id not in self.state.stores:
                self.state.stores[slot_id] = exposed.slot.open_session(rw=True)
            exposed.sessions += 1
        handle, self.state.next_session = self.state.next_session, self.state.next_session + 1
        self.state.sessions[handle] = ClientSession(handle, exposed, rw, Operations(self.state.budget))
        return (handle,)

    def C_CloseSession(self, handle) -> tuple:
        self.close(self.state.session(handle, "C_CloseSession"))
        return ()

    def C_CloseAllSessions(self, slot_id) -> tuple:
        exposed = self.state.slot(slot_id, "C_CloseAllSessions")
        for session in [s for s in self.state.sessions.values() if s.slot is exposed]:
            self.close(session)
        return ()

    def close(self, session: ClientSession) -> None:
        session.operations.clear()
        store = self.state.stores.get(session.slot.slot_id)
        for handle in sorted(session.session_objects):
            quietly(lambda: store.destroy_object(handle))
            self.state.forget(session, handle)
        self.state.sessions.pop(session.handle, None)
        exposed = session.slot
        with exposed.lock:
            exposed.sessions -= 1
        if any(s.slot is exposed for s in self.state.sessions.values()):
            return
        # the application's last session with the token: its login ends too (PKCS#11), and
        # every object gets a new handle (SoftHSM2's HandleManager.allSessionsClosed)
        self.state.names.all_closed(exposed.slot_id)
        with exposed.lock:
            store = self.state.stores.pop(exposed.slot_id, None)
            if store is not None:
                quietly(store.close)
        self.state.private = {k: v for k, v in self.state.private.items() if k[0] != exposed.slot_id}
        self.state.identities = {k: v for k, v in self.state.identities.items() if k[0] != exposed.slot_id}
        self.state.key_facts = {k: v for k, v in self.state.key_facts.items() if k[0] != exposed.slot_id}
        self.state.signature_sizes = {
            k: v for k, v in self.state.signature_sizes.items() if k[0] != exposed.slot_id
        }
        if exposed.slot_id in self.state.logged_in:
            self.logout(exposed)

    def C_GetSessionInfo(self, handle) -> tuple:
        session = self.state.session(handle, "C_GetSessionInfo")
        user = self.state.user(session)
        if user == CKU_SO:
            state = RW_SO
        elif user is None:
            state = RW_PUBLIC if session.rw else RO_PUBLIC
        else:
            state = RW_USER if session.rw else RO_USER
        flags = CKF_SERIAL_SESSION | (CKF_RW_SESSION if session.rw else 0)
        return (SessionInfo(session.slot.slot_id, state, flags, 0),)

    def C_Login(self, handle, user_type, pin) -> tuple:
        session = self.state.session(handle, "C_Login")
        exposed, pin = session.slot, pin_text(pin, "C_Login")
        user = self.state.user(session)
        if user_type == CKU_CONTEXT_SPECIFIC:
            # only an operation on a CKA_ALWAYS_AUTHENTICATE key asks for it (SoftHSM2's order)
            operation = session.operations.waiting_for_login()
            if operation is None:
                raise CKRError(
                    CKR_OPERATION_NOT_INITIALIZED,
                    "C_Login",
                    "no operation in this session needs a context-specific login",
                )
            exposed.login.reauthenticate(self.state.number, pin)
            operation.reauthenticate, operation.context_pin = False, pin
            return ()
        if user_type not in (CKU_SO, CKU_USER):
            raise CKRError(CKR_USER_TYPE_INVALID, "C_Login")
        # a read-only session refuses an SO login before anything else, as SoftHSM2 checks it
        if user_type == CKU_SO and any(s.slot is exposed and not s.rw for s in self.state.sessions.values()):
            raise CKRError(CKR_SESSION_READ_ONLY_EXISTS, "C_Login")
        if user is not None:
            raise CKRError(
                CKR_USER_ALREADY_LOGGED_IN if user == user_type else CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
                "C_Login",
            )
        exposed.login.login(self.state.number, user_type, pin)
        self.state.logged_in[exposed.slot_id] = user_type
        self.state.log(
            f"connection {self.state.number}: logged in as {'SO' if user_type == CKU_SO else 'user'} "
            f"on slot {exposed.slot_id:#x}"
        )
        return ()

    def C_Logout(self, handle) -> tuple:
        session = self.state.session(handle, "C_Logout")
        if self.state.user(session) is None:
            raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_Logout")
        self.logout(session.slot)
        self.state.names.logged_out(session.slot.slot_id)  # private objects get new handles, as on a token
        return ()

    def logout(self, exposed) -> None:
        self.state.logged_in.pop(exposed.slot_id, None)
        try:
            exposed.login.logout(self.state.number)
        except CKRError:
            pass  # not a holder any more: nothing of ours to undo
        self.state.log(f"connection {self.state.number}: logged out of slot {exposed.slot_id:#x}")

    def C_InitPIN(self, handle, pin) -> tuple:
        session = self.state.session(handle, "C_InitPIN")
        if self.state.user(session) != CKU_SO:
            raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_InitPIN", "C_InitPIN needs the SO logged in")
        if not session.rw:
            raise CKRError(CKR_SESSION_READ_ONLY, "C_InitPIN")
        self.state.store(session).init_pin(pin_text(pin, "C_InitPIN"))
        return ()

    def C_SetPIN(self, handle, old_pin, new_pin) -> tuple:
        session = self.state.session(handle, "C_SetPIN")
        if not session.rw:
            raise CKRError(CKR_SESSION_READ_ONLY, "C_SetPIN")
        new = pin_text(new_pin, "C_SetPIN")
        self.state.store(session).set_pin(pin_text(old_pin, "C_SetPIN"), new)
        session.slot.login.pin_changed(self.state.user(session) or CKU_USER, new)
        return ()
