"""Capture the p11-kit RPC bytes between the real client and the real server, with a relay.

`p11-kit server` (0.24.1, C) serves one SoftHSM2 token on a Unix socket; a relay socket in front
of it records every byte of each connection in both directions; pkcs11-tool loads
`p11-kit-client.so` pointed at the relay. Used by the codec round-trip tests.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"
from ckdemo.libraries import P11KIT_CLIENT as _CLIENT, LibraryNotFound, find  # noqa: E402


def _found(library) -> str:
    """The library where this machine keeps it; when missing, its file name (tools_missing says)."""
    try:
        return find(library)
    except LibraryNotFound:
        return library.file


P11KIT_CLIENT = _found(_CLIENT)
TOKEN_LABEL, USER_PIN, SO_PIN = "rpccapture", "1234", "12345678"


def tools_missing() -> str | None:
    for path in (SOFTHSM_LIB, P11KIT_CLIENT):
        if not os.path.exists(path):
            return f"{path} is not installed"
    for tool in ("p11-kit", "pkcs11-tool", "softhsm2-util"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    return None


@dataclass
class Conversation:
    """One client connection: what the client sent and what the server answered, raw."""

    argv: list[str]
    from_client: bytearray = field(default_factory=bytearray)
    from_server: bytearray = field(default_factory=bytearray)


class Relay:
    """Accepts on `listen_path`, connects each client to `target_path`, records both directions."""

    def __init__(self, listen_path: Path, target_path: Path):
        self.target_path = str(target_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(listen_path))
        self.listener.listen(8)
        self.argv: list[str] = []
        self.conversations: list[Conversation] = []
        self.pumps: list[threading.Thread] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target_path)
            record = Conversation(self.argv)
            self.conversations.append(record)
            pump = threading.Thread(target=self._pump, args=(client, upstream, record), daemon=True)
            self.pumps.append(pump)
            pump.start()

    @staticmethod
    def _pump(client: socket.socket, upstream: socket.socket, record: Conversation) -> None:
        peers = {client: (upstream, record.from_client), upstream: (client, record.from_server)}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            open_ = True
            while open_:
                for key, _ in selector.select():
                    other, log = peers[key.fileobj]
                    try:
                        data = key.fileobj.recv(1 << 16)
                        other.sendall(data)
                    except OSError:  # a peer reset: the conversation ends here, as recorded
                        data = b""
                    if not data:
                        open_ = False
                        break
                    log += data
        client.close()
        upstream.close()

    def wait_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for pump in list(self.pumps):
            pump.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self.listener.close()


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"p11-kit server did not create {path}")
        time.sleep(0.02)


def capture(folder: Path, runs: list[list[str]], files: dict[str, bytes] | None = None) -> list[Conversation]:
    """Run each pkcs11-tool argument list (after `--module p11-kit-client.so`) through the relay;
    one Conversation per client connection, in order."""
    folder = Path(folder)
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P11_KIT", "SOFTHSM"))}
    env["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )
    for name, content in (files or {}).items():
        (folder / name).write_bytes(content)
    server_socket, relay_socket = folder / "server.sock", folder / "relay.sock"
    server = subprocess.Popen(
        [
            "p11-kit",
            "server",
            "-f",
            "-n",
            str(server_socket),
            "--provider",
            SOFTHSM_LIB,
            f"pkcs11:token={TOKEN_LABEL}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(server_socket, server)
        relay = Relay(relay_socket, server_socket)
        client_env = dict(env, P11_KIT_SERVER_ADDRESS=f"unix:path={relay_socket}")
        for argv in runs:
            relay.argv = argv
            subprocess.run(
                ["pkcs11-tool", "--module", P11KIT_CLIENT, *argv],
                env=client_env,
                cwd=folder,
                capture_output=True,
                timeout=60,
            )
            relay.wait_idle()
        relay.close()
    finally:
        server.terminate()
        server.wait(10)
    return relay.conversations
