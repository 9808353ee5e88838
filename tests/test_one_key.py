"""A key on the HA slot is one key: it keeps the attributes its template asked for, on the HA
slot and on every member's copy, whichever member answers, and it still reaches a member that
comes back after the application made it unextractable (ckdemo/ha/vault.py).

Through `ckdemo serve` with our RPC client; every member's own copy is read straight from its
token by python-pkcs11 in a process of its own (nothing of ckdemo), with the user PIN only."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

from conftest import MEMBERS, SOFTHSM_LIB, USER_PIN, requires_softhsm, softhsm_env
from test_one_token import HA_SLOT, connect, session_on

from ckdemo import codes
from ckdemo.rpc import Attribute, AttributeSize, Mechanism

pytestmark = requires_softhsm

CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_ID = 0x0, 0x1, 0x2, 0x3, 0x102
CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_LOCAL, CKA_NEVER_EXTRACTABLE = 0x103, 0x162, 0x163, 0x164
CKA_ALWAYS_SENSITIVE, CKA_KEY_GEN_MECHANISM, CKA_VALUE_LEN = 0x165, 0x166, 0x161
CKA_WRAP_WITH_TRUSTED, CKA_SIGN, CKA_EC_PARAMS, CKA_WRAP, CKA_UNWRAP = 0x210, 0x108, 0x180, 0x106, 0x107
CKA_ENCRYPT = 0x104
CKM_AES_KEY_GEN, CKM_EC_KEY_PAIR_GEN, CKM_ECDSA, CKM_AES_KEY_WRAP_PAD = 0x1080, 0x1040, 0x1041, 0x210A
CKO_PRIVATE_KEY, CKO_SECRET_KEY = 3, 4
P256 = bytes.fromhex("06082a8648ce3d030107")
FACTS = (
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_LOCAL,
    CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_WRAP_WITH_TRUSTED,
)

ON_THE_MEMBER = """
import json, sys, pkcs11
from pkcs11 import Attribute
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
found = []
with token.open(user_pin=sys.argv[3]) as session:
    for key in session.get_objects({Attribute.LABEL: sys.argv[4]}):
        row = {}
        for name in ("CLASS", "SENSITIVE", "EXTRACTABLE", "WRAP_WITH_TRUSTED"):
            try:
                row[name] = int(key[getattr(Attribute, name)])
            except pkcs11.PKCS11Error as error:
                row[name] = type(error).__name__
        found.append(row)
