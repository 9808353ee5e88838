"""`ckdemo serve` under systemd (docs/systemd/ckdemo-serve.service, Type=notify): READY=1 comes on
$NOTIFY_SOCKET once the socket listens and the control channel runs, STOPPING=1 at SIGTERM, both
read from a real datagram socket as systemd's own would; the shipped unit file passes
`systemd-analyze verify` where systemd is installed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import clean_env, no_traceback, requires_softhsm
from support import REPO
from test_serve import RawClient

from ckdemo.rpc import HANDSHAKE
from ckdemo.serve import sdnotify

UNIT = REPO / "docs" / "systemd" / "ckdemo-serve.service"


def listening(path: str) -> socket.socket:
    """A datagram socket where the service manager would listen (abstract when path is @name)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + path[1:] if path.startswith("@") else path)
    sock.settimeout(30)
    return sock


@requires_softhsm
def test_serve_tells_systemd_ready_once_applications_can_connect_and_stopping_at_sigterm(
    tmp_path, provision, ckdemo_bin
):
    home = provision(tmp_path / "home")
    notify_path, sock_path, log = str(tmp_path / "notify"), tmp_path / "s.sock", tmp_path / "serve.log"
    manager = listening(notify_path)
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(ckdemo_bin), "--home", str(home), "serve", "--socket", str(sock_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=home,
            env=clean_env(NOTIFY_SOCKET=notify_path),
        )
    try:
        message, sender = manager.recvfrom(4096)
        assert message == b"READY=1", log.read_text()
        # ready means ready: an application connects and is answered at once
        client = RawClient(sock_path)
        client.ok("C_Initialize", HANDSHAKE, 0, b"\x00")
        assert client.ok("C_GetInfo")
        client.close()
        assert "control channel on" in log.read_text()
        process.send_signal(signal.SIGTERM)
        assert manager.recv(4096) == b"STOPPING=1"
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        manager.close()
    text = log.read_text()
    no_traceback(text)
    assert text.count("told systemd READY=1 (NOTIFY_SOCKET)") == 1
    assert text.index("told systemd STOPPING=1") < text.index("stopped: sessions closed")


def test_notify_sends_one_datagram_to_a_path_or_the_abstract_namespace(tmp_path):
    for address in (str(tmp_path / "notify"), f"@ckdemo-test-{os.getpid()}"):
        manager = listening(address)
        try:
            assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": address}) is True
            assert manager.recv(4096) == b"READY=1"
        finally:
            manager.close()


def test_without_notify_socket_nothing_is_sent_and_a_bad_one_is_one_line(tmp_path):
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": ""}) is False
    with pytest.raises(sdnotify.NotifyError, match=r"^NOTIFY_SOCKET=.*nobody: systemd not told READY=1 \("):
        sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    with pytest.raises(sdnotify.NotifyError, match="is not a Unix socket path"):
        sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"})


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is missing (Debian's systemd package): the unit file is not verified",
)
def test_the_shipped_unit_file_verifies(tmp_path, ckdemo_bin):
    """systemd-analyze checks the unit as systemd would load it (Type=notify, the directives, the
    command's program); ExecStart points at this environment's ckdemo instead of /opt/ckdemo's."""
    text = UNIT.read_text()
    assert "Type=notify" in text and "ExecStart=/opt/ckdemo/.venv/bin/ckdemo " in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/opt/ckdemo/.venv/bin/ckdemo", str(ckdemo_bin)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stdout + done.stderr
    # a mistake systemd only warns about (it would run the unit as Type=simple) is caught too
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    wrong = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "Failed to parse service type" in wrong.stderr
