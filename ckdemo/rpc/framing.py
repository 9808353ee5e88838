"""Transport framing of the p11-kit RPC protocol (p11-kit 0.24.1 rpc-transport.c).

After one version byte each way (the client offers its highest; the server answers the lower
of that and its own), every message in both directions is a frame: a 12-byte header of three
big-endian u32 -- call code, options length, body length -- then the options (the client sends
its module name, e.g. b"client"; a server sends none) and the body (see codec.py). The call code
is chosen by the client and echoed by the server's reply.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .buffer import CodecError

HEADER = struct.Struct(">III")
HEADER_SIZE = HEADER.size
MAX_BODY_LENGTH = 16 * 1024 * 1024  # ours, not p11-kit's: a frame announcing more is refused
MAX_OPTIONS_LENGTH = 4096


@dataclass(frozen=True)
class Frame:
    call_code: int
    body: bytes
    options: bytes = b""

    def encode(self) -> bytes:
        return encode_frame(self.call_code, self.body, self.options)


def encode_frame(call_code: int, body: bytes, options: bytes = b"") -> bytes:
    try:
        return HEADER.pack(call_code, len(options), len(body)) + bytes(options) + bytes(body)
    except struct.error as error:
        raise CodecError(f"frame not encodable: {error}") from error


def decode_header(header: bytes, max_body: int = MAX_BODY_LENGTH) -> tuple[int, int, int]:
    """(call code, options length, body length); lengths beyond the limits raise CodecError."""
    if len(header) != HEADER_SIZE:
        raise CodecError(f"a frame header is {HEADER_SIZE} bytes, got {len(header)}")
    call_code, options_length, body_length = HEADER.unpack(header)
    if options_length > MAX_OPTIONS_LENGTH:
        raise CodecError(f"frame options of {options_length} bytes announced")
    if body_length > max_body:
        raise CodecError(f"frame body of {body_length} bytes announced (limit {max_body})")
    return call_code, options_length, body_length


def negotiate_version(offered: int, ours: int = 0) -> int:
    """What a server answers to the client's version byte (rpc-server.c: the lower of the two)."""
    if not 0 <= offered <= 0xFF:
        raise CodecError(f"a version is one byte, not {offered!r}")
    return min(offered, ours)


class FrameReader:
    """Splits a byte stream into the version byte and frames, whatever the chunking.

    feed() bytes as they arrive; it returns the frames completed so far. Either side's stream
    starts with its version byte (stored in `version`).
    """

    def __init__(self, max_body: int = MAX_BODY_LENGTH):
        self.max_body = max_body
        self.version: int | None = None
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._pending += data
        frames = []
        if self.version is None and self._pending:
            self.version = self._pending.pop(0)
        while len(self._pending) >= HEADER_SIZE:
            call_code, options_length, body_length = decode_header(
                bytes(self._pending[:HEADER_SIZE]), self.max_body)
            end = HEADER_SIZE + options_length + body_length
            if len(self._pending) < end:
                break
            options = bytes(self._pending[HEADER_SIZE:HEADER_SIZE + options_length])
            body = bytes(self._pending[HEADER_SIZE + options_length:end])
            del self._pending[:end]
            frames.append(Frame(call_code, body, options))
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still waiting for the rest."""
        return len(self._pending)


def read_exact(sock, count: int) -> bytes:
    """`count` bytes from a socket; EOF before them raises EOFError (after 0 bytes) or CodecError."""
    chunks, received = [], 0
    while received < count:
        chunk = sock.recv(min(count - received, 1 << 20))
        if not chunk:
            if received == 0:
                raise EOFError("peer closed the connection")
            raise CodecError(f"connection closed inside a frame ({received} of {count} bytes)")
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


def read_frame(sock, max_body: int = MAX_BODY_LENGTH) -> Frame:
    """One frame from a blocking socket (EOFError at a clean end, CodecError otherwise)."""
    call_code, options_length, body_length = decode_header(read_exact(sock, HEADER_SIZE), max_body)
    try:
        options = read_exact(sock, options_length) if options_length else b""
        body = read_exact(sock, body_length) if body_length else b""
    except EOFError:
        raise CodecError("connection closed after a frame header") from None
    return Frame(call_code, body, options)


def read_frame_from(stream, max_body: int = MAX_BODY_LENGTH) -> Frame:
    """read_frame on a buffered binary stream (`sock.makefile("rb")`): one recv brings in as much
    as the peer sent, so a request costs one system call rather than one per part."""
    header = stream.read(HEADER_SIZE)
    if not header:
        raise EOFError("peer closed the connection")
    if len(header) < HEADER_SIZE:
        raise CodecError(f"connection closed inside a frame ({len(header)} of {HEADER_SIZE} bytes)")
    call_code, options_length, body_length = decode_header(header, max_body)
    rest = stream.read(options_length + body_length) if options_length + body_length else b""
    if len(rest) < options_length + body_length:
        raise CodecError("connection closed after a frame header")
    return Frame(call_code, rest[options_length:], rest[:options_length])


def write_frame(sock, frame: Frame) -> None:
    sock.sendall(frame.encode())
