"""The server's Unix sockets (the PKCS#11 socket and the control socket): made 0600, taken over
from a server that died, never from one that still answers; closed with the file removed."""

from __future__ import annotations

import os
import socket
import stat


def listen(path: str, backlog: int) -> socket.socket:
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise OSError(f"{path} exists and is not a socket (a file of yours?): not replaced")
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # left by a server that died: nobody answers there
        else:
            raise OSError(f"another ckdemo serve answers on {path}")
        finally:
            probe.close()
    # bound and listening under a name of its own, then renamed: a client that connects the
    # moment the socket file appears is never refused (bind() makes the file before listen())
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    building = os.path.join(os.path.dirname(path), f".{os.getpid()}.s")  # short: sun_path is 108
    old_mask = os.umask(0o177)  # 0600: the state folder's owner only
    try:
        if os.path.lexists(building):
            os.unlink(building)
        listener.bind(building)
        listener.listen(backlog)
        os.rename(building, path)
    except OSError:
        listener.close()
        if os.path.lexists(building):
            os.unlink(building)
        raise
    finally:
        os.umask(old_mask)
    return listener


def close(listener: socket.socket, path: str) -> None:
    """Stop accepting (shutdown wakes a blocked accept() on Linux) and remove the socket file."""
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    listener.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