print(json.dumps(found))
"""


def on_the_member(home, member: str, label: str) -> list[dict]:
    """The member's own objects of that label, as python-pkcs11 reads them from its token."""
    done = subprocess.run(
        [sys.executable, "-c", ON_THE_MEMBER, SOFTHSM_LIB, member, USER_PIN, label],
        capture_output=True,
        text=True,
        timeout=60,
        env=softhsm_env(home),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def read(client, session, handle, attributes=FACTS) -> dict[int, int]:
    values, _ = client.ok(
        "C_GetAttributeValue", session, handle, tuple(AttributeSize(a, 8) for a in attributes)
    )
    return {v.type: v.value for v in values}


def found(client, session, *template) -> list[int]:
    client.ok("C_FindObjectsInit", session, template)
    (handles,) = client.ok("C_FindObjects", session, 50)
    client.ok("C_FindObjectsFinal", session)
    return list(handles)


@contextmanager
def member_out(run_ckdemo, home, member: str) -> Iterator[None]:
    """MEMBER failed in the running serve for the block, restored after it, then recovered."""
    failed = run_ckdemo(home, "member", "fail", member)
    assert failed.returncode == 0, failed.stdout + failed.stderr
    try:
        yield
    finally:
        restored = run_ckdemo(home, "member", "restore", member)
        assert restored.returncode == 0, restored.stdout + restored.stderr
    recovered = run_ckdemo(home, "hagroup", "recover")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr


def noticed(client, session) -> None:
    """Every member has its turn: the failed one is found failed."""
    for _ in range(4):
        client.ok("C_GenerateRandom", session, 8)


def test_an_unextractable_key_is_unextractable_everywhere_and_answers_as_one_token(served):
    """EXTRACTABLE=FALSE as asked; LOCAL, ALWAYS_SENSITIVE,
    NEVER_EXTRACTABLE, KEY_GEN_MECHANISM, VALUE_LEN as one token answers for a generated key,
    whichever member answers (the replicas were unwrapped: alone they say LOCAL FALSE)."""
    with session_on(served) as (client, session):
        (aes,) = client.ok(
            "C_GenerateKey",
            session,
            Mechanism(CKM_AES_KEY_GEN),
            (
                Attribute(CKA_VALUE_LEN, 32),
                Attribute(CKA_TOKEN, 1),
                Attribute(CKA_SENSITIVE, 1),
                Attribute(CKA_EXTRACTABLE, 0),
                Attribute(CKA_LABEL, b"one-key-aes"),
            ),
        )
        _, private = client.ok(
            "C_GenerateKeyPair",
            session,
            Mechanism(CKM_EC_KEY_PAIR_GEN),
            (Attribute(CKA_TOKEN, 1), Attribute(CKA_EC_PARAMS, P256), Attribute(CKA_LABEL, b"one-key-ec")),
            (
                Attribute(CKA_TOKEN, 1),
                Attribute(CKA_SENSITIVE, 1),
                Attribute(CKA_SIGN, 1),
                Attribute(CKA_EXTRACTABLE, 0),
                Attribute(CKA_LABEL, b"one-key-ec"),
            ),
        )
        one_token = {
            CKA_SENSITIVE: 1,
            CKA_EXTRACTABLE: 0,
            CKA_LOCAL: 1,
            CKA_NEVER_EXTRACTABLE: 1,
            CKA_ALWAYS_SENSITIVE: 1,
            CKA_WRAP_WITH_TRUSTED: 0,
        }
        for _ in range(6):  # the calls go round the three members
            assert read(client, session, aes) == one_token
            assert read(client, session, private) == one_token
            assert read(client, session, aes, (CKA_KEY_GEN_MECHANISM, CKA_VALUE_LEN)) == {
                CKA_KEY_GEN_MECHANISM: CKM_AES_KEY_GEN,
                CKA_VALUE_LEN: 32,
            }
            # searched by what only the record can answer: found every time
            assert found(
                client,
                session,
                Attribute(CKA_LABEL, b"one-key-aes"),
                Attribute(CKA_LOCAL, 1),
                Attribute(CKA_NEVER_EXTRACTABLE, 1),
            ) == [aes]
            assert found(client, session, Attribute(CKA_LABEL, b"one-key-aes"), Attribute(CKA_LOCAL, 0)) == []
        for member in MEMBERS:
            for label in ("one-key-aes", "one-key-ec"):
                keys = [
                    k
                    for k in on_the_member(served.home, member, label)
                    if k["CLASS"] in (CKO_PRIVATE_KEY, CKO_SECRET_KEY)
                ]
                assert len(keys) == 1 and keys[0]["EXTRACTABLE"] == 0 and keys[0]["SENSITIVE"] == 1, (
                    member,
                    label,
                    keys,
                )


def test_an_extractable_key_wraps_under_the_applications_own_key_on_every_member(served):
    """A sensitive key made EXTRACTABLE=TRUE without WRAP_WITH_TRUSTED is what
    the application may wrap under a key of its own, as on one token (the HA slot used to make
    every key wrap-with-trusted: CKR_KEY_NOT_WRAPPABLE)."""
    with session_on(served) as (client, session):
        (wrapper,) = client.ok(
            "C_GenerateKey",
            session,
            Mechanism(CKM_AES_KEY_GEN),
            (
                Attribute(CKA_VALUE_LEN, 32),
                Attribute(CKA_WRAP, 1),
                Attribute(CKA_UNWRAP, 1),
                Attribute(CKA_SENSITIVE, 1),
            ),
        )
        (key,) = client.ok(
            "C_GenerateKey",
            session,
            Mechanism(CKM_AES_KEY_GEN),
            (Attribute(CKA_VALUE_LEN, 16), Attribute(CKA_SENSITIVE, 1), Attribute(CKA_EXTRACTABLE, 1)),
        )
        blobs = set()
        for _ in range(6):
            assert read(client, session, key)[CKA_WRAP_WITH_TRUSTED] == 0
            (blob,) = client.ok("C_WrapKey", session, Mechanism(CKM_AES_KEY_WRAP_PAD), wrapper, key, 64)
            blobs.add(bytes(blob))
        assert len(blobs) == 1  # the same key under the same key on every member


def test_a_key_made_unextractable_later_reaches_a_member_that_comes_back(served, run_ckdemo):
    """Member down, key pair generated extractable, private key then made
    unextractable (CKR_OK, as on one token), member back: the key reaches it (it used to be
    "not copied ... CKR_KEY_UNEXTRACTABLE" and found by every second search)."""
    home = served.home
    failed = run_ckdemo(home, "member", "fail", "member1")
    assert failed.returncode == 0, failed.stdout + failed.stderr
    try:
        with session_on(served) as (client, session):
            for _ in range(4):  # every member has its turn: member1 is found failed
                client.ok("C_GenerateRandom", session, 8)
            _, private = client.ok(
                "C_GenerateKeyPair",
                session,
                Mechanism(CKM_EC_KEY_PAIR_GEN),
                (Attribute(CKA_TOKEN, 1), Attribute(CKA_EC_PARAMS, P256), Attribute(CKA_LABEL, b"hardened")),
                (
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_SENSITIVE, 1),
                    Attribute(CKA_SIGN, 1),
                    Attribute(CKA_EXTRACTABLE, 1),
                    Attribute(CKA_LABEL, b"hardened"),
                ),
            )
            client.ok("C_SetAttributeValue", session, private, (Attribute(CKA_EXTRACTABLE, 0),))
    finally:
        restored = run_ckdemo(home, "member", "restore", "member1")
        assert restored.returncode == 0, restored.stdout + restored.stderr
    recovered = run_ckdemo(home, "hagroup", "recover")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    with session_on(served) as (client, session):
        counts = [
            len(
                found(
                    client, session, Attribute(CKA_CLASS, CKO_PRIVATE_KEY), Attribute(CKA_LABEL, b"hardened")
                )
            )
            for _ in range(6)
        ]
        assert counts == [1] * 6, counts
        (key,) = found(
            client, session, Attribute(CKA_CLASS, CKO_PRIVATE_KEY), Attribute(CKA_LABEL, b"hardened")
        )
        for _ in range(6):  # every member signs with it
            assert read(client, session, key)[CKA_EXTRACTABLE] == 0
            client.ok("C_SignInit", session, Mechanism(CKM_ECDSA), key)
            client.ok("C_Sign", session, b"h" * 32, 64)
    copies = [k for k in on_the_member(home, "member1", "hardened") if k["CLASS"] == CKO_PRIVATE_KEY]
    assert len(copies) == 1 and copies[0]["EXTRACTABLE"] == 0, copies
    assert "not copied" not in (home / "ha.log").read_text() if (home / "ha.log").exists() else True


