"""Message bodies of the p11-kit RPC protocol (version 0), both directions, from the call table.

A body is: u32 call id, the call's signature as a byte array (no NUL), then its fields in
signature order (`p11_rpc_message_prep/parse` in rpc-message.c, 0.24.1). A failed call is
answered with call id 0 and one u64, the CK_RV.

    server: decode_request(body) -> Message;  encode_response(call, *args) / encode_error(ckr)
    client: encode_request(call, *args);      decode_response(body, call) -> Message

Field values: `y` int, `u` int, `v` Version, `s`/`z` bytes (None = NULL), `M` Mechanism,
`ay` bytes or BufferSize, `au` sequence of int or BufferSize, `aA` sequence of Attribute,
`fy`/`fu` int (buffer size offered, 0 = size query), `fA` sequence of AttributeSize. The reply of
C_GetInfo/GetSlotInfo/GetTokenInfo/GetMechanismInfo/GetSessionInfo is its one structure.
Every malformed or unencodable message raises CodecError, nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from .attributes import (
    read_attribute_array,
    read_attribute_buffer,
    write_attribute_array,
    write_attribute_buffer,
)
from .buffer import MAX_ARRAY_LENGTH, NULL_LENGTH, CodecError, Reader, UnknownCallError, Writer
from .calls import BY_ID, BY_NAME, CALL_ERROR, Call
from .mechanisms import CKM_RSA_PKCS_OAEP, CKM_RSA_PKCS_PSS, Mechanism, read_mechanism, write_mechanism
from .structs import BufferSize, Version

__all__ = [
    "CodecError",
    "UnknownCallError",
    "Message",
    "decode_request",
    "encode_request",
    "decode_response",
    "encode_response",
    "encode_error",
    "call_of",
]


class Message(NamedTuple):  # a tuple: built on every call, cheaper than a frozen dataclass
    call_id: int
    args: tuple

    @property
    def call(self) -> Call:
        return BY_ID[self.call_id]

    @property
    def name(self) -> str:
        return self.call.name

    @property
    def is_error(self) -> bool:
        return self.call_id == CALL_ERROR

    @property
    def ckr(self) -> int:
        """The CK_RV of an error reply."""
        if not self.is_error:
            raise AttributeError(f"{self.name} reply is not an error reply")
        return self.args[0]


def call_of(call: int | str | Call) -> Call:
    if type(call) is int:  # the server's replies: by far the most frequent look-up
        found = BY_ID.get(call)
        if found is not None:
            return found
    if isinstance(call, Call):
        return call
    found = BY_NAME.get(call) if isinstance(call, str) else BY_ID.get(call)
    if found is None:
        raise UnknownCallError(f"no version-0 call {call!r}", call if isinstance(call, int) else None)
    return found


# ---- one field per signature token ------------------------------------------------------------
def _write_byte_or_size(writer: Writer, value) -> None:
    if isinstance(value, BufferSize):
        writer.byte(0)
        writer.u32(value.length)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        writer.byte(1)
        writer.byte_array(value)
    else:
        raise CodecError(f"`ay` takes bytes or BufferSize, not {type(value).__name__}")


def _read_byte_or_size(reader: Reader):
    presence = reader.byte()
    if presence == 0:
        return BufferSize(reader.u32())
    data = reader.byte_array() if presence == 1 else None
    if data is None:
        raise CodecError(f"`ay` with presence byte {presence} and no data")
    return data


def _write_ulongs_or_size(writer: Writer, value) -> None:
    if isinstance(value, BufferSize):
        writer.byte(0)
        writer.u32(value.length)
        return
    try:
        values = tuple(value)
    except TypeError:
        raise CodecError(f"`au` takes a sequence of int or BufferSize, not {value!r}") from None
    writer.byte(1)
    writer.u32(len(values))
    for item in values:
        writer.u64(item)


def _read_ulongs_or_size(reader: Reader):
    presence = reader.byte()
    count = reader.u32()
    if presence == 0:
        return BufferSize(count)
    if presence != 1:
        raise CodecError(f"`au` with presence byte {presence}")
    return tuple(reader.u64() for _ in range(count))


def _write_version(writer: Writer, value) -> None:
    if not isinstance(value, Version):
        raise CodecError(f"`v` takes a Version, not {value!r}")
    value.write(writer)


_WRITERS = {
    "y": Writer.byte,
    "u": Writer.u64,
    "v": _write_version,
    "s": Writer.byte_array,
    "z": Writer.byte_array,
    "M": write_mechanism,
    "ay": _write_byte_or_size,
    "au": _write_ulongs_or_size,
    "aA": write_attribute_array,
    "fy": Writer.u32,
    "fu": Writer.u32,
    "fA": write_attribute_buffer,
}
_READERS = {
    "y": Reader.byte,
    "u": Reader.u64,
    "v": Version.read,
    "s": Reader.byte_array,
    "z": Reader.byte_array,
    "M": read_mechanism,
    "ay": _read_byte_or_size,
    "au": _read_ulongs_or_size,
    "aA": read_attribute_array,
    "fy": Reader.u32,
    "fu": Reader.u32,
    "fA": read_attribute_buffer,
}


# ---- whole bodies ------------------------------------------------------------------------------
def _prefix(call: Call, signature: str) -> bytes:
    """What every body of this call and direction starts with: call id and signature."""
    writer = Writer()
    writer.u32(call.id)
    writer.byte_array(signature.encode("ascii"))
    return writer.getvalue()


# fields of a fixed size: the leading run of them is read with one struct (most requests are
# mainly or only these: a session handle, a buffer size ...)
_FIXED = {"y": "B", "u": "Q", "fy": "I", "fu": "I"}


@dataclass(frozen=True)
class _Layout:
    """One call in one direction, worked out once: its fixed prefix and field codecs."""

    signature: str
    prefix: bytes
    fields: tuple[str, ...]
    readers: tuple
    writers: tuple
    head: struct.Struct | None  # the leading fixed-size fields, read at once
    rest: tuple  # readers of the fields after them
    fast: tuple | None = None  # a request of simple shape: the steps of _read_fast


def _head(fields: tuple[str, ...]) -> tuple[struct.Struct | None, int]:
    count = 0
    while count < len(fields) and fields[count] in _FIXED:
        count += 1
    if not count:
        return None, 0
    return struct.Struct(">" + "".join(_FIXED[t] for t in fields[:count])), count


def _layouts(request: bool) -> dict[int, _Layout]:
    found = {}
    for call in BY_ID.values():
        signature = call.request if request else call.response
        if signature is None:
            continue
        fields = call.request_fields if request else call.response_fields
        readers = tuple(_READERS[t] for t in fields)
        head, count = _head(fields)
        found[call.id] = _Layout(
            signature,
            _prefix(call, signature),
            fields,
            readers,
            tuple(_WRITERS[t] for t in fields),
            head,
            readers[count:],
            _fast_steps(fields) if request and call.id != CALL_ERROR else None,
        )
    return found


# ---- requests of simple shape, read without a Reader -------------------------------------------
# Most requests a busy application sends (C_SignInit, C_Sign, C_Encrypt, C_GenerateRandom ...)
# hold only fixed-size fields, `ay` and `M`. They are read in one pass over the body, with no
# method call per field. Anything irregular (a NULL array, a length out of range, a PSS or OAEP
# parameter, a body cut short or too long) leaves the fast path: the general decoder reads the
# body again and says what is wrong.
_FIXED_RUN, _BYTES, _MECHANISM = 0, 1, 2
_PARAMETER_STRUCTS = (CKM_RSA_PKCS_PSS, CKM_RSA_PKCS_OAEP)


def _fast_steps(fields: tuple[str, ...]) -> tuple | None:
    steps, run = [], ""
    for token in fields:
        if token in _FIXED:
            run += _FIXED[token]
            continue
        if run:
            steps.append((_FIXED_RUN, struct.Struct(">" + run)))
            run = ""
        if token == "ay":
            steps.append((_BYTES, None))
        elif token == "M":
            steps.append((_MECHANISM, None))
        else:
            return None
    if run:
        steps.append((_FIXED_RUN, struct.Struct(">" + run)))
    return tuple(steps)


def _read_fast(body: bytes, offset: int, steps: tuple) -> tuple | None:
    """The fields of a request body from `offset`, or None for the general decoder (see above)."""
    end = len(body)
    args: list = []
    for kind, fixed in steps:
        if kind == _FIXED_RUN:
            if offset + fixed.size > end:
                return None
            args.extend(fixed.unpack_from(body, offset))
            offset += fixed.size
        elif kind == _BYTES:  # presence byte, length, the bytes when present
            if offset + 5 > end:
                return None
            presence = body[offset]
            (length,) = _U32.unpack_from(body, offset + 1)
            offset += 5
            if presence == 0:
                args.append(BufferSize(length))
                continue
            if presence != 1 or length >= MAX_ARRAY_LENGTH or offset + length > end:
                return None
            args.append(body[offset : offset + length])
            offset += length
        else:  # a mechanism: type, then its parameter as a byte array (NULL: none)
            if offset + 8 > end:
                return None
            mechanism_type, length = _U32_PAIR.unpack_from(body, offset)
            offset += 8
            if mechanism_type in _PARAMETER_STRUCTS:
                return None
            if length == NULL_LENGTH:
                args.append(Mechanism(mechanism_type, None))
                continue
            if length >= MAX_ARRAY_LENGTH or offset + length > end:
                return None
            args.append(Mechanism(mechanism_type, body[offset : offset + length]))
            offset += length
    return tuple(args) if offset == end else None


_REQUESTS, _RESPONSES = _layouts(request=True), _layouts(request=False)
_U32 = struct.Struct(">I")
_U32_PAIR = struct.Struct(">II")
_PRESENT, _ABSENT = b"\x01", b"\x00"  # an `ay` with its data, or only its size


def _encode(call: Call, layout: _Layout, struct: type | None, args) -> bytes:
    writer = Writer(layout.prefix)
    if struct is not None:
        if len(args) != 1 or not isinstance(args[0], struct):
            raise CodecError(f"{call.name} reply takes one {struct.__name__}", call.id)
        args[0].write(writer)
        return writer.getvalue()
    if len(args) != len(layout.writers):
        raise CodecError(
            f"{call.name} ({layout.signature!r}) takes {len(layout.writers)} values, got {len(args)}", call.id
        )
    try:
        for write, value in zip(layout.writers, args):
            write(writer, value)
    except CodecError as error:
        raise CodecError(f"{call.name}: {error}", call.id) from error
    except (TypeError, AttributeError) as error:  # e.g. a str where bytes are expected
        raise CodecError(f"{call.name}: {error}", call.id) from error
    return writer.getvalue()


def _decode(body: bytes, is_request: bool, expected: Call | None = None) -> Message:
    reader = Reader(body)
    call_id = reader.u32()
    call = BY_ID.get(call_id)
    if call is None:
        raise UnknownCallError(f"unknown call id {call_id}", call_id)
    if is_request and call_id == CALL_ERROR:
        raise CodecError("a request cannot carry the error call id 0", call_id)
    if not is_request and expected is not None and call_id not in (expected.id, CALL_ERROR):
        raise CodecError(f"reply to {call.name} where {expected.name} was asked", call_id)
    layout = (_REQUESTS if is_request else _RESPONSES)[call_id]
    if reader.data.startswith(layout.prefix):  # the signature as expected: skip past it
        reader.offset = len(layout.prefix)
    else:
        sent = reader.byte_array()
        raise CodecError(f"{call.name}: signature {sent!r}, expected {layout.signature!r}", call_id)
    try:
        if not is_request and call.response_struct is not None:
            args = (call.response_struct.read(reader),)
        elif layout.head is not None:
            head = layout.head
            if reader.offset + head.size > len(reader.data):
                raise reader._truncated(head.size)
            args = head.unpack_from(reader.data, reader.offset)
            reader.offset += head.size
            if layout.rest:
                args += tuple([read(reader) for read in layout.rest])
        else:
            args = tuple([read(reader) for read in layout.readers])
        reader.expect_end()
    except CodecError as error:
        raise CodecError(f"{call.name}: {error}", call_id) from error
    if call_id == CALL_ERROR and args[0] == 0:
        raise CodecError("error reply with CKR_OK", call_id)  # rpc-client.c: "bad error code"
    return Message(call_id, args)


def encode_request(call: int | str | Call, *args) -> bytes:
    call = call_of(call)
    if call.request is None:
        raise CodecError("the error call id has no request", call.id)
    return _encode(call, _REQUESTS[call.id], None, args)


def decode_request(body: bytes) -> Message:
    if type(body) is bytes and len(body) >= 4:
        (call_id,) = _U32.unpack_from(body)
        layout = _REQUESTS.get(call_id)
        if layout is not None and layout.fast is not None and body.startswith(layout.prefix):
            args = _read_fast(body, len(layout.prefix), layout.fast)
            if args is not None:
                return Message(call_id, args)
    return _decode(body, is_request=True)


def encode_response(call: int | str | Call, *args) -> bytes:
    call = call_of(call)
    layout = _RESPONSES[call.id]
    # the replies of most calls a busy client makes, built without a Writer: nothing, or bytes
    if not args and not layout.writers:
        return layout.prefix
    if layout.fields == ("ay",) and len(args) == 1:
        value = args[0]
        if type(value) is bytes and len(value) < MAX_ARRAY_LENGTH:
            return b"".join((layout.prefix, _PRESENT, _U32.pack(len(value)), value))
        if type(value) is BufferSize and 0 <= value.length <= 0xFFFFFFFF:  # a size answer
            return b"".join((layout.prefix, _ABSENT, _U32.pack(value.length)))
    return _encode(call, layout, call.response_struct, args)


def decode_response(body: bytes, call: int | str | Call | None = None) -> Message:
    """A reply; with `call`, one to another call than that (except an error reply) is refused."""
    return _decode(body, is_request=False, expected=call_of(call) if call is not None else None)


def encode_error(ckr: int) -> bytes:
    if not isinstance(ckr, int) or ckr <= 0:
        raise CodecError(f"an error reply needs a CK_RV other than CKR_OK, not {ckr!r}", CALL_ERROR)
    return encode_response(CALL_ERROR, ckr)
