"""The general-purpose, slot and token calls of a connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import wire
from ..codes import CKR_FUNCTION_NOT_SUPPORTED, CKR_GENERAL_ERROR, CKR_NO_EVENT, CKR_SESSION_EXISTS, CKRError
from ..rpc.calls import HANDSHAKE
from ..rpc.structs import BufferSize
from .client_session import CKF_DONT_BLOCK, pin_text
from .state import ConnectionState


@dataclass(slots=True)
class SlotCalls:
    """C_Initialize ... C_WaitForSlotEvent: what the library, its slots and tokens are."""

    state: ConnectionState
    release: Callable[[], None]  # everything the application holds (C_Finalize)

    def C_Initialize(self, handshake, reserved_present, reserved) -> tuple:
        if handshake != HANDSHAKE:  # rpc-server.c answers a wrong handshake this way
            raise CKRError(CKR_GENERAL_ERROR, "C_Initialize", "bad RPC handshake string")
        return ()

    def C_Finalize(self) -> tuple:
        self.release()
        return ()

    def C_GetInfo(self) -> tuple:
        return (self.state.info,)

    def C_GetSlotList(self, token_present, offered) -> tuple:
        ids = tuple(s.slot_id for s in self.state.order if not token_present or s.token_present())
        return (ids if offered >= len(ids) else BufferSize(len(ids)),)

    def C_GetSlotInfo(self, slot_id) -> tuple:
        exposed = self.state.slot(slot_id, "C_GetSlotInfo")
        return (wire.slot_info(exposed.slot.slot_info(), exposed.description()),)

    def C_GetTokenInfo(self, slot_id) -> tuple:
        exposed = self.state.slot(slot_id, "C_GetTokenInfo")
        with exposed.lock:
            return (wire.token_info(exposed.slot.token_info()),)

    def C_GetMechanismList(self, slot_id, offered) -> tuple:
        codes_ = tuple(self.state.slot(slot_id, "C_GetMechanismList").mechanisms(refresh=True))
        return (codes_ if offered >= len(codes_) else BufferSize(len(codes_)),)

    def C_GetMechanismInfo(self, slot_id, mechanism) -> tuple:
        exposed = self.state.slot(slot_id, "C_GetMechanismInfo")
        return (wire.mechanism_info(exposed.slot.mechanism_info(mechanism)),)

    def C_InitToken(self, slot_id, pin, label) -> tuple:
        exposed = self.state.slot(slot_id, "C_InitToken")
        with exposed.lock:
            if exposed.sessions or exposed.login.holders:
                raise CKRError(CKR_SESSION_EXISTS, "C_InitToken")
            exposed.slot.init_token(
                pin_text(pin, "C_InitToken"), (label or b"").rstrip(b"\0 ").decode("utf-8", "replace")
            )
        return ()

    def C_WaitForSlotEvent(self, flags) -> tuple:
        if not flags & CKF_DONT_BLOCK:  # blocking would hold this connection's every call
            raise CKRError(CKR_FUNCTION_NOT_SUPPORTED, "C_WaitForSlotEvent", "only CKF_DONT_BLOCK is served")
        answer = CKR_FUNCTION_NOT_SUPPORTED
        for exposed in self.state.order:
            total = exposed.collect_events()
            if not exposed.events_supported:
                continue
            answer = CKR_NO_EVENT
            told = self.state.events_told.setdefault(exposed.slot_id, total)
            if told < total:  # this application's next event, whoever took it from the slot
                self.state.events_told[exposed.slot_id] = told + 1
                return (exposed.slot_id,)
        raise CKRError(answer, "C_WaitForSlotEvent")
