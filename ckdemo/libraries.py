"""Where this machine keeps the shared libraries ckdemo loads or hands to others: SoftHSM2's
PKCS#11 module, p11-kit's client and proxy modules, and OpenSSL's engine "pkcs11" (libp11).

Looked for, never assumed: Debian puts them under its multiarch folder (x86_64-linux-gnu,
aarch64-linux-gnu, ...), Fedora under /usr/lib64. The candidates come in this order, each asked
for only when the ones before are missing (a tool started costs milliseconds):
the known fixed paths, the multiarch folder (`dpkg-architecture -qDEB_HOST_MULTIARCH`, else
`gcc -print-multiarch`, else the machine's name), p11-kit's module folder
(`pkg-config --variable=p11_module_path p11-kit-1`), then the Fedora and /usr/local folders.

Standard library only: scripts/bootstrap asks it with the system python3 before any venv exists,

    python3 -m ckdemo.libraries softhsm2        -> the path, or one line naming the package, exit 1
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

from .childenv import child_environment

TOOL_TIMEOUT_S = 5


@dataclass(frozen=True)
class Library:
    name: str  # the key scripts ask for (`python3 -m ckdemo.libraries softhsm2`)
    file: str  # the file name, e.g. libsofthsm2.so
    what: str  # what it is, for the line that says it is missing
    debian_package: str
    fixed: tuple[str, ...]  # known full paths, tried first
    under_multiarch: tuple[str, ...]  # folders below /usr/lib/<multiarch>/
    in_p11_module_dir: bool  # a PKCS#11 module p11-kit's module folder may hold
    other_dirs: tuple[str, ...]  # Fedora, /usr/local, ...


SOFTHSM2 = Library(
    "softhsm2",
    "libsofthsm2.so",
    "SoftHSM2's PKCS#11 module",
    "softhsm2",
    fixed=("/usr/lib/softhsm/libsofthsm2.so",),  # Debian and Ubuntu, every architecture
    under_multiarch=("softhsm",),
    in_p11_module_dir=True,
    other_dirs=("/usr/lib64/pkcs11", "/usr/lib64/softhsm", "/usr/lib/pkcs11", "/usr/local/lib/softhsm"),
)
P11KIT_CLIENT = Library(
    "p11-kit-client",
    "p11-kit-client.so",
    "p11-kit's client module",
    "p11-kit-modules",
    fixed=(),
    under_multiarch=("pkcs11",),
    in_p11_module_dir=True,
    other_dirs=("/usr/lib64/pkcs11", "/usr/lib/pkcs11", "/usr/local/lib/pkcs11"),
)
OPENSSL_PKCS11_ENGINE = Library(
    "openssl-pkcs11-engine",
    "pkcs11.so",
    'OpenSSL\'s engine "pkcs11" (libp11)',
    "libengine-pkcs11-openssl",
    fixed=(),
    under_multiarch=("engines-3",),
    in_p11_module_dir=False,
    other_dirs=("/usr/lib64/engines-3", "/usr/local/lib/engines-3"),
)
P11KIT_PROXY = Library(
    "p11-kit-proxy",
    "p11-kit-proxy.so",
    "p11-kit's proxy module (the modules p11-kit is configured with, as one)",
    "p11-kit",
    fixed=(),
    under_multiarch=("",),  # /usr/lib/<multiarch>/p11-kit-proxy.so
    in_p11_module_dir=False,
    other_dirs=("/usr/lib64", "/usr/local/lib"),
)
KNOWN = {library.name: library for library in (SOFTHSM2, P11KIT_CLIENT, OPENSSL_PKCS11_ENGINE, P11KIT_PROXY)}


class LibraryNotFound(Exception):
    """One line for the user: what is missing and which package brings it."""


def tool_output(*command: str) -> str:
    """What a tool prints on one line, or "" when it is missing or fails."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, env=child_environment()
        )  # never the CKDEMO_*PIN* variables
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


@functools.cache
def multiarch() -> str:
    """Debian's multiarch triplet of this machine, e.g. x86_64-linux-gnu."""
    return (
        tool_output("dpkg-architecture", "-qDEB_HOST_MULTIARCH")
        or tool_output("gcc", "-print-multiarch")
        or f"{platform.machine()}-linux-gnu"
    )


@functools.cache
def p11_module_dir() -> str:
    """Where p11-kit looks for PKCS#11 modules, when its pkg-config file is installed."""
    return tool_output("pkg-config", "--variable=p11_module_path", "p11-kit-1")


def candidates(
    library: Library,
    multiarch: Callable[[], str] = multiarch,
    p11_module_dir: Callable[[], str] = p11_module_dir,
) -> Iterator[str]:
    """Every path worth trying, in order; the folders that need a tool are asked for lazily."""
    yield from library.fixed
    for folder in library.under_multiarch:
        yield os.path.join("/usr/lib", multiarch(), folder, library.file)
    if library.in_p11_module_dir and (module_dir := p11_module_dir()):
        yield os.path.join(module_dir, library.file)
    for folder in library.other_dirs:
        yield os.path.join(folder, library.file)


def find(
    library: Library,
    exists: Callable[[str], bool] = os.path.exists,
    multiarch: Callable[[], str] = multiarch,
    p11_module_dir: Callable[[], str] = p11_module_dir,
) -> str:
    """The first candidate that exists; LibraryNotFound says which package to install."""
    tried = []
    for path in candidates(library, multiarch, p11_module_dir):
        if exists(path):
            return path
        tried.append(path)
    raise LibraryNotFound(
        f"{library.what} ({library.file}) is not installed; on Debian or Ubuntu: "
        f"apt-get install {library.debian_package} (looked in "
        f"{', '.join(dict.fromkeys(os.path.dirname(p) for p in tried))})"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in KNOWN:
        print(f"usage: python3 -m ckdemo.libraries {{{','.join(KNOWN)}}}", file=sys.stderr)
        return 2
    try:
        print(find(KNOWN[argv[0]]))
    except LibraryNotFound as missing:
        print(missing, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
