"""CKM_* names for mechanism numbers, taken from python-pkcs11's enum (member layer only)."""

from __future__ import annotations

from pkcs11.mechanisms import Mechanism

from ..codes import CKRError

CKM_VENDOR_DEFINED = 0x80000000


def mechanism_name(mechanism: int) -> str:
    try:
        return "CKM_" + Mechanism(mechanism).name.lstrip("_")  # python-pkcs11 marks old ones "_DES"
    except ValueError:
        if mechanism >= CKM_VENDOR_DEFINED:
            return f"CKM_VENDOR_DEFINED+0x{mechanism - CKM_VENDOR_DEFINED:X}"
        return f"CKM_0x{mechanism:08X}"


def slot_description(slot, where: str = "") -> str:
    """What the slot list shows: the slot description and, when present, the token label
    (`where`: how the token is reached, e.g. "remote")."""
    info = slot.slot_info()
    if not info.token_present:
        return f"{info.description} (no token)"
    try:
        label = slot.token_info().label
    except CKRError:  # a token that cannot answer still gets listed
        return info.description
    return f"{info.description} ({label or 'uninitialised token'}{', ' + where if where else ''})"
