"""A small p11-kit RPC client written from the protocol alone (P11KIT-RPC.md; p11-kit 0.24.1's
rpc-message.h/.c), sharing no code with ckdemo, to test `ckdemo serve` from outside.

Wire: one version byte each way (0); then frames: a header of three big-endian u32 (call code, a
sequence from 0x10 that the reply echoes; options length; body length), the options (`client`;
a server sends none) and the body: u32 call id, the signature as u32 length + bytes, the
arguments in signature order. A failed call is answered: call id 0, signature `u`, the CK_RV.

    client = Client(path); session = client.open_session(0x5000, pin)
    client.call("C_FindObjectsInit", session, [(CKA_CLASS, 0)]).rv  # or client.raw(any_body)

Arguments are Python values encoded by signature letter (ENCODERS), or Raw(bytes) sent as they
are. An attribute is (type, value[, declared length]): the value as p11-kit encodes that type,
or Raw bytes put on the wire after the declared length.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from dataclasses import dataclass

HANDSHAKE = b"PRIVATE-GNOME-KEYRING-PKCS11-PROTOCOL-V-1"
NULL = 0xFFFFFFFF  # a NULL byte array / no mechanism parameter
# name -> (call id, request signature, reply signature): p11-kit 0.24.1 rpc-message.h
CALLS = {
    "C_Initialize": (1, "ayyay", ""),
    "C_GetInfo": (3, "", "vsusv"),
    "C_GetSlotList": (4, "yfu", "au"),
    "C_GetSlotInfo": (5, "u", "ssuvv"),
    "C_GetTokenInfo": (6, "u", "ssssuuuuuuuuuuuvvs"),
    "C_OpenSession": (10, "uu", "u"),
    "C_GetSessionInfo": (13, "u", "uuuu"),
    "C_Login": (18, "uuay", ""),
    "C_CreateObject": (20, "uaA", "u"),
    "C_CopyObject": (21, "uuaA", "u"),
    "C_DestroyObject": (22, "uu", ""),
    "C_GetAttributeValue": (24, "uufA", "aAu"),
    "C_SetAttributeValue": (25, "uuaA", ""),
    "C_FindObjectsInit": (26, "uaA", ""),
    "C_FindObjects": (27, "ufu", "au"),
    "C_FindObjectsFinal": (28, "u", ""),
    "C_EncryptInit": (29, "uMu", ""),
    "C_Encrypt": (30, "uayfy", "ay"),
    "C_DigestInit": (37, "uM", ""),
    "C_DigestUpdate": (39, "uay", ""),
    "C_SignInit": (42, "uMu", ""),
    "C_Sign": (43, "uayfy", "ay"),
    "C_GenerateKey": (58, "uMaA", "u"),
    "C_GenerateKeyPair": (59, "uMaAaA", "uu"),
    "C_UnwrapKey": (61, "uMuayaA", "u"),
    "C_DeriveKey": (62, "uMuaA", "u"),
    "C_WaitForSlotEvent": (65, "u", "u"),
}
REPLY_SIGNATURES = {call_id: reply for call_id, _, reply in CALLS.values()} | {0: "u"}

# how p11-kit 0.24.1 carries attribute values (map_attribute_to_value_type): CK_BBOOL types as one
# byte, CK_ULONG types as a u64, the wrap/unwrap templates nested, allowed mechanisms as a u32
# count + u64s, everything else (dates, vendor types, ...) as u32 length + bytes
BOOL_TYPES = frozenset(
    (
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
)
ULONG_TYPES = frozenset(
    (
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
)
CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE, CKA_ALLOWED_MECHANISMS = 0x40000211, 0x40000212, 0x40000600
NESTED_TYPES = frozenset((CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE))
LETTERS = re.compile(r"a[yuA]|f[yuA]|[yuvszM]")  # a signature's fields
SIZEOF_CK_ATTRIBUTE = 24  # the declared length of a nested template is its C size, per item

CKR_NAMES = {
    0x0: "OK",
    0x5: "GENERAL_ERROR",
    0x10: "ATTRIBUTE_READ_ONLY",
    0x11: "ATTRIBUTE_SENSITIVE",
    0x12: "ATTRIBUTE_TYPE_INVALID",
    0x13: "ATTRIBUTE_VALUE_INVALID",
    0x1B: "ACTION_PROHIBITED",
    0x30: "DEVICE_ERROR",
    0x31: "DEVICE_MEMORY",
    0x54: "FUNCTION_NOT_SUPPORTED",
    0x60: "KEY_HANDLE_INVALID",
    0x68: "KEY_FUNCTION_NOT_PERMITTED",
    0x70: "MECHANISM_INVALID",
    0x71: "MECHANISM_PARAM_INVALID",
    0x82: "OBJECT_HANDLE_INVALID",
    0x90: "OPERATION_ACTIVE",
    0x91: "OPERATION_NOT_INITIALIZED",
    0xB3: "SESSION_HANDLE_INVALID",
    0xD0: "TEMPLATE_INCOMPLETE",
    0xD1: "TEMPLATE_INCONSISTENT",
    0x101: "USER_NOT_LOGGED_IN",
    0x140: "CURVE_NOT_SUPPORTED",
}


def ckr_name(rv: int) -> str:
    return f"CKR_{CKR_NAMES.get(rv, hex(rv))}"


class Raw(bytes):
    """Bytes put on the wire exactly as given (an argument, or an attribute's value)."""


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def byte_array(value: bytes | None) -> bytes:
    """`s`/`z`, and a byte-array attribute value: u32 length + bytes, NULL as 0xffffffff."""
    return u32(NULL) if value is None else u32(len(value)) + bytes(value)


KINDS = {
    **dict.fromkeys(BOOL_TYPES, "bool"),
    **dict.fromkeys(ULONG_TYPES, "ulong"),
    **dict.fromkeys(NESTED_TYPES, "nested"),
    CKA_ALLOWED_MECHANISMS: "mechanisms",
}


def kind_of(attribute_type: int, value=None) -> str:
    """How p11-kit 0.24.1 carries this type's value (a Raw value: as it is)."""
    return "raw" if isinstance(value, Raw) else KINDS.get(attribute_type, "bytes")


def native_length(attribute_type: int, value) -> int:
    """ulValueLen as a C client would declare it for this value."""
    kind = kind_of(attribute_type, value)
    if kind in ("bool", "ulong"):
        return 1 if kind == "bool" else 8
    return {"nested": SIZEOF_CK_ATTRIBUTE, "mechanisms": 8}.get(kind, 1) * len(value or b"")


VALUE_ENCODERS = {
    "raw": bytes,
    "bool": lambda v: bytes([int(v) & 0xFF]),
    "ulong": u64,
    "nested": lambda v: attributes(v),
    "bytes": byte_array,
    "mechanisms": lambda v: u32(len(v)) + b"".join(map(u64, v)),
}


def attribute(entry) -> bytes:
    """(type, value[, declared length]): u32 type, validity 1, u32 length, the value by type.
    A declared length of None sends validity 0 (unavailable) and nothing more."""
    attribute_type, value = entry[0], entry[1]
    length = entry[2] if len(entry) > 2 else native_length(attribute_type, value)
    if length is None:
        return u32(attribute_type) + b"\x00"
    return u32(attribute_type) + b"\x01" + u32(length) + VALUE_ENCODERS[kind_of(attribute_type, value)](value)


def attributes(template) -> bytes:
    """`aA`: u32 count, then each attribute."""
    template = list(template)
    return u32(len(template)) + b"".join(map(attribute, template))


ENCODERS = {
    "y": lambda v: bytes([v]),
    "u": u64,
    "s": byte_array,
    "z": byte_array,
    "fy": u32,
    "fu": u32,
    "ay": lambda v: b"\x00" + u32(0) if v is None else b"\x01" + byte_array(v),  # None: size query
    "au": lambda v: b"\x01" + u32(len(v)) + b"".join(map(u64, v)),
    "fA": lambda v: u32(len(v)) + b"".join(u32(t) + u32(n) for t, n in v),  # (type, buffer size)
    "aA": attributes,
    "M": lambda v: u32(v[0]) + byte_array(v[1]) if isinstance(v, tuple) else u32(v) + u32(NULL),
}  # M: a mechanism type, or (type, parameter bytes): p11-kit sends most parameters as bytes


def request(name: str, *args) -> bytes:
    """The body of a call: u32 id, the signature (u32 length + bytes), the encoded arguments
    (a Raw argument as it is)."""
    call_id, signature, _ = CALLS[name]
    fields = LETTERS.findall(signature)
    assert len(fields) == len(args), f"{name} takes {signature!r}"
    return (
        u32(call_id)
        + byte_array(signature.encode())
        + b"".join(
            arg if isinstance(arg, Raw) else ENCODERS[letter](arg) for letter, arg in zip(fields, args)
        )
    )


class Malformed(Exception):
    """A reply that does not parse: a server bug worth reporting."""


@dataclass
class Reply:
    """A parsed reply: the call id, its values (by signature letter) and, for an error, the rv."""

    call_id: int
    values: list

    @property
    def rv(self) -> int:
        """The CK_RV: an error reply's, C_GetAttributeValue's trailing u64, else CKR_OK."""
        return self.values[-1] if self.call_id in (0, CALLS["C_GetAttributeValue"][0]) else 0


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise Malformed(f"{n} bytes wanted at {self.at} of {len(self.data)}")
        self.at += n
        return self.data[self.at - n : self.at]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def array(self) -> bytes | None:
        n = self.u32()
        return None if n == NULL else self.take(n)

    def attribute(self) -> tuple:
        """(type, value, declared length); an unavailable one: (type, None, None)."""
        attribute_type = self.u32()
        if self.take(1) == b"\x00":
            return (attribute_type, None, None)
        length = self.u32()
        read = {
            "bool": lambda: self.take(1)[0],
            "ulong": self.u64,
            "bytes": self.array,
            "nested": lambda: [self.attribute() for _ in range(self.u32())],
            "mechanisms": lambda: [self.u64() for _ in range(self.u32())],
        }
        return (attribute_type, read[kind_of(attribute_type)](), length)

    def value(self, letter: str):
        if letter in ("ay", "au"):  # presence byte; absent: only the length a caller would need
            if self.take(1) != b"\x01":
                return self.u32()
            return self.array() if letter == "ay" else [self.u64() for _ in range(self.u32())]
        read = {
            "y": lambda: self.take(1)[0],
            "u": self.u64,
            "v": lambda: tuple(self.take(2)),
            "s": self.array,
            "z": self.array,
            "aA": lambda: [self.attribute() for _ in range(self.u32())],
        }
        return read[letter]()


def parse_reply(body: bytes, expected_call: int) -> Reply:
    """The whole body must parse, as the call's reply or as an error reply."""
    reader = _Reader(body)
    call_id = reader.u32()
    signature = (reader.array() or b"").decode("ascii", "replace")
    if call_id not in (0, expected_call) or signature != REPLY_SIGNATURES.get(call_id):
        raise Malformed(f"call {call_id} signature {signature!r} answering call {expected_call}")
    values = [reader.value(letter) for letter in LETTERS.findall(signature)]
    if reader.at != len(body):
        raise Malformed(f"{len(body) - reader.at} bytes after the reply")
    return Reply(call_id, values)


class Client:
    """One connection: version byte 0 agreed at once, then one request and its reply at a time."""

    def __init__(self, path, timeout: float = 30, refused_for: float = 2.0):
        """refused_for: how long a refusal is retried (a server between bind and listen)."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + refused_for
        while True:
            try:
                self.sock.connect(str(path))
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.incoming, self.code = self.sock.makefile("rb"), 0x0F
        self.sock.sendall(b"\x00")
        if self._read(1) != b"\x00":
            raise Malformed("the server did not agree on protocol version 0")

    def _read(self, n: int) -> bytes:
        data = self.incoming.read(n)
        if len(data) < n:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        return data

    def raw(self, body: bytes, expected_call: int | None = None) -> Reply:
        """Send any body in the next frame (header, options `client`, body); the reply must echo
        the call code and parse (EOFError: the server closed the connection)."""
        self.code += 1
        self.sock.sendall(struct.pack(">III", self.code, 6, len(body)) + b"client" + body)
        code, options, length = struct.unpack(">III", self._read(12))
        if code != self.code:
            raise Malformed(f"reply code {code:#x} to request {self.code:#x}")
        reply = self._read(options + length)[options:]
        if expected_call is None:
            expected_call = struct.unpack(">I", body[:4])[0] if len(body) >= 4 else -1
        return parse_reply(reply, expected_call)

    def call(self, name: str, *args) -> Reply:
        return self.raw(request(name, *args), CALLS[name][0])

    def ok(self, name: str, *args) -> list:
        reply = self.call(name, *args)
        assert reply.rv == 0, f"{name}: {ckr_name(reply.rv)}"
        return reply.values

    def initialize(self) -> None:
        self.ok("C_Initialize", HANDSHAKE, 0, b"\x00")

    def open_session(self, slot: int, pin: str | None = None) -> int:
        """C_Initialize, a R/W session on `slot` and, with a PIN, C_Login as the user."""
        self.initialize()
        (session,) = self.ok("C_OpenSession", slot, 0x6)
        if pin is not None:
            self.ok("C_Login", session, 1, pin.encode())
        return session

    def find(self, session: int, template=()) -> list[int]:
        self.ok("C_FindObjectsInit", session, template)
        (found,) = self.ok("C_FindObjects", session, 1000)
        self.ok("C_FindObjectsFinal", session)
        return found

    def close(self) -> None:
        self.incoming.close()
        self.sock.close()
