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
                bytes(self._pending[:HEADER_SIZE]), self.max_body
            )
            end = HEADER_SIZE + options_length + body_length
            if len(self._pending) < end:
                break
            options = bytes(self._pending[HEADER_SIZE : HEADER_SIZE + options_length])
            body = bytes(self._pending[HEADER_SIZE + options_length : end])
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


class FrameStream:
    """Frames from a blocking socket, for a server's request loop: one recv() per request in the
    usual case (a request is one small frame), pipelined frames kept for the next call, a large
    frame gathered over several recv()s. next() gives (call code, body); EOFError at a clean end,
    CodecError for broken framing (a frame cut short, a huge length)."""

    READ_SIZE = 64 * 1024  # what one recv() may bring in

    def __init__(self, sock, max_body: int = MAX_BODY_LENGTH) -> None:
        self.sock = sock
        self.max_body = max_body
        self.pending = b""  # bytes received after the last frame handed out

    def version(self) -> int:
        """The peer's version byte, which opens its stream."""
        data = self.pending or self.sock.recv(self.READ_SIZE)
        if not data:
            raise EOFError("peer closed the connection")
        self.pending = data[1:]
        return data[0]

    def next(self) -> tuple[int, bytes]:
        data = self.pending
        while True:
            if len(data) >= HEADER_SIZE:
                call_code, options_length, body_length = HEADER.unpack_from(data)
                if options_length > MAX_OPTIONS_LENGTH or body_length > self.max_body:
                    decode_header(data[:HEADER_SIZE], self.max_body)  # raises, saying which
                end = HEADER_SIZE + options_length + body_length
                if len(data) < end:
                    data = self._gather(data, end)
                self.pending = data[end:]
                return call_code, data[HEADER_SIZE + options_length : end]
            data = self._gather(data, HEADER_SIZE)

    def _gather(self, data: bytes, size: int) -> bytes:
        """`data` and what follows it on the socket, at least `size` bytes in all."""
        parts, received = [data], len(data)
        while received < size:
            chunk = self.sock.recv(min(max(size - received, self.READ_SIZE), 1 << 20))
            if not chunk:
                self.pending = b""
                if not received:
                    raise EOFError("peer closed the connection")
                raise CodecError(f"connection closed inside a frame ({received} of {size} bytes)")
            parts.append(chunk)
            received += len(chunk)
        return parts[1] if len(parts) == 2 and not data else b"".join(parts)


def write_frame(sock, frame: Frame) -> None:
    sock.sendall(frame.encode())
