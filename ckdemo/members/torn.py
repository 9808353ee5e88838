"""Key objects a killed writer left behind on a member, whatever the transport.

SoftHSM writes an object's attributes in the order of their numbers, so a cut leaves only the
first ones: an object without even a class, an RSA or EC key without its modulus or EC
parameters (perhaps with its class, label and CKA_ID already there), a key without a key type,
or a secret key without CKA_TOKEN (it reads as a session object), ID, label or key length. No usable key looks
like any of these. Reading is done one attribute at a time, as raw bytes: a torn object can make
a library wrapper's object construction fail (python-pkcs11 raises while reading it).
"""

from __future__ import annotations

from typing import Callable

from ..model import (
    CKA_CLASS,
    CKA_EC_PARAMS,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_MODULUS,
    CKA_TOKEN,
    CKA_VALUE_LEN,
    CKK_EC,
    CKK_RSA,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
)

KEY_CLASSES = (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY)
# the attribute that is never empty on a usable key (readable even on a sensitive one)
MATERIAL = {
    (CKO_PUBLIC_KEY, CKK_RSA): CKA_MODULUS,
    (CKO_PRIVATE_KEY, CKK_RSA): CKA_MODULUS,
    (CKO_PUBLIC_KEY, CKK_EC): CKA_EC_PARAMS,
    (CKO_PRIVATE_KEY, CKK_EC): CKA_EC_PARAMS,
}


def torn_key_objects(
    find: Callable[[dict], list[int]], read: Callable[[int, int], bytes | None]
) -> list[int]:
    """find(template) -> handles; read(handle, attribute) -> raw value or None."""
    torn = []
    for handle in find({}):
        raw_class = read(handle, CKA_CLASS)
        if not raw_class:
            torn.append(handle)
            continue
        cls = int.from_bytes(raw_class, "little")
        if cls not in KEY_CLASSES:
            continue
        raw_type = read(handle, CKA_KEY_TYPE)
        if not raw_type:
            torn.append(handle)
            continue
        material = MATERIAL.get((cls, int.from_bytes(raw_type, "little")))
        if material is not None:
            if not read(handle, material):
                torn.append(handle)
            continue
        if any(read(handle, a) for a in (CKA_ID, CKA_LABEL)) or _true(read(handle, CKA_TOKEN)):
            continue  # (an unwrapped secret key's CKA_VALUE_LEN is 0 in SoftHSM 2.6.1)
        if not int.from_bytes(read(handle, CKA_VALUE_LEN) or b"", "little"):
            torn.append(handle)
    return torn


def _true(raw: bytes | None) -> bool:
    return bool(raw) and raw != b"\x00"
