"""CK_ATTRIBUTE on the wire: templates with values (`aA`) and without (`fA`), as 0.24.1.

One attribute: u32 type, a validity byte (0: ulValueLen was CK_UNAVAILABLE_INFORMATION, nothing
follows), then u32 length -- the C `ulValueLen`, i.e. the *native* size -- and the value in the
encoding its type maps to (`map_attribute_to_value_type` in `rpc-message.c`): one byte for
CK_BBOOL attributes, a u64 for CK_ULONG ones, a nested attribute array for the wrap/unwrap
templates, u32 count + u64s for CKA_ALLOWED_MECHANISMS, a byte array for dates and for everything
else. 0.24.1 has no value-type byte on the wire: both ends derive it from the attribute type.
Because the length is the native size, it is kept as decoded (24 per nested attribute, 8 per
mechanism): re-encoding gives the same bytes, and a value never exceeds its length.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .buffer import CodecError, Reader, Writer
from .structs import AttributeSize

UNAVAILABLE = -1  # CK_UNAVAILABLE_INFORMATION as ulValueLen: sent as validity byte 0
SIZEOF_CK_ATTRIBUTE = 24  # LP64 (type, pointer, length): the length 0.24.1 sends per nested item
SIZEOF_CK_ULONG = 8
MAX_NESTING = 4  # templates inside templates: 0.24.1 refuses even one level at the top (below)


class ValueType(enum.IntEnum):
    """p11_rpc_value_type (rpc-message.h)."""

    BYTE = 0
    ULONG = 1
    ATTRIBUTE_ARRAY = 2
    MECHANISM_TYPE_ARRAY = 3
    DATE = 4
    BYTE_ARRAY = 5


CKF_ARRAY_ATTRIBUTE = 0x40000000
CKA_WRAP_TEMPLATE = CKF_ARRAY_ATTRIBUTE | 0x211
CKA_UNWRAP_TEMPLATE = CKF_ARRAY_ATTRIBUTE | 0x212
CKA_DERIVE_TEMPLATE = CKF_ARRAY_ATTRIBUTE | 0x213  # not mapped by 0.24.1: travels as bytes
CKA_ALLOWED_MECHANISMS = CKF_ARRAY_ATTRIBUTE | 0x600

# CKA_TOKEN, PRIVATE, TRUSTED, SENSITIVE, ENCRYPT .. DERIVE, EXTRACTABLE, LOCAL, NEVER_EXTRACTABLE,
# ALWAYS_SENSITIVE, MODIFIABLE, COPYABLE, SECONDARY_AUTH, ALWAYS_AUTHENTICATE, WRAP_WITH_TRUSTED,
# RESET_ON_INIT, HAS_RESET, COLOR
_BYTE_TYPES = (
    0x001,
    0x002,
    0x086,
    0x103,
    0x104,
    0x105,
    0x106,
    0x107,
    0x108,
    0x109,
    0x10A,
    0x10B,
    0x10C,
    0x162,
    0x163,
    0x164,
    0x165,
    0x170,
    0x171,
    0x200,
    0x202,
    0x210,
    0x301,
    0x302,
    0x405,
)
# CKA_CLASS, CERTIFICATE_TYPE, CERTIFICATE_CATEGORY, JAVA_MIDP_SECURITY_DOMAIN, KEY_TYPE,
# MODULUS_BITS, PRIME_BITS, SUB_PRIME_BITS, VALUE_BITS, VALUE_LEN, KEY_GEN_MECHANISM,
# AUTH_PIN_FLAGS, HW_FEATURE_TYPE, PIXEL_X, PIXEL_Y, RESOLUTION, CHAR_ROWS, CHAR_COLUMNS,
# BITS_PER_PIXEL, MECHANISM_TYPE
_ULONG_TYPES = (
    0x000,
    0x080,
    0x087,
    0x088,
    0x100,
    0x121,
    0x133,
    0x134,
    0x160,
    0x161,
    0x166,
    0x201,
    0x300,
    0x400,
    0x401,
    0x402,
    0x403,
    0x404,
    0x406,
    0x500,
)
_DATE_TYPES = (0x110, 0x111)  # CKA_START_DATE, CKA_END_DATE

VALUE_TYPES: dict[int, ValueType] = {
    **{t: ValueType.BYTE for t in _BYTE_TYPES},
    **{t: ValueType.ULONG for t in _ULONG_TYPES},
    **{t: ValueType.DATE for t in _DATE_TYPES},
    CKA_WRAP_TEMPLATE: ValueType.ATTRIBUTE_ARRAY,
    CKA_UNWRAP_TEMPLATE: ValueType.ATTRIBUTE_ARRAY,
    CKA_ALLOWED_MECHANISMS: ValueType.MECHANISM_TYPE_ARRAY,
}


def value_type(attribute_type: int) -> ValueType:
    """How 0.24.1 encodes this attribute's value; unknown types are byte arrays."""
    return VALUE_TYPES.get(attribute_type, ValueType.BYTE_ARRAY)


