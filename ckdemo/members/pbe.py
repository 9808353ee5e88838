"""PBE key generation (CKM_PKCS5_PBKD2) through ctypes, for choice 64.

python-pkcs11 0.10.1 has no CK_PKCS5_PBKD2_PARAMS2, so C_GenerateKey is called here through the
function list members/raw.py already took from the initialised module instance (same session
handles, no second C_Initialize). The caller holds the module lock, as for every raw call.
"""
from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, byref, c_char_p, c_ubyte, c_ulong, c_void_p

from pkcs11 import Attribute
from pkcs11.attributes import ATTRIBUTE_TYPES

from ..codes import CKRError
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


class CK_MECHANISM(Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", c_void_p), ("ulParameterLen", CK_ULONG)]


class CK_ATTRIBUTE(Structure):
    _fields_ = [("type", CK_ULONG), ("pValue", c_void_p), ("ulValueLen", CK_ULONG)]


C_GENERATE_KEY = ctypes.CFUNCTYPE(CK_ULONG, CK_ULONG, POINTER(CK_MECHANISM), POINTER(CK_ATTRIBUTE),
                                  CK_ULONG, POINTER(CK_ULONG))


def _attributes(template: dict[int, object]) -> tuple[ctypes.Array, list]:
    """A CK_ATTRIBUTE array, values packed as python-pkcs11 packs them; the buffers are
    returned too, so they live as long as the call."""
    buffers = []
    array = (CK_ATTRIBUTE * len(template))()
    for item, (code, value) in zip(array, template.items()):
        pack = ATTRIBUTE_TYPES[Attribute(code)][0]
        data = pack(value)
        buffer = (c_ubyte * max(len(data), 1)).from_buffer_copy(data or b"\0")
        buffers.append(buffer)
        item.type, item.pValue, item.ulValueLen = code, ctypes.cast(buffer, c_void_p), len(data)
    return array, buffers


def generate_key(raw: RawModule, session: int, password: str, salt: bytes, iterations: int,
                 template: dict[int, object]) -> int:
    """C_GenerateKey(CKM_PKCS5_PBKD2, HMAC-SHA256 PRF, specified salt); the new key's handle."""
    secret = password.encode("utf-8")
    salt_buffer = (c_ubyte * max(len(salt), 1)).from_buffer_copy(salt or b"\0")
    params = CK_PKCS5_PBKD2_PARAMS2(
        saltSource=CKZ_SALT_SPECIFIED, pSaltSourceData=ctypes.cast(salt_buffer, c_void_p),
        ulSaltSourceDataLen=len(salt), iterations=iterations, prf=CKP_PKCS5_PBKD2_HMAC_SHA256,
        pPrfData=None, ulPrfDataLen=0, pPassword=secret, ulPasswordLen=len(secret))
    mechanism = CK_MECHANISM(CKM_PKCS5_PBKD2, ctypes.cast(byref(params), c_void_p),
                             ctypes.sizeof(params))
    attributes, _buffers = _attributes(template)
    key = CK_ULONG(0)
    function = C_GENERATE_KEY(raw.function_list.C_GenerateKey)
    rv = function(session, byref(mechanism), attributes, len(template), byref(key))
    if rv:
        raise CKRError(rv, "C_GenerateKey")
    return key.value
