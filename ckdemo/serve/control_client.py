"""Client side of the control channel (ckdemo.serve.control): one request, one reply."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from .control import CONTROL_NAME

REPLY_TIMEOUT_S = 60.0  # status asks every member; a hung remote member answers after MemberTimeout


class NoServer(Exception):
    """No `ckdemo serve` answers on the control socket."""


class ControlFailed(Exception):
    """The server answered with an error."""


def control_path(home: Path) -> Path:
    return Path(home) / "run" / CONTROL_NAME


def request(path: Path, command: str, **arguments: Any) -> dict[str, Any]:
    """Send one request to the server controlled at `path`; its reply (ok true), else raise."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(REPLY_TIMEOUT_S)
    with sock:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoServer(f"no ckdemo serve runs for this home (nothing answers on {path})") from None
        except OSError as error:
            raise NoServer(f"cannot reach ckdemo serve on {path}: {error.strerror or error}") from None
        try:
            sock.sendall(json.dumps({"command": command, **arguments}).encode() + b"\n")
            line = sock.makefile("rb").readline()
        except socket.timeout:
            raise ControlFailed(
                f"ckdemo serve did not answer {command!r} within {REPLY_TIMEOUT_S:g} s"
            ) from None
        except OSError as error:
            raise ControlFailed(f"ckdemo serve on {path}: {error.strerror or error}") from None
    if not line:
        raise ControlFailed(f"ckdemo serve on {path} closed the channel without an answer")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise ControlFailed(reply.get("error", "refused"))
    return reply
