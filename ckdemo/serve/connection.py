"""One client connection: one application, answered by groups of calls over one state.

The state (state.ConnectionState: sessions, logins, object facts, promises, slot events told)
is one object; the calls are grouped as the PKCS#11 specification groups them, one object each
(slot_calls, session_calls, object_calls, crypto_calls, key_calls), composed over that state.
dispatch.py is the one table of which group's method answers which call; `answer` unpacks a
request, calls its method, packs the reply (a call the table does not list is answered
CKR_FUNCTION_NOT_SUPPORTED), as p11-kit's rpc-server.c does. Reply prediction (predicted.py)
and the fault lab (faulted.py) are wrappers around `answer`.
"""

from __future__ import annotations

from typing import Callable

from .. import codes
from ..codes import CKR_FUNCTION_NOT_SUPPORTED, CKR_GENERAL_ERROR, CKRError
from ..rpc.buffer import CodecError, UnknownCallError
from ..rpc.codec import decode_request, encode_error, encode_response
from ..rpc.structs import Info
from . import dispatch
from .crypto_calls import CryptoCalls
from .exposed import ExposedSlot
from .key_calls import KeyCalls
from .object_calls import ObjectCalls
from .operations import Budget
from .session_calls import SessionCalls
from .slot_calls import SlotCalls
from .state import ConnectionState


class Connection:
    """One application: its state, the groups of calls over it, and their table by call id."""

    def __init__(
        self,
        number: int,
        slots: list[ExposedSlot],
        info: Info,
        log: Callable[[str], None],
        on_error: Callable[[str, BaseException], None],
        budget: Budget | None = None,
        lost: Budget | None = None,
    ) -> None:
        self.state = state = ConnectionState(number, slots, info, log, on_error)
        if budget is not None:
            state.budget = budget
        if lost is not None:
            state.lost = lost
        self.session_calls = SessionCalls(state)
        groups = {
            SlotCalls: SlotCalls(state, self.release),
            SessionCalls: self.session_calls,
            ObjectCalls: ObjectCalls(state),
            CryptoCalls: CryptoCalls(state),
            KeyCalls: KeyCalls(state),
        }
        self.handlers = dispatch.bind(groups)  # call id -> this connection's method

    # ---- the request loop's entry ------------------------------------------------------------
    def answer(self, body: bytes) -> bytes:
        """The reply body to one request body; never raises for anything the client sent."""
        self.state.calls += 1
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
            names = self.state.names
            if names.active:  # after a logout or a last close: this application's names
                args = names.inward(request.name, args)
                return encode_response(call_id, *names.outward(request.name, args, handler(*args)))
            return encode_response(call_id, *handler(*args))
        except CKRError as error:
            return encode_error(error.ckr or CKR_GENERAL_ERROR)
        except Exception as error:  # a ckdemo bug: this call fails, the connection lives on
            self.state.on_error(f"connection {self.state.number}: {request.name}", error)
            return encode_error(CKR_GENERAL_ERROR)

    def run_after_reply(self) -> None:
        """The work the last reply promised; never raises (a refusal is kept for the next call)."""
        state = self.state
        work, state.after_reply = state.after_reply, None
        try:
            work()
        except Exception as error:  # a ckdemo bug: the promise is broken, the connection lives on
            state.on_error(f"connection {state.number}: work after a reply", error)

    def release(self) -> None:
        """Everything this application left: sessions, session objects, operations, login."""
        state, sessions = self.state, self.session_calls
        for session in list(state.sessions.values()):
            try:
                sessions.close(session)
            except Exception as error:  # one broken close must not keep the rest open
                state.sessions.pop(session.handle, None)
                state.on_error(f"connection {state.number}: cleanup", error)
        for slot_id in list(state.logged_in):
            sessions.logout(state.slots[slot_id])
        state.predicted.clear()