def test_nothing_kept_gives_a_user_pin_holder_the_key(served):
    """The records kept for unextractable keys hold no key material in the clear: each blob is
    the key wrapped under the domain key (tests/test_attacks.py unwraps them every weaker way)."""
    with session_on(served) as (client, session):
        (aes,) = client.ok(
            "C_GenerateKey",
            session,
            Mechanism(CKM_AES_KEY_GEN),
            (
                Attribute(CKA_VALUE_LEN, 32),
                Attribute(CKA_TOKEN, 1),
                Attribute(CKA_SENSITIVE, 1),
                Attribute(CKA_EXTRACTABLE, 0),
                Attribute(CKA_ENCRYPT, 1),
                Attribute(CKA_LABEL, b"kept"),
            ),
        )
        reply = client.call("C_GetAttributeValue", session, aes, (AttributeSize(0x11, 64),))
        assert reply.is_error is False or codes.ckr_name(reply.ckr) == "CKR_ATTRIBUTE_SENSITIVE"
    records = [json.loads(p.read_text()) for p in (served.home / "state").glob("vault-*/*.json")]
    mine = [r for r in records if r["label"] == "kept"]
    assert len(mine) == 1 and mine[0]["blob"] and mine[0]["generation"] is not None, mine
    folder = next((served.home / "state").glob("vault-*"))
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in folder.glob("*.json"))


