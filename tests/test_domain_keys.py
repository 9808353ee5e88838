"""The HA group's domain keys as a user meets them: `init` leaves the group ready, HA Init (50)
replaces the weak key of earlier versions and says what it did.
Token state is read back straight on the members, outside ckdemo (pkcs11-tool, python-pkcs11).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import MEMBERS, SO_PIN, SOFTHSM_LIB, USER_PIN, requires_softhsm, softhsm_env

pytestmark = requires_softhsm

HA_SLOT = 5
LEGACY_ID = b"ckdemo-ha-domain"
GENERATE = f"""\
51
{HA_SLOT}
{USER_PIN}
1
{HA_SLOT}
y
45
${{LAST_SESSION}}
4
ready-ec
y
y
n
0
"""

PLANT_WEAK_KEY = """
import os, sys, pkcs11
from pkcs11 import Attribute as A, ObjectClass, KeyType
lib = pkcs11.lib(sys.argv[1])
for token in lib.get_tokens():
    if not token.label.startswith("member"):
        continue
    with token.open(rw=True, so_pin=sys.argv[2]) as session:  # as ckdemo 0.1's HA Init made it
        session.create_object({A.CLASS: ObjectClass.SECRET_KEY, A.KEY_TYPE: KeyType.AES,
            A.VALUE: os.urandom(32), A.TOKEN: True, A.PRIVATE: False, A.SENSITIVE: True,
            A.EXTRACTABLE: False, A.TRUSTED: True, A.WRAP: True, A.UNWRAP: True,
            A.ENCRYPT: False, A.DECRYPT: False, A.ID: b"ckdemo-ha-domain",
            A.LABEL: "ckdemo HA domain key"})
"""


def domain_key_ids(home: Path, member: str) -> list[bytes]:
    listed = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            SOFTHSM_LIB,
            "--token-label",
            member,
            "--list-objects",
            "--type",
            "secrkey",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=softhsm_env(home),
    )
    assert listed.returncode == 0, listed.stderr
    return [
        bytes.fromhex(line.split(":", 1)[1].strip())
        for line in listed.stdout.splitlines()
        if line.strip().startswith("ID:")
    ]


def test_init_leaves_the_group_ready_for_key_generation(home, menu, run_ckdemo):
    for member in MEMBERS:  # eight domain keys, public objects: listed without a login
        assert sorted(domain_key_ids(home, member)) == sorted(
            b"ckdemo-ha-domain/g1/" + kind + family
            for kind in (b"rsa", b"ec", b"aes", b"generic")
            for family in (b"", b"pub")
        )
    code, out = menu(home, GENERATE)  # no HA Init (50) first
    assert code == 0, out
    assert "replicated: 2 object(s) to 2 member(s)" in out
    again = run_ckdemo(home, "init")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr


def test_ha_init_replaces_the_weak_key_of_an_earlier_version(home, menu):
    planted = subprocess.run(
        [sys.executable, "-c", PLANT_WEAK_KEY, SOFTHSM_LIB, SO_PIN],
        capture_output=True,
        text=True,
        timeout=60,
        env=softhsm_env(home),
    )
    assert planted.returncode == 0, planted.stderr
    assert all(LEGACY_ID in domain_key_ids(home, m) for m in MEMBERS)
    code, out = menu(home, f"50\n{HA_SLOT}\n{SO_PIN}\n0\n")
    assert code == 0, out
    assert (
        "Weak HA domain key of an earlier version (public, destroyable, no unwrap template) "
        "destroyed on 3 member(s)" in out
    )
    for member in MEMBERS:
        ids = domain_key_ids(home, member)
        assert LEGACY_ID not in ids and b"ckdemo-ha-domain/g1/rsa" in ids, (member, ids)
    code, out = menu(home, GENERATE)
    assert code == 0, out
