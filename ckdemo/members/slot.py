"""A physical slot: one slot id in one loaded module, with the token it holds."""

from __future__ import annotations

from ..codes import CKR_FUNCTION_NOT_SUPPORTED, CKR_TOKEN_NOT_PRESENT, CKRError
from ..model import LibraryInfo, MechanismInfo, SlotInfo, TokenInfo
from .module import Module
from .names import mechanism_name, slot_description
from ..slots import MemberSlot
from .session import PhysicalSession


class PhysicalSlot(MemberSlot):
    """The operations CKDemo's token menu needs, on one slot of one module."""

    fallback_description = "physical slot"

    def __init__(self, module: Module, slot_id: int | None, member_label: str | None = None) -> None:
        """member_label: the member a library copy of its own serves (init --isolated)."""
        self.module = module
        self.slot_id = slot_id
        self.member_label = member_label

    def _call(self, function: str, fn, *args, **kwargs):
        self._check(function)
        return self.module.call(function, fn, *args, **kwargs)

    def _check(self, function: str) -> None:
        if self.slot_id is None:  # no slot holds the token (yet)
            raise CKRError(CKR_TOKEN_NOT_PRESENT, function, "member not reachable")
        self.module.check_fault(self.slot_id, function)

    def reconnect(self, serial: str) -> None:
        """Find the token again by serial (slot ids change); a member's own module instance is
        re-initialised first, which is what brings a restarted remote member back."""
        if self.module.dedicated:
            self.module.reinitialize()
        for slot_id in self.module.slot_ids(token_present=True):
            try:
                if (
                    self.module.call("C_GetTokenInfo", self.raw.get_token_info, slot_id).serial_number
                    == serial
                ):
                    self.slot_id = slot_id
                    return
            except CKRError:
                continue
        raise CKRError(CKR_TOKEN_NOT_PRESENT, "C_GetSlotList", f"token {serial} not found")

    @property
    def raw(self):
        return self.module.raw

    def slot_info(self) -> SlotInfo:
        return self._call("C_GetSlotInfo", self.raw.get_slot_info, self.slot_id)

    def token_info(self) -> TokenInfo:
        return self._call("C_GetTokenInfo", self.raw.get_token_info, self.slot_id)

    def description(self) -> str:
        return slot_description(self)

    def mechanisms(self) -> list[tuple[int, str]]:
        codes = self._call("C_GetMechanismList", self.raw.get_mechanism_list, self.slot_id)
        return [(code, mechanism_name(code)) for code in codes]

    def mechanism_info(self, mechanism: int) -> MechanismInfo:
        info = self._call("C_GetMechanismInfo", self.raw.get_mechanism_info, self.slot_id, mechanism)
        return MechanismInfo(
            mechanism,
            mechanism_name(mechanism),
            info.min_key_size,
            info.max_key_size,
            info.flags,
            info.flag_names,
        )

    def init_token(self, so_pin: str, label: str) -> None:
        self._call("C_InitToken", self.raw.init_token, self.slot_id, so_pin, label)

    def open_session(self, rw: bool = True) -> PhysicalSession:
        self._check("C_OpenSession")
        token = self.module.pkcs11_token(self.slot_id)
        session = self._call("C_OpenSession", token.open, rw=rw)
        return PhysicalSession(self, session, rw)

    def library_info(self) -> LibraryInfo:
        return self.module.info()

    def login_counter(self) -> None:
        return None  # the token counts wrong PINs itself

    def extractability_note(self, extractable: bool) -> str:
        return ""  # CKA_EXTRACTABLE means what the token says

    def wait_for_event(self) -> int:
        """C_WaitForSlotEvent without blocking: a slot id, or CKRError(CKR_NO_EVENT)."""
        return self._call("C_WaitForSlotEvent", self.raw.wait_for_slot_event, False)

    def fail(self) -> str:
        """A member in this process fails simulated (a remote member's server is killed for
        real: members/rpcslot.py)."""
        self.module.fail_slot(self.slot_id)
        return "simulated: every call returns CKR_DEVICE_ERROR, its sessions are gone"

    def hang(self) -> str:
        raise CKRError(
            CKR_FUNCTION_NOT_SUPPORTED,
            "Hang member",
            "only a remote member (a p11-kit server process) can be made to hang",
        )

    def resume(self) -> str:
        raise CKRError(CKR_FUNCTION_NOT_SUPPORTED, "Resume member", "only a remote member can hang")

    def restore(self) -> str:
        self.module.restore_slot(self.slot_id)
        return "simulated failure lifted"

    @property
    def failed(self) -> bool:
        return self.slot_id in self.module.failed_slots

    def close_all_sessions(self) -> None:
        self._call("C_CloseAllSessions", self.raw.close_all_sessions, self.slot_id)

    def exports(self, symbol: str) -> list[str]:
        """The library behind this slot, if it exports `symbol` (vendor extension detection,
        e.g. Luna's CA_SetDomain, by dlsym): [path] or []."""
        try:
            return [self.module.path] if self.module.raw.has_symbol(symbol) else []
        except (CKRError, OSError):  # a library that cannot be reached exports nothing we can use
            return []

    def __repr__(self) -> str:
        return f"PhysicalSlot({self.module.path!r}, {self.slot_id})"