def test_a_new_application_sees_the_same_answers(served):
    """The record is the home's, not the connection's: another application reads the same."""
    with session_on(served) as (client, session):
        client.ok(
            "C_GenerateKey",
            session,
            Mechanism(CKM_AES_KEY_GEN),
            (
                Attribute(CKA_VALUE_LEN, 16),
                Attribute(CKA_TOKEN, 1),
                Attribute(CKA_SENSITIVE, 1),
                Attribute(CKA_LABEL, b"seen-later"),
            ),
        )
    other = connect(served)
    try:
        (session,) = other.ok("C_OpenSession", HA_SLOT, 0x6)
        other.ok("C_Login", session, 1, USER_PIN.encode())
        (key,) = found(other, session, Attribute(CKA_LABEL, b"seen-later"))
        for _ in range(6):
            assert read(other, session, key)[CKA_NEVER_EXTRACTABLE] == 1  # EXTRACTABLE not given: FALSE
            assert read(other, session, key)[CKA_LOCAL] == 1
    finally:
        other.close()


def test_usage_flags_a_template_does_not_give_are_the_tokens_defaults(served):
    """Differential test defect 3: the members generated through python-pkcs11, which writes its
    own defaults into every template (a generic secret key: SIGN, ENCRYPT ... FALSE; an EC private
    key: DERIVE TRUE). One SoftHSM2 2.6.1 token gives (measured straight on a token with ctypes):
    secret keys ENCRYPT, DECRYPT, SIGN, VERIFY, WRAP, UNWRAP TRUE and DERIVE FALSE; EC public
    keys ENCRYPT, VERIFY, WRAP TRUE, DERIVE FALSE; EC private keys DECRYPT, SIGN, UNWRAP TRUE,
    DERIVE FALSE."""
    usage = (0x104, 0x105, 0x108, 0x10A, 0x106, 0x107, 0x10C)  # ENCRYPT ... DERIVE
    secret = dict(zip(usage, (1, 1, 1, 1, 1, 1, 0)))
    with session_on(served) as (client, session):
        keys = {}
        for mechanism in (0x1080, 0x350):  # AES, generic secret
            (keys[mechanism],) = client.ok(
                "C_GenerateKey",
                session,
                Mechanism(mechanism),
                (Attribute(CKA_VALUE_LEN, 16), Attribute(CKA_SENSITIVE, 1)),
            )
        public, private = client.ok(
            "C_GenerateKeyPair",
            session,
            Mechanism(CKM_EC_KEY_PAIR_GEN),
            (Attribute(CKA_EC_PARAMS, P256),),
            (),
        )
        for _ in range(3):  # whichever member answers
            for key in keys.values():
                assert read(client, session, key, usage) == secret
            assert {a: v for a, v in read(client, session, public, (0x104, 0x10A, 0x106, 0x10C)).items()} == {
                0x104: 1,
                0x10A: 1,
                0x106: 1,
                0x10C: 0,
            }
            assert read(client, session, private, (0x105, 0x108, 0x107, 0x10C)) == {
                0x105: 1,
                0x108: 1,
                0x107: 1,
                0x10C: 0,
            }


def test_a_created_key_neither_sensitive_nor_extractable_reaches_a_member_that_comes_back(served, run_ckdemo):
    """SoftHSM2's default for a bare template: not sensitive, not extractable. No one may read
    its value, so a member that missed it could not get it (the HA login logged "not copied ...
    CKR_ATTRIBUTE_SENSITIVE" again and again in the differential test): it is kept too, and the
    copy from the record reads CKA_SENSITIVE FALSE as asked."""
    home = served.home
    assert run_ckdemo(home, "member", "fail", "member2").returncode == 0
    try:
        with session_on(served) as (client, session):
            for _ in range(4):  # member2 is found failed
                client.ok("C_GenerateRandom", session, 8)
            (key,) = client.ok(
                "C_CreateObject",
                session,
                (
                    Attribute(CKA_CLASS, CKO_SECRET_KEY),
                    Attribute(0x100, 0x1F),
                    Attribute(0x11, b"k" * 16),
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_ENCRYPT, 1),
                    Attribute(CKA_LABEL, b"bare-created"),
                ),
            )
    finally:
        assert run_ckdemo(home, "member", "restore", "member2").returncode == 0
    assert run_ckdemo(home, "hagroup", "recover").returncode == 0
    with session_on(served) as (client, session):  # (the HA login completes what members lack)
        copies = [k for k in on_the_member(home, "member2", "bare-created") if k["CLASS"] == CKO_SECRET_KEY]
        assert len(copies) == 1 and copies[0]["EXTRACTABLE"] == 0, copies
        (found_key,) = found(client, session, Attribute(CKA_LABEL, b"bare-created"))
        for _ in range(6):
            assert read(client, session, found_key, (CKA_SENSITIVE, CKA_EXTRACTABLE)) == {
                CKA_SENSITIVE: 0,
                CKA_EXTRACTABLE: 0,
            }
            client.ok("C_EncryptInit", session, Mechanism(0x1081), found_key)  # CKM_AES_ECB
            (block,) = client.ok("C_Encrypt", session, bytes(16), 64)
            assert len(block) == 16
        client.ok("C_DestroyObject", session, found_key)


