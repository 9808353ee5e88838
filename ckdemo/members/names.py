"""CKM_* names for mechanism numbers, taken from python-pkcs11's enum (member layer only)."""
from __future__ import annotations

from pkcs11.mechanisms import Mechanism

CKM_VENDOR_DEFINED = 0x80000000


def mechanism_name(mechanism: int) -> str:
    try:
        return "CKM_" + Mechanism(mechanism).name.lstrip("_")  # python-pkcs11 marks old ones "_DES"
    except ValueError:
        if mechanism >= CKM_VENDOR_DEFINED:
            return f"CKM_VENDOR_DEFINED+0x{mechanism - CKM_VENDOR_DEFINED:X}"
        return f"CKM_0x{mechanism:08X}"

