"""Between the wire (ckdemo.rpc values) and the slot protocol's plain values (ckdemo.slots)."""
from __future__ import annotations

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
def mechanism_param(mechanism: Mechanism) -> MechanismParam:
    parameter = mechanism.parameter
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
    return Info(version(info.cryptoki_version), fixed(info.manufacturer_id, 32), 0,
                fixed(info.library_description, 32), version(info.library_version))


def slot_info(info: SlotSlotInfo, description: str) -> SlotInfo:
    return SlotInfo(fixed(description, 64), fixed(info.manufacturer_id, 32), info.flags,
                    version(info.hardware_version), version(info.firmware_version))


def token_info(info: SlotTokenInfo) -> TokenInfo:
    return TokenInfo(fixed(info.label, 32), fixed(info.manufacturer_id, 32), fixed(info.model, 16),
                     fixed(info.serial_number, 16), info.flags, info.max_session_count,
                     info.session_count, info.max_rw_session_count, info.rw_session_count,
                     info.max_pin_len, info.min_pin_len, info.total_public_memory,
                     info.free_public_memory, info.total_private_memory,
                     info.free_private_memory, version(info.hardware_version),
                     version(info.firmware_version), fixed(info.utc_time, 16))


def mechanism_info(info: SlotMechanismInfo) -> MechanismInfo:
    return MechanismInfo(info.min_key_size, info.max_key_size, info.flags)