def test_a_key_neither_modifiable_nor_copyable_is_made_and_reaches_a_member_that_comes_back(
    served, run_ckdemo
):
    """SoftHSM2 applies an unwrap template in its order and takes nothing after CKA_MODIFIABLE
    FALSE: a copy made by unwrap takes COPYABLE FALSE and, last, MODIFIABLE FALSE. The HA slot
    refused such keys with CKR_TEMPLATE_INCONSISTENT, where one token makes them (differential
    test, seeds 500067 and 500133: 'C_GenerateKey: CKR_OK vs CKR_TEMPLATE_INCONSISTENT')."""
    home = served.home
    CKA_MODIFIABLE, CKA_COPYABLE = 0x170, 0x171
    asked = {1: b"frozen-extractable", 0: b"frozen-unextractable"}
    with member_out(run_ckdemo, home, "member2"), session_on(served) as (client, session):
        noticed(client, session)
        for extractable, label in asked.items():
            client.ok(
                "C_GenerateKey",
                session,
                Mechanism(CKM_AES_KEY_GEN),
                (
                    Attribute(CKA_VALUE_LEN, 16),
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_ENCRYPT, 1),
                    Attribute(CKA_EXTRACTABLE, extractable),
                    Attribute(CKA_MODIFIABLE, 0),
                    Attribute(CKA_COPYABLE, 0),
                    Attribute(CKA_LABEL, label),
                ),
            )
    with session_on(served) as (client, session):
        for extractable, label in asked.items():
            for _ in range(6):  # whichever member answers
                (key,) = found(client, session, Attribute(CKA_LABEL, label))
                assert read(client, session, key, (CKA_EXTRACTABLE, CKA_MODIFIABLE, CKA_COPYABLE)) == {
                    CKA_EXTRACTABLE: extractable,
                    CKA_MODIFIABLE: 0,
                    CKA_COPYABLE: 0,
                }
                assert (
                    client.ckr("C_SetAttributeValue", session, key, (Attribute(CKA_LABEL, b"x"),))
                    == codes.CKR_ACTION_PROHIBITED
                )
                client.ok("C_EncryptInit", session, Mechanism(0x1081), key)
                client.ok("C_Encrypt", session, b"e" * 16, 64)
    for label in asked.values():
        assert [k["CLASS"] for k in on_the_member(home, "member2", label.decode())] == [CKO_SECRET_KEY]


def test_data_objects_made_or_destroyed_while_a_member_is_down_reach_it(served, run_ckdemo):
    """Recovery compared keys only: a data object made while a member was down never reached
    it, and a search served by that member missed it (differential test with remote members,
    seed 500001: a new application found 0 objects where one token holds 2)."""
    home = served.home
    with session_on(served) as (client, session):
        (doomed,) = client.ok(
            "C_CreateObject",
            session,
            (
                Attribute(CKA_CLASS, 0),
                Attribute(CKA_TOKEN, 1),
                Attribute(CKA_LABEL, b"data-doomed"),
                Attribute(0x11, b"d"),
            ),
        )
    with member_out(run_ckdemo, home, "member3"), session_on(served) as (client, session):
        noticed(client, session)
        for private in (0, 1):
            client.ok(
                "C_CreateObject",
                session,
                (
                    Attribute(CKA_CLASS, 0),
                    Attribute(CKA_TOKEN, 1),
                    Attribute(CKA_PRIVATE, private),
                    Attribute(CKA_LABEL, b"data-late"),
                    Attribute(0x11, bytes([private])),
                    Attribute(0x10, b"app"),
                    Attribute(0x170, 0),
                ),
            )
        (doomed,) = found(client, session, Attribute(CKA_LABEL, b"data-doomed"))
        client.ok("C_DestroyObject", session, doomed)
    with session_on(served) as (client, session):
        for _ in range(6):  # whichever member answers
            assert len(found(client, session, Attribute(CKA_LABEL, b"data-late"))) == 2
            assert found(client, session, Attribute(CKA_LABEL, b"data-doomed")) == []
    assert len(on_the_member(home, "member3", "data-late")) == 2
    assert on_the_member(home, "member3", "data-doomed") == []


