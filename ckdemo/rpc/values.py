"""Attribute values between the wire (p11-kit RPC 0.24.1) and the slot protocol's plain values.

Both directions use it: `ckdemo serve` decoding an application's template and encoding what it
reads back, and the remote-member client doing the reverse. 0.24.1 maps some types to one byte
(CK_BBOOL), a u64 (CK_ULONG), a nested template or a mechanism list, and sends every other type
as the C bytes of its value; so a CK_BBOOL or CK_ULONG it does not map (CKA_DESTROYABLE,
CKA_OTP_FORMAT ...) travels as 1 or 8 native bytes. What a value means, and its size, come from
the one table (ckdemo.attribute_table), so a value of the wrong size is refused here with
CKR_ATTRIBUTE_VALUE_INVALID, never handed on.
"""

from __future__ import annotations

import datetime
import struct

from .. import attribute_table as table
from ..codes import CKR_ATTRIBUTE_VALUE_INVALID, CKRError
from .attributes import UNAVAILABLE, Attribute, ValueType, native_length, value_type


def from_wire(wire: Attribute, function: str, depth: int = 0) -> object:
    """The plain value of one attribute that arrived with a value; checked against the table."""
    code, carried = wire.type, value_type(wire.type)
    if not wire.available:
        raise CKRError(CKR_ATTRIBUTE_VALUE_INVALID, function, f"{table.name(code)} sent without a value")
    expected = native_length(carried, wire.value)
    if wire.length != expected:  # p11-kit's server would hand the module a short buffer
        raise CKRError(
            CKR_ATTRIBUTE_VALUE_INVALID,
            function,
            f"{table.name(code)} announced {wire.length} byte(s) for {expected}",
        )
    kind = table.kind(code)
    if carried is ValueType.BYTE:
        value: object = bool(wire.value)
    elif carried is ValueType.ULONG:
        value = int(wire.value)
    elif carried is ValueType.ATTRIBUTE_ARRAY:
        if depth >= table.MAX_NESTING:
            raise CKRError(CKR_ATTRIBUTE_VALUE_INVALID, function, "templates nested too deep")
        value = {item.type: from_wire(item, function, depth + 1) for item in wire.value or ()}
    elif carried is ValueType.MECHANISM_TYPE_ARRAY:
        value = [int(m) for m in wire.value or ()]
    else:
        value = table.from_native(code, bytes(wire.value or b""), function)
    if kind in table.NUMERIC_KINDS and isinstance(value, bool):
        value = int(value)  # a CK_ULONG p11-kit happened to carry as one byte
    elif kind == "bool" and not isinstance(value, bool):
        value = bool(value)
    table.check_value(code, value, function, depth)
    return value


def template_from_wire(attributes, function: str) -> dict[int, object]:
    return {attribute.type: from_wire(attribute, function) for attribute in attributes}


def to_wire(code: int, value: object) -> Attribute:
    """A slot's value of one attribute as it travels (booleans 1 byte, CK_ULONGs u64 ...)."""
    carried = value_type(code)
    if carried is ValueType.ATTRIBUTE_ARRAY and isinstance(value, dict):
        return Attribute(code, tuple(to_wire(t, v) for t, v in value.items()))
    if carried is ValueType.MECHANISM_TYPE_ARRAY and isinstance(value, (list, tuple)):
        return Attribute(code, tuple(int(m) for m in value))
    if carried in (ValueType.BYTE, ValueType.ULONG):
        if isinstance(value, (bytes, bytearray)):  # a module's raw value of a numeric attribute
            value = int.from_bytes(value, "little")
        return Attribute(code, int(value or 0))
    if isinstance(value, (datetime.date, datetime.datetime)):
        return Attribute(code, f"{value.year:04d}{value.month:02d}{value.day:02d}".encode("ascii"))
    if isinstance(value, str):
        return Attribute(code, value.encode("utf-8"))
    if isinstance(value, bool):  # a CK_BBOOL 0.24.1 does not map (CKA_DESTROYABLE): one byte
        return Attribute(code, bytes([value]))
    if isinstance(value, int):  # a CK_ULONG 0.24.1 does not map (IntEnum too): native, 8 bytes
        return Attribute(code, struct.pack("=Q", int(value)))
    if isinstance(value, dict):
        raise CKRError(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "C_GetAttributeValue",
            f"{table.name(code)} cannot hold a template on the wire",
        )
    return Attribute(code, bytes(value or b""))


def template_to_wire(values: dict[int, object] | None) -> tuple[Attribute, ...]:
    return tuple(to_wire(t, v) for t, v in (values or {}).items())


def read_value(wire: Attribute, function: str = "C_GetAttributeValue") -> object:
    """A value a member read back over the wire; one that does not fit its type in the table
    is that member's CKR_ATTRIBUTE_VALUE_INVALID. An empty date reads None, as python-pkcs11
    reads it on a local member."""
    value = from_wire(wire, function)
    return None if value == b"" and table.kind(wire.type) == "date" else value


def unavailable(wire: Attribute) -> bool:
    return wire.length == UNAVAILABLE
