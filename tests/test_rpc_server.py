"""The minimal RPC server loop (ckdemo/rpc/server.py) against the unmodified Debian client.

pkcs11-tool loads `p11-kit-client.so`, which speaks to our socket: `-I` must show the library
information our provider gives. Raw-socket clients check that an unknown call or a garbled body
gets an error reply on a connection that keeps working, and that broken framing closes only
that connection.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading

import pytest

from ckdemo import codes
from ckdemo.rpc import HANDSHAKE, BufferSize, Info, SlotInfo, Version, decode_response, encode_request
from ckdemo.rpc.framing import Frame, read_exact, read_frame, write_frame
from ckdemo.rpc.server import UnixServer

from rpc_capture import P11KIT_CLIENT, tools_missing

CKF_TOKEN_PRESENT = 0x1


class CannedSlots:
    """A SlotProvider with fixed answers, counting what it was asked."""

    def __init__(self):
        self.asked: list[bool] = []

    def info(self) -> Info:
        return Info(Version(2, 40), "ckdemo test provider", 0, "canned slots", Version(0, 7))

    def slot_ids(self, token_present: bool):
        self.asked.append(token_present)
        return [0x21, 0x22]

    def slot_info(self, slot_id: int) -> SlotInfo:
        if slot_id not in (0x21, 0x22):
            raise codes.CKRError(codes.CKR_SLOT_ID_INVALID, "C_GetSlotInfo")
        return SlotInfo(f"canned slot {slot_id:#x}", "ckdemo", CKF_TOKEN_PRESENT, Version(1, 0),
                        Version(1, 0))


@pytest.fixture
def server(tmp_path):
    provider = CannedSlots()
    path = tmp_path / "ckdemo.sock"
    unix_server = UnixServer(path, provider)
    thread = threading.Thread(target=unix_server.serve_forever, daemon=True)
    thread.start()
    yield path, provider
    unix_server.close()
    thread.join(5)
    assert not thread.is_alive() and not path.exists()


def connect(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    sock.sendall(b"\x02")  # a 0.25.6 client offers 2; we answer 0
    assert read_exact(sock, 1) == b"\x00"
    return sock


def call(sock, code: int, body: bytes):
    write_frame(sock, Frame(code, body, b"client"))
    reply = read_frame(sock)
    assert reply.call_code == code and reply.options == b""
    return decode_response(reply.body)


def test_pkcs11_tool_shows_the_provider_info(server):
    missing = tools_missing()
    if missing:
        pytest.skip(missing)
    path, provider = server
    env = {k: v for k, v in os.environ.items() if not k.startswith("P11_KIT")}
    env["P11_KIT_SERVER_ADDRESS"] = f"unix:path={path}"
    shown = subprocess.run(["pkcs11-tool", "--module", P11KIT_CLIENT, "-I"], env=env,
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "ckdemo test provider" in shown.stdout and "canned slots" in shown.stdout
    assert "0.7" in shown.stdout
    listed = subprocess.run(["pkcs11-tool", "--module", P11KIT_CLIENT, "-L"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert provider.asked, "C_GetSlotList never reached the provider"
    assert "canned slot 0x21" in listed.stdout and "canned slot 0x22" in listed.stdout
    assert "CKR_FUNCTION_NOT_SUPPORTED" in listed.stdout + listed.stderr  # C_GetTokenInfo: not yet


def test_calls_answered_in_order_and_errors_keep_the_connection(server):
    path, provider = server
    with connect(path) as sock:
        assert call(sock, 0x10, encode_request("C_Initialize", HANDSHAKE, 0, b"\x00")).args == ()
        assert call(sock, 0x11, encode_request("C_GetSlotList", 1, 0)).args == (BufferSize(2),)
        assert call(sock, 0x12, encode_request("C_GetSlotList", 1, 1)).args == (BufferSize(2),)
        assert call(sock, 0x13, encode_request("C_GetSlotList", 0, 8)).args == ((0x21, 0x22),)
        assert provider.asked == [True, True, False]
        unknown = call(sock, 0x14, struct.pack(">II", 70, 1) + b"u" + bytes(8))  # a 3.0 call id
        assert unknown.is_error and unknown.ckr == codes.CKR_FUNCTION_NOT_SUPPORTED
        known = call(sock, 0x15, encode_request("C_Login", 1, 1, b"1234"))
        assert known.is_error and known.ckr == codes.CKR_FUNCTION_NOT_SUPPORTED
        garbled = call(sock, 0x16, encode_request("C_GetSlotList", 1, 0)[:-2])
        assert garbled.is_error and garbled.ckr == codes.CKR_DEVICE_ERROR
        garbage = call(sock, 0x17, b"\xde\xad")
        assert garbage.is_error and garbage.ckr == codes.CKR_DEVICE_ERROR
        slot = call(sock, 0x1B, encode_request("C_GetSlotInfo", 0x99))
        assert slot.is_error and slot.ckr == codes.CKR_SLOT_ID_INVALID
        bad_handshake = call(sock, 0x18, encode_request("C_Initialize", b"hello", 0, b"\x00"))
        assert bad_handshake.is_error and bad_handshake.ckr == codes.CKR_GENERAL_ERROR
        info = call(sock, 0x19, encode_request("C_GetInfo")).args[0]
        assert info.library_description == b"canned slots".ljust(32)
        assert call(sock, 0x1A, encode_request("C_Finalize")).args == ()


def test_broken_framing_closes_only_that_connection(server):
    path, _ = server
    with connect(path) as huge, connect(path) as truncated, connect(path) as good:
        huge.sendall(struct.pack(">III", 0x10, 0, 0xFFFFFFF0))
        assert huge.recv(1) == b""  # closed, no reply
        truncated.sendall(struct.pack(">III", 0x10, 0, 100) + b"short")
        truncated.shutdown(socket.SHUT_WR)
        assert truncated.recv(1) == b""
        assert call(good, 0x10, encode_request("C_GetInfo")).args[0].manufacturer_id.startswith(b"ckdemo")
    with connect(path) as later:
        assert not call(later, 0x10, encode_request("C_GetSlotList", 1, 4)).is_error
