"""Between the slot protocol's plain values (ckdemo.slots) and what p11-kit RPC 0.24.1 carries,
for a member reached over its socket (the client direction; ckdemo.serve has the other).

Attributes: 0.24.1 maps some types to one byte (CK_BBOOL), a u64 (CK_ULONG), a nested template
or a mechanism list, and sends every other type as the C bytes of its value. So a CK_BBOOL or
CK_ULONG it does not map (CKA_DESTROYABLE, CKA_PARAMETER_SET ...) travels as 1 or 8 native bytes.

Mechanisms: the server decodes the parameter of any mechanism without an encoder of its own as a
byte array and hands those bytes to the module (`p11_rpc_buffer_get_mechanism`, rpc-message.c).
So every parameter that is a flat byte string travels: IVs, and for the SHA*-RSA-PKCS-PSS family
the native CK_RSA_PKCS_PSS_PARAMS (three CK_ULONGs, no pointer). Raw RSA-PSS and RSA-OAEP have
encoders (OAEP's carries its label). Parameters holding pointers cannot travel (TRANSPORT_LIMIT).
"""
from __future__ import annotations

import datetime
import struct

from ..codes import CKR_MECHANISM_INVALID, CKRError
from ..model import ECDHParam, GCMParam, MechanismParam, OAEPParam, PSSParam
from ..rpc.attributes import UNAVAILABLE, Attribute, ValueType, value_type
from ..rpc.mechanisms import (CKM_RSA_PKCS_OAEP, CKM_RSA_PKCS_PSS, Mechanism, RsaPkcsOaepParams,
                              RsaPkcsPssParams)

TRANSPORT = "p11-kit RPC 0.24 (the member's p11-kit server)"
TRANSPORT_LIMIT = (f"{TRANSPORT} carries a mechanism parameter only as flat bytes: parameters "
                   "holding pointers (AES-GCM, ECDH public data, PBKDF2) cannot reach a remote member")
CKZ_DATA_SPECIFIED = 0x1
_NATIVE_PSS = struct.Struct("=QQQ")  # CK_RSA_PKCS_PSS_PARAMS on LP64: hashAlg, mgf, sLen

# What the attributes 0.24.1 sends as plain bytes hold (spec 2.40 / 3.0 types).
CKA_LABEL, CKA_APPLICATION, CKA_UNIQUE_ID, CKA_URL = 0x003, 0x010, 0x004, 0x089
TEXT = frozenset({CKA_LABEL, CKA_APPLICATION, CKA_UNIQUE_ID, CKA_URL})
DATES = frozenset({0x110, 0x111})
# CK_BBOOLs 0.24.1 does not map: CKA_DESTROYABLE, CKA_ENCAPSULATE, CKA_DECAPSULATE
UNMAPPED_BOOLS = frozenset({0x172, 0x633, 0x634})
# CK_ULONGs 0.24.1 does not map: CKA_PROFILE_ID, CKA_PARAMETER_SET, CKA_OTP_* lengths
UNMAPPED_ULONGS = frozenset({0x601, 0x61D, 0x220, 0x221, 0x222})


# ---- templates ---------------------------------------------------------------------------------
def attribute(attribute_type: int, value: object) -> Attribute:
    """One {CKA_*: value} entry as it travels."""
    kind = value_type(attribute_type)
    if kind is ValueType.ATTRIBUTE_ARRAY:
        return Attribute(attribute_type, tuple(attribute(t, v) for t, v in dict(value).items()))
    if kind is ValueType.MECHANISM_TYPE_ARRAY:
        return Attribute(attribute_type, tuple(int(m) for m in value))
    if kind in (ValueType.BYTE, ValueType.ULONG):
        return Attribute(attribute_type, int(value))
    if isinstance(value, bool):
        return Attribute(attribute_type, bytes([value]))
    if isinstance(value, int):
        return Attribute(attribute_type, int(value).to_bytes(8, "little"))
    if isinstance(value, str):
        return Attribute(attribute_type, value.encode("utf-8"))
    if isinstance(value, (datetime.date, datetime.datetime)):
        return Attribute(attribute_type, value.strftime("%Y%m%d").encode("ascii"))
    if isinstance(value, dict):
        raise TypeError(f"attribute {attribute_type:#x} cannot hold a template")
    return Attribute(attribute_type, bytes(value))


def template(values: dict[int, object] | None) -> tuple[Attribute, ...]:
    return tuple(attribute(t, v) for t, v in (values or {}).items())


def value(wire: Attribute) -> object:
    """A value read back, as the local backend (python-pkcs11) gives it."""
    kind, raw = value_type(wire.type), wire.value
    if kind is ValueType.BYTE:
        return bool(raw)
    if kind is ValueType.ULONG:
        return int(raw)
    if kind is ValueType.ATTRIBUTE_ARRAY:
        return {item.type: value(item) for item in raw or ()}
    if kind is ValueType.MECHANISM_TYPE_ARRAY:
        return [int(m) for m in raw or ()]
    raw = bytes(raw or b"")
    if wire.type in TEXT:
        return raw.decode("utf-8", errors="replace")
    if wire.type in DATES:
        if len(raw) != 8:
            return None  # an empty date (SoftHSM keys carry them): python-pkcs11 reads None too
        try:
            return datetime.date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
        except ValueError:
            return None
    if wire.type in UNMAPPED_BOOLS and len(raw) == 1:
        return bool(raw[0])
    if wire.type in UNMAPPED_ULONGS and len(raw) == 8:
        return int.from_bytes(raw, "little")
    return raw


def unavailable(wire: Attribute) -> bool:
    return wire.length == UNAVAILABLE


# ---- mechanisms --------------------------------------------------------------------------------
def mechanism(mechanism_type: int, param: MechanismParam, function: str) -> Mechanism:
    """The mechanism as it travels; one whose parameter holds pointers is refused here, before
    anything reaches the socket, with CKR_MECHANISM_INVALID and the transport named."""
    if param is None or isinstance(param, (bytes, bytearray)):
        if mechanism_type in (CKM_RSA_PKCS_PSS, CKM_RSA_PKCS_OAEP):
            raise CKRError(CKR_MECHANISM_INVALID, function,
                           f"{TRANSPORT} needs this mechanism's parameters as a structure")
        return Mechanism(mechanism_type, bytes(param) if param is not None else None)
    if isinstance(param, PSSParam):
        if mechanism_type == CKM_RSA_PKCS_PSS:
            return Mechanism(mechanism_type, RsaPkcsPssParams(param.hash_mechanism, param.mgf,
                                                              param.salt_length))
        # the SHA*-RSA-PKCS-PSS family: no encoder in 0.24.1, the native struct as bytes
        return Mechanism(mechanism_type, _NATIVE_PSS.pack(param.hash_mechanism, param.mgf,
                                                          param.salt_length))
    if isinstance(param, OAEPParam) and mechanism_type == CKM_RSA_PKCS_OAEP:
        return Mechanism(mechanism_type, RsaPkcsOaepParams(param.hash_mechanism, param.mgf,
                                                           CKZ_DATA_SPECIFIED, param.source or None))
    if isinstance(param, (GCMParam, ECDHParam, OAEPParam)):
        raise CKRError(CKR_MECHANISM_INVALID, function, TRANSPORT_LIMIT)
    raise TypeError(f"unknown mechanism parameter {param!r}")
