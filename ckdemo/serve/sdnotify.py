"""systemd's readiness protocol, the part `ckdemo serve` needs (sd_notify(3)): one datagram of
`NAME=value` lines to the Unix socket $NOTIFY_SOCKET names, when a Type=notify unit set it.
No dependency: a few lines of socket code, as systemd documents the protocol."""

from __future__ import annotations

import os
import socket
from typing import Mapping

READY = "READY=1"  # the socket listens: applications may connect
STOPPING = "STOPPING=1"  # SIGTERM came: closing sessions, removing the socket


class NotifyError(OSError):
    """$NOTIFY_SOCKET is set but the notification could not be sent: the one line to log."""


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Sends `state` to the service manager; False when no manager asked for it (no
    $NOTIFY_SOCKET). A path, or @name for Linux's abstract namespace, as systemd gives it."""
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:  # vsock:... (systemd 254 and later, for virtual machines): not a Unix socket
        raise NotifyError(f"NOTIFY_SOCKET={address!r} is not a Unix socket path: systemd not told {state}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(target)
            sock.sendall(state.encode())
        except OSError as exc:
            raise NotifyError(
                f"NOTIFY_SOCKET={address}: systemd not told {state} ({exc.strerror or exc})"
            ) from None
    return True
