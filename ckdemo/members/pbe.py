"""PBE key generation (CKM_PKCS5_PBKD2) through ctypes, for choice 64.

python-pkcs11 0.10.1 has no CK_PKCS5_PBKD2_PARAMS2, so C_GenerateKey is called here through the
function list members/raw.py already took from the initialised module instance (same session
handles, no second C_Initialize), with this mechanism parameter. The caller holds the module
lock, as for every raw call.
"""

from __future__ import annotations

import ctypes
from ctypes import Structure, c_char_p, c_ubyte, c_ulong, c_void_p

from .raw import RawModule

CK_ULONG = c_ulong
CKM_PKCS5_PBKD2 = 0x3B0
CKZ_SALT_SPECIFIED = 0x1  # PKCS#11 v2.40 CK_PKCS5_PBKDF2_SALT_SOURCE_TYPE
CKP_PKCS5_PBKD2_HMAC_SHA256 = 0x4  # CK_PKCS5_PBKD2_PSEUDO_RANDOM_FUNCTION_TYPE


class CK_PKCS5_PBKD2_PARAMS2(Structure):
    """v2.40 errata / v3.0: the password length is a value, not a pointer (PARAMS had a pointer)."""

    _fields_ = [
        ("saltSource", CK_ULONG),
        ("pSaltSourceData", c_void_p),
        ("ulSaltSourceDataLen", CK_ULONG),
        ("iterations", CK_ULONG),
        ("prf", CK_ULONG),
        ("pPrfData", c_void_p),
        ("ulPrfDataLen", CK_ULONG),
        ("pPassword", c_char_p),
        ("ulPasswordLen", CK_ULONG),
    ]


def generate_key(
    raw: RawModule, session: int, password: str, salt: bytes, iterations: int, template: dict[int, object]
) -> int:
    """C_GenerateKey(CKM_PKCS5_PBKD2, HMAC-SHA256 PRF, specified salt); the new key's handle."""
    secret = password.encode("utf-8")
    salt_buffer = (c_ubyte * max(len(salt), 1)).from_buffer_copy(salt or b"\0")
    params = CK_PKCS5_PBKD2_PARAMS2(
        saltSource=CKZ_SALT_SPECIFIED,
        pSaltSourceData=ctypes.cast(salt_buffer, c_void_p),
        ulSaltSourceDataLen=len(salt),
        iterations=iterations,
        prf=CKP_PKCS5_PBKD2_HMAC_SHA256,
        pPrfData=None,
        ulPrfDataLen=0,
        pPassword=secret,
        ulPasswordLen=len(secret),
    )
    return raw.generate_key(session, CKM_PKCS5_PBKD2, template, params)