def test_setting_sensitive_false_on_a_key_that_is_not_sensitive_is_ok_on_every_member(served, run_ckdemo):
    """A key neither sensitive nor extractable reaches a member that comes back from the blob,
    sensitive there (the record answers FALSE). Setting CKA_SENSITIVE FALSE, the value it has,
    is CKR_OK on one token; that member refused it (differential test with remote members,
    seed 500005: 'C_SetAttributeValue: CKR_OK vs CKR_ATTRIBUTE_READ_ONLY')."""
    home = served.home
    with member_out(run_ckdemo, home, "member2"), session_on(served) as (client, session):
        noticed(client, session)
        client.ok(
            "C_CreateObject",
            session,
            (
                Attribute(CKA_CLASS, CKO_SECRET_KEY),
                Attribute(0x100, 0x1F),
                Attribute(0x11, b"s" * 16),
                Attribute(CKA_TOKEN, 1),
                Attribute(CKA_SENSITIVE, 0),
                Attribute(CKA_EXTRACTABLE, 0),
                Attribute(CKA_LABEL, b"plain-key"),
            ),
        )
    with session_on(served) as (client, session):
        (key,) = found(client, session, Attribute(CKA_LABEL, b"plain-key"))
        for _ in range(6):  # whichever member answers
            assert (
                client.ckr("C_SetAttributeValue", session, key, (Attribute(CKA_SENSITIVE, 0),))
                == codes.CKR_OK
            )
            assert read(client, session, key, (CKA_SENSITIVE, CKA_EXTRACTABLE)) == {
                CKA_SENSITIVE: 0,
                CKA_EXTRACTABLE: 0,
            }


def test_a_private_copy_of_an_unextractable_public_key_reaches_a_member_that_comes_back(served, run_ckdemo):
    """A key that is not private is kept under the domain key of its family, which unwraps only
    into a key that is not private: a private copy of it could not reach a member that was down
    ('not copied ... CKR_GENERAL_ERROR', the member shown CKR_OK without it; differential test,
    seed 500043). The copy's record now keeps the blob wrapped anew for private keys."""
    home = served.home
    with session_on(served) as (client, session):
        (public,) = client.ok(
            "C_CreateObject",
            session,
            (
                Attribute(CKA_CLASS, CKO_SECRET_KEY),
                Attribute(0x100, 0x1F),
                Attribute(0x11, b"p" * 16),
                Attribute(CKA_TOKEN, 1),
                Attribute(CKA_PRIVATE, 0),
                Attribute(CKA_SENSITIVE, 1),
                Attribute(CKA_EXTRACTABLE, 0),
                Attribute(CKA_ENCRYPT, 1),
                Attribute(CKA_LABEL, b"made-private"),
            ),
        )
        with member_out(run_ckdemo, home, "member1"):
            noticed(client, session)
            client.ok("C_CopyObject", session, public, (Attribute(CKA_PRIVATE, 1),))
    with session_on(served) as (client, session):
        for _ in range(6):  # whichever member answers
            keys = found(client, session, Attribute(CKA_LABEL, b"made-private"))
            assert sorted(read(client, session, k, (CKA_PRIVATE,))[CKA_PRIVATE] for k in keys) == [0, 1]
            for key in keys:
                client.ok("C_EncryptInit", session, Mechanism(0x1081), key)
                client.ok("C_Encrypt", session, b"e" * 16, 64)
    assert "not copied" not in served.log(), served.log()
    labels = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            SOFTHSM_LIB,
            "--token-label",
            "member1",
            "--login",
            "--pin",
            USER_PIN,
            "--list-objects",
            "--type",
            "secrkey",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=softhsm_env(home),
    ).stdout
    assert labels.count("label:      made-private") == 2, labels  # the copy under a marked label
