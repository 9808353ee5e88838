"""Plain PKCS#11 data shapes shared by every layer (no python-pkcs11, no ctypes, no UI).

The member layer fills them from a real module; the HA layer fills them for the virtual slot;
handlers and the menu only read them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# PKCS#11 user types (spec 2.40, CKU_*)
CKU_SO = 0
CKU_USER = 1
CKU_CONTEXT_SPECIFIC = 2

# Session states (spec: CKS_*)
SESSION_STATES = {
    0: "CKS_RO_PUBLIC_SESSION",
    1: "CKS_RO_USER_FUNCTIONS",
    2: "CKS_RW_PUBLIC_SESSION",
    3: "CKS_RW_USER_FUNCTIONS",
    4: "CKS_RW_SO_FUNCTIONS",
}

CK_UNAVAILABLE_INFORMATION = 0xFFFFFFFFFFFFFFFF
CK_EFFECTIVELY_INFINITE = 0


@dataclass(frozen=True)
class LibraryInfo:
    cryptoki_version: tuple[int, int]
    manufacturer_id: str
    library_description: str
    library_version: tuple[int, int]
    path: str = ""


@dataclass(frozen=True)
class SlotInfo:
    slot_id: int
    description: str
    manufacturer_id: str
    flags: int
    flag_names: tuple[str, ...]
    hardware_version: tuple[int, int]
    firmware_version: tuple[int, int]

    @property
    def token_present(self) -> bool:
        return bool(self.flags & 0x1)  # CKF_TOKEN_PRESENT


@dataclass(frozen=True)
class TokenInfo:
    label: str
    manufacturer_id: str
    model: str
    serial_number: str
    flags: int
    flag_names: tuple[str, ...]
    max_session_count: int
    session_count: int
    max_rw_session_count: int
    rw_session_count: int
    max_pin_len: int
    min_pin_len: int
    total_public_memory: int
    free_public_memory: int
    total_private_memory: int
    free_private_memory: int
    hardware_version: tuple[int, int]
    firmware_version: tuple[int, int]
    utc_time: str

    @property
    def initialized(self) -> bool:
        return bool(self.flags & 0x400)  # CKF_TOKEN_INITIALIZED


@dataclass(frozen=True)
class SessionInfo:
    handle: int
    slot_id: int
    state: int
    flags: int
    flag_names: tuple[str, ...]
    device_error: int

    @property
    def state_name(self) -> str:
        return SESSION_STATES.get(self.state, f"0x{self.state:x}")


@dataclass(frozen=True)
class MechanismInfo:
    mechanism: int
    name: str
    min_key_size: int
    max_key_size: int
    flags: int
    flag_names: tuple[str, ...] = field(default_factory=tuple)
