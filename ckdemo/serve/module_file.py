"""A p11-kit module file for a running `ckdemo serve`: p11-kit-aware applications (anything that
loads p11-kit-proxy.so, GnuTLS, `p11-kit list-modules`) then see the served slots with no
environment variable. The file says `remote: unix:path=SOCKET`; it is written when serve starts
and removed when it stops.

Where: p11-kit reads user module files (~/.config/pkcs11/modules) only for a user that is not
root; root's p11-kit reads the system folder alone (/etc/pkcs11/modules; checked with p11-kit
0.24: a user file is ignored for root).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SYSTEM_DIR = Path("/etc/pkcs11/modules")
MARK = "# written by ckdemo serve"


class ModuleFileError(Exception):
    """The file cannot be written (or belongs to someone else): one line."""


def module_dir() -> Path:
    if os.geteuid() == 0:
        return SYSTEM_DIR
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "pkcs11" / "modules"


def write(name: str, socket_path: Path, home: Path, folder: Path | None = None) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise ModuleFileError(f"a p11-kit module name is letters, digits, '.', '-' or '_', not {name!r}")
    folder = folder or module_dir()
    path = folder / f"{name}.module"
    if path.exists() and MARK not in path.read_text(errors="replace"):
        raise ModuleFileError(f"{path} exists and is not ckdemo's: choose another --p11-kit-module name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"{MARK} (pid {os.getpid()}) for {home}; removed when it stops\n"
            f"remote: unix:path={Path(socket_path).resolve()}\n"
        )
    except OSError as exc:
        raise ModuleFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def remove(path: Path) -> None:
    try:
        if MARK in path.read_text(errors="replace"):
            path.unlink()
    except OSError:
        pass  # gone already: the state we wanted