@dataclass(frozen=True)
class Attribute:
    """One CK_ATTRIBUTE with its value as Python data.

    value: int (BYTE, ULONG), tuple[Attribute] (templates), tuple[int] (allowed mechanisms),
    bytes or None (dates, byte arrays; None = NULL pointer, as in a size reply).
    length: the C ulValueLen; None computes the native size from the value; UNAVAILABLE marks
    an attribute the token could not return (validity byte 0, value None).
    """

    type: int
    value: object = None
    length: int | None = None

    def __post_init__(self):
        kind = value_type(self.type)
        value = self.value
        if isinstance(value, bool):
            value = int(value)
        if kind in (ValueType.ATTRIBUTE_ARRAY, ValueType.MECHANISM_TYPE_ARRAY) and isinstance(value, list):
            value = tuple(value)
        object.__setattr__(self, "value", value)
        if self.length is None:
            object.__setattr__(self, "length", native_length(kind, value))

    @property
    def available(self) -> bool:
        return self.length != UNAVAILABLE


def native_length(kind: ValueType, value) -> int:
    if kind is ValueType.BYTE:
        return 1
    if kind is ValueType.ULONG:
        return SIZEOF_CK_ULONG
    if kind is ValueType.ATTRIBUTE_ARRAY:
        return SIZEOF_CK_ATTRIBUTE * len(value or ())
    if kind is ValueType.MECHANISM_TYPE_ARRAY:
        return SIZEOF_CK_ULONG * len(value or ())
    return len(value or b"")


def write_attribute(writer: Writer, attribute: Attribute, depth: int = 0) -> None:
    if not isinstance(attribute, Attribute):
        raise CodecError(f"not an Attribute: {attribute!r}")
    writer.u32(attribute.type)
    if not attribute.available:
        writer.byte(0)
        return
    writer.byte(1)
    writer.u32(attribute.length)
    kind, value = value_type(attribute.type), attribute.value
    if kind is ValueType.BYTE:
        writer.byte(value or 0)
    elif kind is ValueType.ULONG:
        writer.u64(value or 0)
    elif kind is ValueType.ATTRIBUTE_ARRAY:
        if depth >= MAX_NESTING:
            raise CodecError("attribute templates nested too deep")
        write_attribute_array(writer, value or (), depth + 1)
    elif kind is ValueType.MECHANISM_TYPE_ARRAY:
        writer.u32(len(value or ()))
        for mechanism_type in value or ():
            writer.u64(mechanism_type)
    else:
        if kind is ValueType.DATE and value is not None and len(value) not in (0, 8):
            raise CodecError(f"a CK_DATE is 8 bytes, not {len(value)}")
        writer.byte_array(value)


def read_attribute(reader: Reader, depth: int = 0) -> Attribute:
    attribute_type = reader.u32()
    validity = reader.byte()
    if validity == 0:
        return Attribute(attribute_type, None, UNAVAILABLE)
    if validity != 1:
        raise CodecError(f"attribute {attribute_type:#x}: validity byte {validity}")
    length = reader.u32()
    kind = value_type(attribute_type)
    if kind is ValueType.BYTE:
        value = reader.byte()
    elif kind is ValueType.ULONG:
        value = reader.u64()
    elif kind is ValueType.ATTRIBUTE_ARRAY:
        if depth >= MAX_NESTING:
            raise CodecError("attribute templates nested too deep")
        value = read_attribute_array(reader, depth + 1)
    elif kind is ValueType.MECHANISM_TYPE_ARRAY:
        value = tuple(reader.u64() for _ in range(reader.u32()))
    else:
        value = reader.byte_array()
        if kind is ValueType.DATE and value is not None and len(value) not in (0, 8):
            raise CodecError(f"attribute {attribute_type:#x}: a CK_DATE of {len(value)} bytes")
    decoded = native_length(kind, value)
    if decoded > length:  # rpc-message.c rejects a value longer than its announced length
        raise CodecError(f"attribute {attribute_type:#x}: value of {decoded} bytes, length {length}")
    return Attribute(attribute_type, value, length)


def write_attribute_array(writer: Writer, attributes, depth: int = 0) -> None:
    """`aA`: u32 count, then each attribute."""
    attributes = tuple(attributes)
    writer.u32(len(attributes))
    for attribute in attributes:
        write_attribute(writer, attribute, depth)


def read_attribute_array(reader: Reader, depth: int = 0) -> tuple[Attribute, ...]:
    return tuple(read_attribute(reader, depth) for _ in range(reader.u32()))


def write_attribute_buffer(writer: Writer, template) -> None:
    """`fA`: u32 count, then (u32 type, u32 buffer length) per attribute."""
    template = tuple(template)
    writer.u32(len(template))
    for entry in template:
        if not isinstance(entry, AttributeSize):
            raise CodecError(f"an fA template holds AttributeSize entries, not {entry!r}")
        writer.u32(entry.type)
        writer.u32(entry.length)


def read_attribute_buffer(reader: Reader) -> tuple[AttributeSize, ...]:
    return tuple(AttributeSize(reader.u32(), reader.u32()) for _ in range(reader.u32()))
