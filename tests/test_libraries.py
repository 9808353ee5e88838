"""Finding SoftHSM2's module and p11-kit's client module (ckdemo/libraries.py): on this machine for
real, and on the layouts of other machines (another multiarch, Fedora, p11-kit's module folder)
with the file system and the tools answered by the test."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ckdemo import libraries
from ckdemo.libraries import P11KIT_CLIENT, P11KIT_PROXY, SOFTHSM2, LibraryNotFound, find

REPO = Path(__file__).resolve().parent.parent


def only(*paths: str):
    return lambda path: path in paths


def never_asked() -> str:
    raise AssertionError("a tool was started although a fixed path was there")


def test_this_machine_has_both_where_its_own_tools_say():
    softhsm, client = find(SOFTHSM2), find(P11KIT_CLIENT)
    assert Path(softhsm).is_file() and Path(client).is_file()
    if shutil.which("dpkg-architecture"):
        triplet = subprocess.run(
            ["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert libraries.multiarch() == triplet
        assert client == f"/usr/lib/{triplet}/pkcs11/p11-kit-client.so"


def test_debian_softhsm_path_needs_no_tool():
    assert (
        find(SOFTHSM2, only("/usr/lib/softhsm/libsofthsm2.so"), never_asked, never_asked)
        == "/usr/lib/softhsm/libsofthsm2.so"
    )


def test_another_multiarch_folder():
    path = "/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so"
    assert find(P11KIT_CLIENT, only(path), lambda: "aarch64-linux-gnu", lambda: "") == path
    path = "/usr/lib/riscv64-linux-gnu/softhsm/libsofthsm2.so"
    assert find(SOFTHSM2, only(path), lambda: "riscv64-linux-gnu", lambda: "") == path


def test_p11_kit_proxy_in_the_multiarch_folder_itself_and_on_fedora():
    path = "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so"
    assert find(P11KIT_PROXY, only(path), lambda: "aarch64-linux-gnu", never_asked) == path
    assert find(
        P11KIT_PROXY, only("/usr/lib64/p11-kit-proxy.so"), lambda: "x86_64-linux-gnu", never_asked
    ) == ("/usr/lib64/p11-kit-proxy.so")


def test_p11_kit_module_folder_from_pkg_config():
    path = "/opt/p11/modules/p11-kit-client.so"
    assert find(P11KIT_CLIENT, only(path), lambda: "x86_64-linux-gnu", lambda: "/opt/p11/modules") == path


def test_fedora_layout():
    assert (
        find(SOFTHSM2, only("/usr/lib64/pkcs11/libsofthsm2.so"), lambda: "x86_64-linux-gnu", lambda: "")
        == "/usr/lib64/pkcs11/libsofthsm2.so"
    )
    assert (
        find(
            P11KIT_CLIENT, only("/usr/lib64/pkcs11/p11-kit-client.so"), lambda: "x86_64-linux-gnu", lambda: ""
        )
        == "/usr/lib64/pkcs11/p11-kit-client.so"
    )


@pytest.mark.parametrize("library, package", [(SOFTHSM2, "softhsm2"), (P11KIT_CLIENT, "p11-kit-modules")])
def test_missing_is_one_line_naming_the_debian_package(library, package):
    with pytest.raises(LibraryNotFound) as missing:
        find(library, only(), lambda: "x86_64-linux-gnu", lambda: "/usr/lib/x86_64-linux-gnu/pkcs11")
    line = str(missing.value)
    assert "\n" not in line and f"apt-get install {package}" in line
    assert "/usr/lib/x86_64-linux-gnu/" in line  # where it looked


def test_scripts_ask_it_from_the_command_line():
    found = subprocess.run(
        [sys.executable, "-m", "ckdemo.libraries", "p11-kit-client"], cwd=REPO, capture_output=True, text=True
    )
    assert (found.returncode, found.stdout.strip()) == (0, find(P11KIT_CLIENT))
    wrong = subprocess.run(
        [sys.executable, "-m", "ckdemo.libraries", "libfoo"], cwd=REPO, capture_output=True, text=True
    )
    assert wrong.returncode == 2 and wrong.stderr.startswith("usage:")


def test_no_debian_x86_64_path_left_in_the_code():
    """One place knows the paths: nothing else in the package or scripts names a multiarch folder,
    nor do the tests (but this file's layouts of other machines; Debian's SoftHSM2 path, the same
    on every architecture, they may name)."""
    multiarch = re.compile(r"/usr/lib/(x86_64|aarch64)-linux-gnu")
    literal = re.compile(rf"{multiarch.pattern}|/usr/lib/softhsm/libsofthsm2\.so")
    files = [p for p in (REPO / "ckdemo").rglob("*.py") if p.name != "libraries.py"]
    files += [p for p in (REPO / "scripts").iterdir() if p.is_file()]
    tests = [p for p in (REPO / "tests").rglob("*.py") if p.name != "test_libraries.py"]
    assert [str(p) for p in files if literal.search(p.read_text(errors="replace"))] == []
    assert [str(p) for p in tests if multiarch.search(p.read_text(errors="replace"))] == []
