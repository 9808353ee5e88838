"""The PKCS#11 structures the protocol carries, as plain values, and their wire layouts.

Layouts follow `proto_write_*_info` in p11-kit's `rpc-server.c` (0.24.1). Space-padded strings
(`s`) travel as a byte array whose length must be the field's fixed size; they are decoded as
the raw bytes (padding kept) so that re-encoding gives the same bytes, and may be given as a
shorter str/bytes when encoding (padded with spaces, as PKCS#11 requires).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from .buffer import CodecError, Reader, Writer


@dataclass(frozen=True)
class Version:
    major: int
    minor: int

    def write(self, writer: Writer) -> None:
        writer.byte(self.major)
        writer.byte(self.minor)

    @classmethod
    def read(cls, reader: Reader) -> "Version":
        return cls(reader.byte(), reader.byte())


@dataclass(frozen=True)
class BufferSize:
    """An `ay`/`au` sent without data (presence byte 0): only a length.

    From a client: "tell me the size" was not sent this way by 0.24.1, but the wire allows it.
    From a server: the size the caller needs (a size query, or CKR_BUFFER_TOO_SMALL).
    """

    length: int


@dataclass(frozen=True)
class AttributeSize:
    """One entry of an `fA` template: the attribute wanted and the buffer the caller offers."""

    type: int
    length: int


def space_padded(value: bytes | str, size: int) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > size:
        raise CodecError(f"string of {len(raw)} bytes does not fit a {size}-byte field: {raw!r}")
    return raw.ljust(size, b" ")


class _Layout:
    """Mixin: a structure read and written field by field, in the order of LAYOUT."""

    LAYOUT: ClassVar[tuple[tuple[str, str, int], ...]] = ()  # (field, letter, fixed size of `s`)

    def write(self, writer: Writer) -> None:
        for name, letter, size in self.LAYOUT:
            value = getattr(self, name)
            if letter == "u":
                writer.u64(value)
            elif letter == "v":
                if not isinstance(value, Version):
                    raise CodecError(f"{type(self).__name__}.{name} is not a Version: {value!r}")
                value.write(writer)
            else:
                writer.byte_array(space_padded(value, size))

    @classmethod
    def read(cls, reader: Reader):
        values = {}
        for name, letter, size in cls.LAYOUT:
            if letter == "u":
                values[name] = reader.u64()
            elif letter == "v":
                values[name] = Version.read(reader)
            else:
                raw = reader.byte_array()
                if raw is None or len(raw) != size:
                    raise CodecError(
                        f"{cls.__name__}.{name}: a {size}-byte string expected, "
                        f"got {'NULL' if raw is None else len(raw)}"
                    )
                values[name] = raw
        return cls(**values)

    @classmethod
    def signature(cls) -> str:
        return "".join(letter for _, letter, _ in cls.LAYOUT)


def _layout(*spec: tuple[str, str, int]):
    def attach(cls):
        assert [f.name for f in fields(cls)] == [name for name, _, _ in spec], cls
        cls.LAYOUT = spec
        return cls

    return attach


@_layout(
    ("cryptoki_version", "v", 0),
    ("manufacturer_id", "s", 32),
    ("flags", "u", 0),
    ("library_description", "s", 32),
    ("library_version", "v", 0),
)
@dataclass(frozen=True)
class Info(_Layout):
    cryptoki_version: Version
    manufacturer_id: bytes | str
    flags: int
    library_description: bytes | str
    library_version: Version


@_layout(
    ("slot_description", "s", 64),
    ("manufacturer_id", "s", 32),
    ("flags", "u", 0),
    ("hardware_version", "v", 0),
    ("firmware_version", "v", 0),
)
@dataclass(frozen=True)
class SlotInfo(_Layout):
    slot_description: bytes | str
    manufacturer_id: bytes | str
    flags: int
    hardware_version: Version
    firmware_version: Version


@_layout(
    ("label", "s", 32),
    ("manufacturer_id", "s", 32),
    ("model", "s", 16),
    ("serial_number", "s", 16),
    ("flags", "u", 0),
    ("max_session_count", "u", 0),
    ("session_count", "u", 0),
    ("max_rw_session_count", "u", 0),
    ("rw_session_count", "u", 0),
    ("max_pin_len", "u", 0),
    ("min_pin_len", "u", 0),
    ("total_public_memory", "u", 0),
    ("free_public_memory", "u", 0),
    ("total_private_memory", "u", 0),
    ("free_private_memory", "u", 0),
    ("hardware_version", "v", 0),
    ("firmware_version", "v", 0),
    ("utc_time", "s", 16),
)
@dataclass(frozen=True)
class TokenInfo(_Layout):
    label: bytes | str
    manufacturer_id: bytes | str
    model: bytes | str
    serial_number: bytes | str
    flags: int
    max_session_count: int
    session_count: int
    max_rw_session_count: int
    rw_session_count: int
    max_pin_len: int
    min_pin_len: int
    total_public_memory: int
    free_public_memory: int
    total_private_memory: int
    free_private_memory: int
    hardware_version: Version
    firmware_version: Version
    utc_time: bytes | str


@_layout(("min_key_size", "u", 0), ("max_key_size", "u", 0), ("flags", "u", 0))
@dataclass(frozen=True)
class MechanismInfo(_Layout):
    min_key_size: int
    max_key_size: int
    flags: int


@_layout(("slot_id", "u", 0), ("state", "u", 0), ("flags", "u", 0), ("device_error", "u", 0))
@dataclass(frozen=True)
class SessionInfo(_Layout):
    slot_id: int
    state: int
    flags: int
    device_error: int
