"""`ckdemo serve` under resource exhaustion: a connection that cannot be served fails alone.

Under an address-space limit (prlimit --as, as `ulimit -v` sets it) only so many connection
threads can start; before, the next one ended the whole server ("cannot join thread before it is
started") and every application with it. Now that connection is closed with one log line and the
others, and the server, go on.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from conftest import clean_env, no_traceback, requires_softhsm
from test_serve import RawClient, Served, stop_cleanly

from ckdemo.rpc import HANDSHAKE

pytestmark = [
    requires_softhsm,
    pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is missing"),
]

ADDRESS_SPACE = 1_200_000_000  # bytes: the server starts (about 190 MB), a few dozen threads fit


def test_connections_beyond_what_threads_allow_are_refused_alone(tmp_path, provision, ckdemo_bin):
    home = provision(tmp_path / "home")
    sock_path, log_path = tmp_path / "s.sock", tmp_path / "serve.log"
    with open(log_path, "w") as out:
        process = subprocess.Popen(
            [
                "prlimit",
                f"--as={ADDRESS_SPACE}",
                str(ckdemo_bin),
                "--home",
                str(home),
                "serve",
                "--socket",
                str(sock_path),
                "--max-connections",
                "1000",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=home,
        )
    served = Served(home, sock_path, log_path, process)
    deadline = time.monotonic() + 30
    while not sock_path.exists():
        assert process.poll() is None and time.monotonic() < deadline, served.log()
        time.sleep(0.05)
    idle = []
    try:
        for _ in range(300):  # idle applications: each holds a thread while it is connected
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            idle.append(connection)
            try:
                connection.connect(str(sock_path))
                connection.sendall(b"\x00")
            except OSError:  # refused and closed by the server already: what is tested below
                pass
        served.wait_for_log("no thread could serve it", timeout=20)
        assert process.poll() is None, served.log()
        answered = 0
        for connection in idle:
            connection.settimeout(2)
            try:
                answered += connection.recv(1) == b"\x00"
            except OSError:
                pass
        assert 0 < answered < 300, answered
        for connection in idle:
            connection.close()
        idle.clear()
        # the threads are back: a new application is served as before
        deadline = time.monotonic() + 20
        while True:
            try:
                client = RawClient(sock_path)
                client.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
                assert client.ok("C_GetInfo")
                client.close()
                break
            except (OSError, AssertionError):
                assert time.monotonic() < deadline, served.log()
                time.sleep(0.2)
        log = served.log()
        assert "internal error" not in log
        no_traceback(log)
    finally:
        for connection in idle:
            connection.close()
        stop_cleanly(served)


def test_objects_the_token_refuses_cost_an_application_its_share_then_device_memory(
    tmp_path, provision, ckdemo_bin
):
    """SoftHSM2 keeps about 2.8 KB for every object it refuses to make, until the library is
    unloaded: a hostile application grew the server from 32 to 906 MiB in ten minutes of refused
    C_CreateObject calls. Each refusal is charged now; past the application's share (by default
    16 MiB, 4,096 refusals; here --refused-objects 300) it gets CKR_DEVICE_MEMORY, and the others
    go on. The default share cost 22-66 s here: SoftHSM2 scans what it kept at every call."""
    from test_serve import start_server
    from ckdemo import codes
    from ckdemo.rpc import Attribute

    home = provision(tmp_path / "home")
    served = start_server(ckdemo_bin, home, None, tmp_path / "serve.log", "--refused-objects", "300")
    try:
        hostile = RawClient(served.socket)
        hostile.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
        (session,) = hostile.ok("C_OpenSession", 0x5000, 0x6)
        refused = (Attribute(0x0, 0), Attribute(0x1, 0), Attribute(0x2, 0), Attribute(0x80000000, b"x"))
        answers = {}
        for _ in range(304):
            reply = hostile.call("C_CreateObject", session, refused)
            name = codes.ckr_name(reply.ckr) if reply.is_error else "CKR_OK"
            answers[name] = answers.get(name, 0) + 1
        assert answers == {"CKR_ATTRIBUTE_TYPE_INVALID": 300, "CKR_DEVICE_MEMORY": 4}, answers
        other = RawClient(served.socket)
        other.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
        (theirs,) = other.ok("C_OpenSession", 0x5000, 0x6)
        (made,) = other.ok(
            "C_CreateObject",
            theirs,
            (Attribute(0x0, 0), Attribute(0x1, 0), Attribute(0x2, 0), Attribute(0x3, b"fine")),
        )
        other.ok("C_DestroyObject", theirs, made)
        served.wait_for_log("restart ckdemo serve to reclaim it")
        assert served.log().count("restart ckdemo serve to reclaim it") == 1
        hostile.close()
        other.close()
    finally:
        stop_cleanly(served)


def test_an_application_s_share_of_refused_objects_is_4096_unless_serve_is_told():
    """The share the test above lowers: 4,096 refusals of 4 KiB (16 MiB) per application, inside
    the server's 64 MiB, as docs/SERVE.md says."""
    from ckdemo.serve import operations, server

    assert server.DEFAULT_REFUSED_OBJECTS == 4096
    assert server.DEFAULT_REFUSED_OBJECTS * operations.REFUSED_OBJECT_BYTES == operations.CONNECTION_LOST
    assert operations.SERVER_LOST == 4 * operations.CONNECTION_LOST
