"""A minimal synchronous p11-kit RPC server: the wire half of `ckdemo serve`, without slots yet.

It does the version handshake (always version 0), then answers frames one by one, in order:
C_Initialize (handshake string checked), C_Finalize, C_GetInfo, C_GetSlotList and
C_GetSlotInfo from a `SlotProvider`; every other call, known or not, gets an error reply (CKR_FUNCTION_NOT_SUPPORTED),
never a dropped connection. A request that does not decode gets CKR_DEVICE_ERROR, as p11-kit's
server answers its own parse errors; only broken framing (a huge length, a frame cut short)
closes the connection. The Slot/Session protocol that the full server will drive is designed
elsewhere: extend HANDLERS, not this loop.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Callable, Protocol, Sequence

from .. import codes
from .buffer import CodecError, UnknownCallError
from .calls import HANDSHAKE, PROTOCOL_VERSION
from .codec import Message, decode_request, encode_error, encode_response
from .framing import Frame, negotiate_version, read_exact, read_frame, write_frame
from .structs import BufferSize, Info, SlotInfo


class SlotProvider(Protocol):
    """What the server asks about the slots it exposes (raise codes.CKRError to refuse)."""

    def info(self) -> Info: ...

    def slot_ids(self, token_present: bool) -> Sequence[int]: ...

    def slot_info(self, slot_id: int) -> SlotInfo: ...


def _initialize(provider: SlotProvider, args: tuple) -> tuple:
    if args[0] != HANDSHAKE:  # rpc-server.c answers a wrong handshake with CKR_GENERAL_ERROR
        raise codes.CKRError(codes.CKR_GENERAL_ERROR, "C_Initialize", "bad RPC handshake string")
    return ()


def _get_slot_list(provider: SlotProvider, args: tuple) -> tuple:
    token_present, offered = args
    slots = tuple(provider.slot_ids(bool(token_present)))
    # a size query (0) or a buffer too small: only the count travels (rpc-server.c does the same)
    return (slots if offered >= len(slots) else BufferSize(len(slots)),)


HANDLERS: dict[str, Callable[[SlotProvider, tuple], tuple]] = {
    "C_Initialize": _initialize,
    "C_Finalize": lambda provider, args: (),
    "C_GetInfo": lambda provider, args: (provider.info(),),
    "C_GetSlotList": _get_slot_list,
    "C_GetSlotInfo": lambda provider, args: (provider.slot_info(args[0]),),
}


def answer(provider: SlotProvider, body: bytes) -> bytes:
    """The reply body to one request body; never raises for anything the client sent."""
    try:
        request: Message = decode_request(body)
    except UnknownCallError:
        return encode_error(codes.CKR_FUNCTION_NOT_SUPPORTED)
    except CodecError:
        return encode_error(codes.CKR_DEVICE_ERROR)
    handler = HANDLERS.get(request.name)
    if handler is None:
        return encode_error(codes.CKR_FUNCTION_NOT_SUPPORTED)
    try:
        return encode_response(request.call_id, *handler(provider, request.args))
    except codes.CKRError as error:
        return encode_error(error.ckr)


def serve_connection(connection: socket.socket, provider: SlotProvider) -> None:
    """Handshake, then request/reply until the client leaves or breaks the framing."""
    try:
        offered = read_exact(connection, 1)[0]
        connection.sendall(bytes([negotiate_version(offered, PROTOCOL_VERSION)]))
        while True:
            request = read_frame(connection)
            write_frame(connection, Frame(request.call_code, answer(provider, request.body)))
    except (EOFError, CodecError, OSError):
        pass
    finally:
        connection.close()


class UnixServer:
    """Accepts on a Unix socket path; one thread per connection; close() stops accepting."""

    def __init__(self, path: str | os.PathLike, provider: SlotProvider):
        self.path = os.fspath(path)
        self.provider = provider
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)

    def serve_forever(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed by close()
                return
            threading.Thread(target=serve_connection, args=(connection, self.provider),
                             daemon=True).start()

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() on Linux
        except OSError:
            pass
        self.listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
