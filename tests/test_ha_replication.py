"""Replication checked from outside: OpenSC pkcs11-tool, in a process of its own, reads each member.

Keys are generated on the HA slot (in process, private copy of libsofthsm2.so); pkcs11-tool then
loads the system libsofthsm2.so with the same home's SoftHSM2 config and looks at one member
token at a time. Public keys it reads back verify signatures made through the HA slot.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from ckdemo.codes import CKR_ATTRIBUTE_SENSITIVE, CKRError
from ckdemo.model import (
    CKA_CLASS,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_MODULUS,
    CKA_PUBLIC_EXPONENT,
    CKA_SENSITIVE,
    CKA_VALUE,
    CKM_ECDSA,
    CKM_SHA256_RSA_PKCS,
    CKO_PRIVATE_KEY,
    CKO_SECRET_KEY,
    CKU_USER,
    KeySpec,
)
from conftest import MEMBERS, SO_PIN, SOFTHSM_LIB, USER_PIN, requires_softhsm, softhsm_env
from support import DOMAIN_KEYS, private_workspace

pytestmark = requires_softhsm

CKA_PRIVATE_EXPONENT = 0x123
KEYS = {  # label: (spec, CKA_ID hex)
    "rep-rsa": (KeySpec("rsa", 2048, "rep-rsa", bytes.fromhex("a1a1a1a1")), "a1a1a1a1"),
    "rep-ec": (KeySpec("ec", "P-256", "rep-ec", bytes.fromhex("b2b2b2b2")), "b2b2b2b2"),
    "rep-aes": (KeySpec("aes", 32, "rep-aes", bytes.fromhex("c3c3c3c3")), "c3c3c3c3"),
}
EXPECTED = {  # (object type as pkcs11-tool names it, label, id) every member must list
    ("Public Key Object; RSA", "rep-rsa", "a1a1a1a1"),
    ("Private Key Object; RSA", "rep-rsa", "a1a1a1a1"),
    ("Public Key Object; EC", "rep-ec", "b2b2b2b2"),
    ("Private Key Object; EC", "rep-ec", "b2b2b2b2"),
    ("Secret Key Object; AES", "rep-aes", "c3c3c3c3"),
}


@pytest.fixture(scope="module")
def ha(tmp_path_factory):
    """(home, group, session, {label: handles}) with the three keys generated on the HA slot."""
    tmp = tmp_path_factory.mktemp("ha-replication")
    home, workspace, _ = private_workspace(tmp, members=len(MEMBERS))
    group = workspace.slots[-1]
    assert group in workspace.groups and [m.label for m in group.members] == list(MEMBERS)
    group.ha_init(SO_PIN)
    group.login(CKU_USER, USER_PIN)
    session = group.open_session()
    handles = {label: session.generate(spec) for label, (spec, _) in KEYS.items()}
    assert all(m.active for m in group.members)
    return home, group, session, handles


def tool(home: Path, member: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            SOFTHSM_LIB,
            "--token-label",
            member,
            "--login",
            "--pin",
            USER_PIN,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=softhsm_env(home),
    )
    assert done.returncode == 0, done.stderr
    return done


def listed_objects(home: Path, member: str) -> list[dict[str, str]]:
    """pkcs11-tool --list-objects as [{'type': 'Private Key Object; RSA', 'label': .., ...}]."""
    objects = []
    for line in tool(home, member, "--list-objects").stdout.splitlines():
        if ("Object;" in line or line.startswith("Data object")) and not line.startswith(" "):
            kind = re.match(r"(\w+ Key Object; \w+|Data object)", line.strip())
            objects.append({"type": kind.group(1) if kind else line.strip(), "line": line.strip()})
        elif objects and ":" in line and line.startswith("  "):
            name, _, value = line.strip().partition(":")
            objects[-1][name.strip().lower()] = value.strip()
    return objects


@pytest.fixture(scope="module")
def listings(ha) -> dict[str, list[dict[str, str]]]:
    home = ha[0]
    return {member: listed_objects(home, member) for member in MEMBERS}


@pytest.fixture(scope="module")
def public_keys(ha, tmp_path_factory) -> dict[tuple[str, str], bytes]:
    """(member, label) -> DER SubjectPublicKeyInfo read by pkcs11-tool from that member alone."""
    home, out = ha[0], tmp_path_factory.mktemp("pubkeys")
    found = {}
    for member in MEMBERS:
        for label in ("rep-rsa", "rep-ec"):
            path = out / f"{member}-{label}.der"
            tool(
                home,
                member,
                "--read-object",
                "--type",
                "pubkey",
                "--id",
                KEYS[label][1],
                "--output-file",
                str(path),
            )
            found[(member, label)] = path.read_bytes()
    return found


def test_every_member_lists_the_keys_generated_on_the_ha_slot(listings):
    for member, objects in listings.items():
        seen = {(o["type"], o.get("label"), o.get("id")) for o in objects}
        assert EXPECTED <= seen, f"{member} lacks {EXPECTED - seen}"


def test_members_list_the_same_objects(listings):
    views = {
        member: sorted((o["type"], o.get("label", ""), o.get("id", "")) for o in objects)
        for member, objects in listings.items()
    }
    first = views[MEMBERS[0]]
    assert len(first) == len(EXPECTED) + DOMAIN_KEYS + 1  # + the HA domain keys and journal mark
    for member in MEMBERS[1:]:
        assert views[member] == first, member


def test_private_and_secret_keys_are_sensitive_on_every_member(listings):
    for member, objects in listings.items():
        keys = [o for o in objects if o["type"].startswith(("Private Key", "Secret Key"))]
        assert len(keys) == 3 + DOMAIN_KEYS, keys  # RSA, EC, AES and the HA domain keys
        for o in keys:
            access = [a.strip() for a in o.get("access", "").split(",")]
            assert "sensitive" in access, f"{member}: {o}"


def test_public_keys_identical_on_every_member(public_keys):
    for label in ("rep-rsa", "rep-ec"):
        values = {member: public_keys[(member, label)] for member in MEMBERS}
        assert len(set(values.values())) == 1, f"{label} differs between members"
        key = serialization.load_der_public_key(values[MEMBERS[0]])
        assert key.key_size == (2048 if label == "rep-rsa" else 256)


def test_public_key_read_by_pkcs11_tool_matches_the_ha_slot(ha, public_keys):
    session, handles = ha[2], ha[3]
    values = session.get_attributes(handles["rep-rsa"][0], [CKA_MODULUS, CKA_PUBLIC_EXPONENT])
    numbers = serialization.load_der_public_key(public_keys[(MEMBERS[1], "rep-rsa")]).public_numbers()
    assert numbers.n == int.from_bytes(values[CKA_MODULUS], "big")
    assert numbers.e == int.from_bytes(values[CKA_PUBLIC_EXPONENT], "big")


def test_rsa_signature_through_ha_slot_verifies_with_any_members_public_key(ha, public_keys):
    group, session, handles = ha[1], ha[2], ha[3]
    before = {m.serial: m.calls for m in group.members}
    for n in range(len(MEMBERS)):  # round robin: each member signs once
        data = b"HA signature %d" % n
        signature = session.sign(handles["rep-rsa"][1], CKM_SHA256_RSA_PKCS, data)
        for member in MEMBERS:
            key = serialization.load_der_public_key(public_keys[(member, "rep-rsa")])
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    assert all(m.calls > before[m.serial] for m in group.members), "not every member signed"


def test_ecdsa_signature_through_ha_slot_verifies_with_any_members_public_key(ha, public_keys):
    session, handles = ha[2], ha[3]
    for n in range(len(MEMBERS)):
        data = b"HA ECDSA %d" % n
        raw = session.sign(handles["rep-ec"][1], CKM_ECDSA, hashlib.sha256(data).digest())
        assert len(raw) == 64
        der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        for member in MEMBERS:
            key = serialization.load_der_public_key(public_keys[(member, "rep-ec")])
            key.verify(der, data, ec.ECDSA(hashes.SHA256()))


def _member_key(member, key_id: str, cls: int):
    session = member.slot.open_session(rw=False)
    found = session.find_objects({CKA_CLASS: cls, CKA_ID: bytes.fromhex(key_id)})
    assert len(found) == 1, (member, key_id, found)
    return session, found[0]


@pytest.mark.parametrize(
    "label, cls, secret",
    [
        ("rep-rsa", CKO_PRIVATE_KEY, CKA_PRIVATE_EXPONENT),
        ("rep-ec", CKO_PRIVATE_KEY, CKA_VALUE),
        ("rep-aes", CKO_SECRET_KEY, CKA_VALUE),
    ],
)
def test_key_value_is_not_readable_on_any_member(ha, label, cls, secret):
    for member in ha[1].members:
        session, handle = _member_key(member, KEYS[label][1], cls)
        try:
            assert session.get_attributes(handle, [CKA_SENSITIVE])[CKA_SENSITIVE] is True
            with pytest.raises(CKRError) as caught:
                session.get_attributes(handle, [secret])
            assert caught.value.ckr == CKR_ATTRIBUTE_SENSITIVE
        finally:
            session.close()


def test_replicas_keep_the_label_and_key_type(ha):
    for member in ha[1].members:
        for label, (spec, key_id) in KEYS.items():
            cls = CKO_SECRET_KEY if spec.kind == "aes" else CKO_PRIVATE_KEY
            session, handle = _member_key(member, key_id, cls)
            try:
                values = session.get_attributes(handle, [CKA_LABEL, CKA_KEY_TYPE])
            finally:
                session.close()
            assert values[CKA_LABEL] == label
            assert values[CKA_KEY_TYPE] == {"rsa": 0x0, "ec": 0x3, "aes": 0x1F}[spec.kind]


def test_replicated_aes_key_encrypts_identically_on_every_member(ha):
    """Same AES key value everywhere: one plaintext gives one ciphertext (AES-ECB, one block).
    (SoftHSM 2.6.1 stores CKA_VALUE_LEN = 0 on any unwrapped secret key and refuses the
    attribute in an unwrap template, so the length attribute cannot be the evidence.)"""
    block = bytes(range(16))
    ciphertexts = {}
    for member in ha[1].members:
        session, handle = _member_key(member, KEYS["rep-aes"][1], CKO_SECRET_KEY)
        try:
            ciphertexts[member.label] = session.encrypt(handle, 0x1081, block)  # CKM_AES_ECB
        finally:
            session.close()
    assert len(set(ciphertexts.values())) == 1, ciphertexts
    assert block not in ciphertexts.values()
