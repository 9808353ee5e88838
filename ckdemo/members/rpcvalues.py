"""Between the slot protocol's plain values (ckdemo.slots) and what p11-kit RPC 0.24.1 carries,
for a member reached over its socket (the client direction; ckdemo.serve has the other).

Attributes: ckdemo.rpc.values, shared with the server side.

Mechanisms: the server decodes the parameter of any mechanism without an encoder of its own as a
byte array and hands those bytes to the module (`p11_rpc_buffer_get_mechanism`, rpc-message.c).
So every parameter that is a flat byte string travels: IVs, and for the SHA*-RSA-PKCS-PSS family
the native CK_RSA_PKCS_PSS_PARAMS (three CK_ULONGs, no pointer). Raw RSA-PSS and RSA-OAEP have
encoders (OAEP's carries its label). Parameters holding pointers cannot travel (TRANSPORT_LIMIT).
"""

from __future__ import annotations

import struct

from .. import attribute_table
from ..codes import CKR_MECHANISM_INVALID, CKRError, NotCarried
from ..model import ECDHParam, GCMParam, MechanismParam, OAEPParam, PSSParam
from ..rpc import values as rpc_values
from ..rpc.attributes import Attribute
from ..rpc.mechanisms import (
    CKM_RSA_PKCS_OAEP,
    CKM_RSA_PKCS_PSS,
    Mechanism,
    RsaPkcsOaepParams,
    RsaPkcsPssParams,
)

TRANSPORT = "p11-kit RPC 0.24 (the member's p11-kit server)"
TRANSPORT_LIMIT = (
    f"{TRANSPORT} carries a mechanism parameter only as flat bytes: parameters "
    "holding pointers (AES-GCM, ECDH public data, PBKDF2) cannot reach a remote member"
)
CKZ_DATA_SPECIFIED = 0x1
_NATIVE_PSS = struct.Struct("=QQQ")  # CK_RSA_PKCS_PSS_PARAMS on LP64: hashAlg, mgf, sLen


# ---- templates: one home for both directions (ckdemo.rpc.values) ---------------------------------
def template(values: dict[int, object] | None, function: str) -> tuple[Attribute, ...]:
    """The template as it travels, checked against the one table first (a value the table
    refuses never reaches the member)."""
    return rpc_values.template_to_wire(attribute_table.check(dict(values or {}), function))


value = rpc_values.read_value
unavailable = rpc_values.unavailable


# ---- mechanisms --------------------------------------------------------------------------------
def mechanism(mechanism_type: int, param: MechanismParam, function: str) -> Mechanism:
    """The mechanism as it travels; one whose parameter holds pointers is refused here, before
    anything reaches the socket, with CKR_MECHANISM_INVALID and the transport named."""
    if param is None or isinstance(param, (bytes, bytearray)):
        if mechanism_type in (CKM_RSA_PKCS_PSS, CKM_RSA_PKCS_OAEP):
            raise CKRError(
                CKR_MECHANISM_INVALID,
                function,
                f"{TRANSPORT} needs this mechanism's parameters as a structure",
            )
        return Mechanism(mechanism_type, bytes(param) if param is not None else None)
    if isinstance(param, PSSParam):
        if mechanism_type == CKM_RSA_PKCS_PSS:
            return Mechanism(
                mechanism_type, RsaPkcsPssParams(param.hash_mechanism, param.mgf, param.salt_length)
            )
        # the SHA*-RSA-PKCS-PSS family: no encoder in 0.24.1, the native struct as bytes
        return Mechanism(mechanism_type, _NATIVE_PSS.pack(param.hash_mechanism, param.mgf, param.salt_length))
    if isinstance(param, OAEPParam) and mechanism_type == CKM_RSA_PKCS_OAEP:
        return Mechanism(
            mechanism_type,
            RsaPkcsOaepParams(param.hash_mechanism, param.mgf, CKZ_DATA_SPECIFIED, param.source or None),
        )
    if isinstance(param, (GCMParam, ECDHParam, OAEPParam)):
        raise NotCarried(function, TRANSPORT_LIMIT)
    raise TypeError(f"unknown mechanism parameter {param!r}")
