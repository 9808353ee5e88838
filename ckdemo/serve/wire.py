"""Between the wire (ckdemo.rpc values) and the slot protocol's plain values (ckdemo.slots)."""

from __future__ import annotations

from ..codes import CKR_MECHANISM_PARAM_INVALID, CKRError
from ..model import MechanismParam, OAEPParam, PSSParam
from ..model import LibraryInfo, MechanismInfo as SlotMechanismInfo, SlotInfo as SlotSlotInfo
from ..model import TokenInfo as SlotTokenInfo
from ..rpc import attributes as wire_attributes
from ..rpc import values
from ..rpc.attributes import UNAVAILABLE, Attribute, value_type
from ..rpc.mechanisms import Mechanism, RsaPkcsOaepParams, RsaPkcsPssParams
from ..rpc.structs import Info, MechanismInfo, SlotInfo, TokenInfo, Version

CKZ_DATA_SPECIFIED = 0x1  # OAEP source: the encoding parameter is in source_data


# ---- templates --------------------------------------------------------------------------------
def template(attributes, function: str) -> dict[int, object]:
    """An `aA` template as the slot protocol's {CKA_*: value}, checked against the one table."""
    return values.template_from_wire(attributes, function)


attribute = values.to_wire  # a slot's value of one attribute as it travels


def unavailable(attribute_type: int) -> Attribute:
    return Attribute(attribute_type, None, UNAVAILABLE)


def size_only(wire: Attribute) -> Attribute:
    """The reply to a size query (buffer length 0): the length, no value (rpc-message.c)."""
    return Attribute(wire.type, None, wire.length)


def native_length(wire: Attribute) -> int:
    return wire_attributes.native_length(value_type(wire.type), wire.value)


# ---- mechanisms --------------------------------------------------------------------------------
# Mechanisms whose parameter is flat bytes -- an IV, a counter block, a CK_ULONG, three
# CK_ULONGs -- so a client may send it as a byte array (p11-kit's server decodes any parameter it
# has no encoder for that way). Any other parameter sent as bytes could be a structure holding
# pointers (CK_GCM_PARAMS, CK_ECDH1_DERIVE_PARAMS, CK_KEY_DERIVATION_STRING_DATA ...) that the
# module would follow into this process's memory (measured: C_Encrypt after an AES-GCM init with
# a raw 48-byte parameter killed the server): CKR_MECHANISM_PARAM_INVALID instead.
FLAT_PARAMETERS = frozenset(
    {
        0x0122,
        0x0125,
        0x0133,
        0x0136,  # CKM_DES_CBC(_PAD), CKM_DES3_CBC(_PAD): an IV
        0x1082,
        0x1085,
        0x1089,  # CKM_AES_CBC, CKM_AES_CBC_PAD, CKM_AES_CTS: an IV
        0x1086,  # CKM_AES_CTR: CK_AES_CTR_PARAMS (a CK_ULONG and a 16-byte block)
        0x2104,
        0x2105,
        0x2106,
        0x2107,
        0x2108,  # CKM_AES_OFB, CFB64, CFB8, CFB128, CFB1: an IV
        0x2109,
        0x210A,  # CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD: an optional IV
        0x0043,
        0x0044,
        0x0045,
        0x0046,
        0x0047,  # CKM_SHA*_RSA_PKCS_PSS: three CK_ULONGs
        0x0222,
        0x0232,
        0x0252,
        0x0257,
        0x0262,
        0x0272,  # CKM_SHA*_HMAC_GENERAL: a CK_ULONG
        0x1084,
        0x108B,  # CKM_AES_MAC_GENERAL, CKM_AES_CMAC_GENERAL: a CK_ULONG
    }
)


def mechanism_param(mechanism: Mechanism) -> MechanismParam:
    parameter = mechanism.parameter
    if isinstance(parameter, (bytes, bytearray)) and parameter and mechanism.type not in FLAT_PARAMETERS:
        raise CKRError(
            CKR_MECHANISM_PARAM_INVALID,
            "C_*Init",
            f"mechanism {mechanism.type:#x} takes a parameter this server does not "
            "decode; sent as bytes it could hold pointers",
        )
    if isinstance(parameter, RsaPkcsPssParams):
        return PSSParam(parameter.hash_alg, parameter.mgf, parameter.salt_length)
    if isinstance(parameter, RsaPkcsOaepParams):
        source = parameter.source_data if parameter.source == CKZ_DATA_SPECIFIED else None
        return OAEPParam(parameter.hash_alg, parameter.mgf, source or None)
    return parameter  # bytes (an IV ...) or None


# ---- structures --------------------------------------------------------------------------------
def fixed(text: str, size: int) -> bytes:
    """A space-padded CK_UTF8CHAR field: cut at a character boundary when too long."""
    raw = (text or "").encode("utf-8")
    while len(raw) > size:
        text = text[:-1]
        raw = text.encode("utf-8")
    return raw.ljust(size, b" ")


def version(pair: tuple[int, int]) -> Version:
    return Version(int(pair[0]) & 0xFF, int(pair[1]) & 0xFF)


def library_info(info: LibraryInfo) -> Info:
    return Info(
        version(info.cryptoki_version),
        fixed(info.manufacturer_id, 32),
        0,
        fixed(info.library_description, 32),
        version(info.library_version),
    )


def slot_info(info: SlotSlotInfo, description: str) -> SlotInfo:
    return SlotInfo(
        fixed(description, 64),
        fixed(info.manufacturer_id, 32),
        info.flags,
        version(info.hardware_version),
        version(info.firmware_version),
    )


def token_info(info: SlotTokenInfo) -> TokenInfo:
    return TokenInfo(
        fixed(info.label, 32),
        fixed(info.manufacturer_id, 32),
        fixed(info.model, 16),
        fixed(info.serial_number, 16),
        info.flags,
        info.max_session_count,
        info.session_count,
        info.max_rw_session_count,
        info.rw_session_count,
        info.max_pin_len,
        info.min_pin_len,
        info.total_public_memory,
        info.free_public_memory,
        info.total_private_memory,
        info.free_private_memory,
        version(info.hardware_version),
        version(info.firmware_version),
        fixed(info.utc_time, 16),
    )


def mechanism_info(info: SlotMechanismInfo) -> MechanismInfo:
    return MechanismInfo(info.min_key_size, info.max_key_size, info.flags)
