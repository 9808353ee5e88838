"""Buffer primitives of the p11-kit RPC protocol, and the one error every decoder raises.

Everything is big-endian, as `p11_rpc_buffer_*` in p11-kit's `rpc-message.c` (tag 0.24.1):
a byte, a u32, a u64 (every CK_ULONG), and a byte array (u32 length + bytes, 0xffffffff = NULL).
"""

from __future__ import annotations

import struct

NULL_LENGTH = 0xFFFFFFFF  # rpc-message.c: a byte array whose pointer was NULL
MAX_ARRAY_LENGTH = 0x7FFFFFFF  # rpc-message.c refuses lengths >= this, both ways

_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class CodecError(ValueError):
    """A message that does not follow the protocol: truncated, garbage, or not encodable."""

    def __init__(self, message: str, call_id: int | None = None):
        super().__init__(message)
        self.call_id = call_id


class UnknownCallError(CodecError):
    """A well-framed message whose call id is not one of version 0's (e.g. a 0.25 client's)."""


class Reader:
    """Reads primitives from one message body; running past the end raises CodecError."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int = 0):
        self.data = bytes(data)
        self.offset = offset

    def _truncated(self, count: int) -> CodecError:
        return CodecError(
            f"truncated message: {count} bytes wanted at offset {self.offset}, "
            f"{len(self.data) - self.offset} left"
        )

    def _take(self, count: int) -> bytes:
        end = self.offset + count
        if count < 0 or end > len(self.data):
            raise self._truncated(count)
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    # the primitives read in place (unpack_from): every call of every message goes through them
    def byte(self) -> int:
        offset = self.offset
        if offset >= len(self.data):
            raise self._truncated(1)
        self.offset = offset + 1
        return self.data[offset]

    def u32(self) -> int:
        offset = self.offset
        if offset + 4 > len(self.data):
            raise self._truncated(4)
        self.offset = offset + 4
        return _U32.unpack_from(self.data, offset)[0]

    def u64(self) -> int:
        offset = self.offset
        if offset + 8 > len(self.data):
            raise self._truncated(8)
        self.offset = offset + 8
        return _U64.unpack_from(self.data, offset)[0]

    def byte_array(self) -> bytes | None:
        length = self.u32()
        if length == NULL_LENGTH:
            return None
        if length >= MAX_ARRAY_LENGTH:
            raise CodecError(f"byte array length {length:#x} is too large")
        return self._take(length)

    def remaining(self) -> int:
        return len(self.data) - self.offset

    def expect_end(self) -> None:
        if self.offset != len(self.data):
            raise CodecError(f"{len(self.data) - self.offset} unexpected bytes after the last field")


class Writer:
    """Appends primitives to a message body; values out of range raise CodecError."""

    __slots__ = ("data",)

    def __init__(self, prefix: bytes = b""):
        self.data = bytearray(prefix)

    # struct refuses what does not fit (a bool is an int, as isinstance would have allowed)
    def byte(self, value: int) -> None:
        try:
            self.data += _U8.pack(value)
        except struct.error:
            raise CodecError(f"not a byte: {value!r}") from None

    def u32(self, value: int) -> None:
        try:
            self.data += _U32.pack(value)
        except struct.error:
            raise CodecError(f"not a u32: {value!r}") from None

    def u64(self, value: int) -> None:
        try:
            self.data += _U64.pack(value)
        except struct.error:
            raise CodecError(f"not a u64 (CK_ULONG): {value!r}") from None

    def byte_array(self, value: bytes | None) -> None:
        if value is None:
            self.u32(NULL_LENGTH)
            return
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise CodecError(f"not bytes: {type(value).__name__}")
        if len(value) >= MAX_ARRAY_LENGTH:
            raise CodecError(f"byte array of {len(value)} bytes is too large")
        self.u32(len(value))
        self.data += value

    def getvalue(self) -> bytes:
        return bytes(self.data)
