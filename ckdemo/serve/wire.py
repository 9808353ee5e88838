"""Between the wire (ckdemo.rpc values) and the slot protocol's plain values (ckdemo.slots)."""
from __future__ import annotations

import datetime

from ..codes import CKR_ATTRIBUTE_VALUE_INVALID, CKRError
from ..model import MechanismParam, OAEPParam, PSSParam
from ..model import LibraryInfo, MechanismInfo as SlotMechanismInfo, SlotInfo as SlotSlotInfo
from ..model import TokenInfo as SlotTokenInfo
from ..rpc import attributes as wire_attributes
from ..rpc.attributes import UNAVAILABLE, Attribute, ValueType, value_type
from ..rpc.mechanisms import Mechanism, RsaPkcsOaepParams, RsaPkcsPssParams
from ..rpc.structs import Info, MechanismInfo, SlotInfo, TokenInfo, Version
from ..slots import DATE_ATTRIBUTES, TEXT_ATTRIBUTES

CKZ_DATA_SPECIFIED = 0x1  # OAEP source: the encoding parameter is in source_data


# ---- templates --------------------------------------------------------------------------------
def template(attributes, function: str) -> dict[int, object]:
    """An `aA` template as the slot protocol's {CKA_*: value}."""
    found: dict[int, object] = {}
    for attribute in attributes:
        if not attribute.available:
            raise CKRError(CKR_ATTRIBUTE_VALUE_INVALID, function,
                           f"attribute {attribute.type:#x} sent without a value")
        found[attribute.type] = _value(attribute, function)
    return found


def _value(attribute: Attribute, function: str) -> object:
    kind, value = value_type(attribute.type), attribute.value
    if kind is ValueType.BYTE:
        return bool(value)
    if kind is ValueType.ULONG:
        return int(value)
    if kind is ValueType.ATTRIBUTE_ARRAY:
        return template(value or (), function)
    if kind is ValueType.MECHANISM_TYPE_ARRAY:
        return [int(m) for m in value or ()]
    raw = bytes(value or b"")
    if attribute.type in TEXT_ATTRIBUTES:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CKRError(CKR_ATTRIBUTE_VALUE_INVALID, function,
                           f"attribute {attribute.type:#x} is not UTF-8 text") from None
    if attribute.type in DATE_ATTRIBUTES and raw:
        try:
            return datetime.date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
        except ValueError:
            raise CKRError(CKR_ATTRIBUTE_VALUE_INVALID, function,
                           f"attribute {attribute.type:#x} is not a CK_DATE: {raw!r}") from None
    return raw


def attribute(attribute_type: int, value: object) -> Attribute:
    """A slot's value of one attribute as it travels (booleans 1 byte, CK_ULONGs u64 ...)."""
    kind = value_type(attribute_type)
    if kind is ValueType.ATTRIBUTE_ARRAY and isinstance(value, dict):
        return Attribute(attribute_type, tuple(attribute(t, v) for t, v in value.items()))
    if kind is ValueType.MECHANISM_TYPE_ARRAY and isinstance(value, (list, tuple)):
        return Attribute(attribute_type, tuple(int(m) for m in value))
    if kind in (ValueType.BYTE, ValueType.ULONG):
        if isinstance(value, (bytes, bytearray)):  # a module's raw value of a numeric attribute
            value = int.from_bytes(value, "little")
        return Attribute(attribute_type, int(value or 0))
    if isinstance(value, (datetime.date, datetime.datetime)):
        return Attribute(attribute_type, value.strftime("%Y%m%d").encode("ascii"))
    if isinstance(value, str):
        return Attribute(attribute_type, value.encode("utf-8"))
    if isinstance(value, bool):  # a CK_BBOOL 0.24.1 does not map (CKA_DESTROYABLE): one byte
        return Attribute(attribute_type, bytes([value]))
    if isinstance(value, int):  # a CK_ULONG 0.24.1 does not map (IntEnum too): native, 8 bytes
        return Attribute(attribute_type, int(value).to_bytes(8, "little"))
    return Attribute(attribute_type, bytes(value or b""))


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
