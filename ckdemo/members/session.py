"""A session on a physical slot: python-pkcs11's Session plus the calls it does not expose."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..model import SessionInfo

if TYPE_CHECKING:
    from .slot import PhysicalSlot


class PhysicalSession:
    """Opened without a PIN (CKDemo logs in as a separate step), so closing it never logs out."""

    def __init__(self, slot: "PhysicalSlot", session, rw: bool) -> None:
        self.slot = slot
        self._session = session
        self.rw = rw
        self.handle: int = session.handle

    @property
    def _module(self):
        return self.slot.module

    def login(self, user_type: int, pin: str) -> None:
        self._module.call("C_Login", self._module.raw.login, self.handle, user_type, pin)

    def logout(self) -> None:
        self._module.call("C_Logout", self._module.raw.logout, self.handle)

    def close(self) -> None:
        self._module.call("C_CloseSession", self._session.close)

    def info(self) -> SessionInfo:
        return self._module.call("C_GetSessionInfo", self._module.raw.get_session_info, self.handle)

    def init_pin(self, pin: str) -> None:
        self._module.call("C_InitPIN", self._module.raw.init_pin, self.handle, pin)

    def set_pin(self, old_pin: str, new_pin: str) -> None:
        self._module.call("C_SetPIN", self._module.raw.set_pin, self.handle, old_pin, new_pin)

    def generate_random(self, length: int) -> bytes:
        return self._module.call("C_GenerateRandom", self._session.generate_random, length * 8)

    def __repr__(self) -> str:
        return f"PhysicalSession({self.slot!r}, handle={self.handle})"
