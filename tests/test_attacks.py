"""The attacker's view of HA key replication: can anyone holding only the USER
PIN, or no PIN at all, get an HA key out of a member token, or damage the group's domain keys?

Set-up (once for the module): `ckdemo init`, HA Init (50) with the SO PIN (tolerating a domain key
that is already there), then on the HA slot an RSA-2048 key pair, an EC P-256 key pair and an
AES-256 key, each answered "Sensitive? y", "Extractable? n" in the menu. Then, in one separate
process per member (tests/attack_member.py, python-pkcs11 plus its own ctypes binding, nothing from
ckdemo), the attacks run straight on member1 and member2 as the user and with no login; member3 is
only inspected. Each process prints one JSON report; the tests below assert on it.

The domain keys are found as secret keys with CKA_TRUSTED=TRUE, never by label. Attacks that
change the token (set attributes on, relabel, destroy the domain keys) run last in each process;
member1 tries destroy without login first, member2 as the user first, so both get a real answer.

Every test names the CKR it expects; a failure lists every attempt with the code it got. "LEAK"
means key material was actually recovered and checked against the public key / the token's own
AES output, not merely that a call returned CKR_OK.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from conftest import MEMBERS, SO_PIN, USER_PIN, requires_softhsm, softhsm_env

pytestmark = requires_softhsm

HELPER = Path(__file__).resolve().parent / "attack_member.py"
LABELS = {"rsa": "atk-rsa", "ec": "atk-ec", "aes": "atk-aes"}
KEY_CHOICE = {"rsa": "RSA 2048 key pair", "ec": "EC P-256 key pair", "aes": "AES-256 key"}
ATTACKED = {"member1": "nologin", "member2": "user"}  # member: who tries to destroy first

OK = "CKR_OK"
TEMPLATE_INCONSISTENT = "CKR_TEMPLATE_INCONSISTENT"
KEY_NOT_WRAPPABLE = "CKR_KEY_NOT_WRAPPABLE"
ATTRIBUTE_SENSITIVE = "CKR_ATTRIBUTE_SENSITIVE"
ACTION_PROHIBITED = "CKR_ACTION_PROHIBITED"
KEY_FUNCTION_NOT_PERMITTED = "CKR_KEY_FUNCTION_NOT_PERMITTED"
KEY_UNEXTRACTABLE = "CKR_KEY_UNEXTRACTABLE"
ATTRIBUTE_READ_ONLY = "CKR_ATTRIBUTE_READ_ONLY"


@dataclass
class Attacked:
    home: Path
    ha_slot: str
    transcript: str
    reports: dict[str, dict]  # member label -> the helper's JSON


def _ha_slot(menu, home: Path) -> str:
    code, out = menu(home, "14\n")
    found = re.search(r"^slot#(\d+)\s+HA Virtual Card Slot", out, re.MULTILINE)
    assert found, out
    return found.group(1)


def _generate(kind: str, choice: int) -> str:
    return f"45\n${{LAST_SESSION}}\n{choice}\n{LABELS[kind]}\ny\ny\nn\n"


def _member_report(home: Path, member: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(HELPER), member, "--keys", ",".join(LABELS.values()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=softhsm_env(home),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, provision, menu) -> Attacked:
    home = provision(tmp_path_factory.mktemp("attacks") / "home")
    slot = _ha_slot(menu, home)
    # HA Init on its own: a home whose `init` already made the domain key may answer "already
    # holds" or ask something more; whatever it does, it cannot shift the key-generation script.
    menu(home, f"50\n{slot}\n{SO_PIN}\n")
    code, transcript = menu(
        home,
        f"51\n{slot}\n{USER_PIN}\n",
        f"1\n{slot}\ny\n",
        _generate("rsa", 1),
        _generate("ec", 4),
        _generate("aes", 7),
    )
    for kind, title in KEY_CHOICE.items():
        assert f"Generated {title}" in transcript, transcript[-3000:]
    reports = {MEMBERS[2]: _member_report(home, MEMBERS[2], "--inspect-only")}
    kept = sorted((home / "state").glob("vault-*"))  # the HA slot's kept blobs (one group)
    assert len(kept) == 1 and list(kept[0].glob("*.json")), list((home / "state").iterdir())
    for member, first in ATTACKED.items():
        reports[member] = _member_report(home, member, "--destroy-first", first, "--kept", str(kept[0]))
    return Attacked(home, slot, transcript, reports)


def attempts(attacked: Attacked, member: str, *numbers: str, session: str | None = None) -> list[dict]:
    found = [
        a
        for a in attacked.reports[member]["attacks"]
        if a["no"] in numbers and (session is None or a["session"] == session) and not a.get("allowed")
    ]
    assert found, f"{member}: no attempt {numbers} ran (no domain key or HA key found?)"
    return found


def table(found: list[dict]) -> str:
    return "\n".join(
        f"  [{a['no']}] {a['session']:7} {a['rv']:32} {'LEAK ' if a['leaked'] else ''}"
        f"{a['name']}{' -- ' + a['detail'] if a['detail'] else ''}"
        for a in found
    )


def assert_refused(found: list[dict], expected: set[str], what: str) -> None:
    leaked = [a for a in found if a["leaked"]]
    wrong = [a for a in found if a["rv"] not in expected]
    assert not leaked and not wrong, (
        f"{what}: expected {' or '.join(sorted(expected))} and no key material, got:\n{table(found)}"
    )


# ------------------------------------------------------------------ 1. wrap/unwrap tricks


@pytest.mark.parametrize("member", list(ATTACKED))
def test_1b_unwrap_sensitive_false_refused__CKR_TEMPLATE_INCONSISTENT(attacked, member):
    """Wrap an HA key under a domain key (allowed), unwrap it with SENSITIVE=FALSE,
    EXTRACTABLE=TRUE (and with a bare template): the domain key's unwrap template must refuse."""
    assert_refused(attempts(attacked, member, "1b"), {TEMPLATE_INCONSISTENT}, "unwrap in the clear")


@pytest.mark.parametrize("member", list(ATTACKED))
def test_1c_unwrap_wrap_with_trusted_false_refused__CKR_TEMPLATE_INCONSISTENT(attacked, member):
    """Unwrap SENSITIVE=TRUE but WRAP_WITH_TRUSTED=FALSE (then wrap the copy under one's own key
    and decrypt outside): refused."""
    assert_refused(
        attempts(attacked, member, "1c"), {TEMPLATE_INCONSISTENT}, "unwrap with WRAP_WITH_TRUSTED=FALSE"
    )


@pytest.mark.parametrize("member", list(ATTACKED))
def test_1d_unwrap_as_generic_secret_refused__CKR_TEMPLATE_INCONSISTENT(attacked, member):
    """An RSA/EC/AES blob unwrapped as CKO_SECRET_KEY/CKK_GENERIC_SECRET (its CKA_VALUE would be
    the PKCS#8 key): refused, whether the copy would be sensitive or not."""
    assert_refused(attempts(attacked, member, "1d"), {TEMPLATE_INCONSISTENT}, "unwrap as another class")


@pytest.mark.parametrize("member", list(ATTACKED))
def test_1e_unwrap_as_other_key_type_refused__CKR_TEMPLATE_INCONSISTENT(attacked, member):
    """A blob unwrapped as another private key type. Pinned CKA_KEY_TYPE gives
    CKR_TEMPLATE_INCONSISTENT; SoftHSM's decoder refusing the blob (CKR_FUNCTION_FAILED) is also
    a refusal."""
    assert_refused(
        attempts(attacked, member, "1e"),
        {TEMPLATE_INCONSISTENT, "CKR_FUNCTION_FAILED"},
        "unwrap as another key type",
    )


@pytest.mark.parametrize("member", list(ATTACKED))
def test_1f_unwrap_public_copy_without_login_refused__CKR_TEMPLATE_INCONSISTENT(attacked, member):
    """A session with NO login unwraps a blob (wrapped by the user) with CKA_PRIVATE=FALSE, to sign
    with or read: refused (CKA_PRIVATE pinned TRUE: CKR_TEMPLATE_INCONSISTENT; a token that first
    asks for a login: CKR_USER_NOT_LOGGED_IN)."""
    assert_refused(
        attempts(attacked, member, "1f"),
        {TEMPLATE_INCONSISTENT, "CKR_USER_NOT_LOGGED_IN"},
        "no-login unwrap with CKA_PRIVATE=FALSE",
    )


@pytest.mark.parametrize("member", list(ATTACKED))
def test_12_the_public_family_of_domain_keys_carries_nothing_private(attacked, member):
    """Keys an application made CKA_PRIVATE=FALSE are copied under domain keys of their own: a
    private key of the attacker's (trusted-only extractable) cannot be wrapped under one to come
    out as a key any no-login session may use (CKR_KEY_NOT_WRAPPABLE: its wrap template), and a
    blob the HA slot kept of a private key does not unwrap under one (another key: the AES key
    wrap's integrity check fails)."""
    assert_refused(attempts(attacked, member, "12a"), {KEY_NOT_WRAPPABLE}, "wrap a private key")
    assert_refused(
        attempts(attacked, member, "12b"),
        {
            "CKR_WRAPPED_KEY_INVALID",
            "CKR_ENCRYPTED_DATA_INVALID",
            "CKR_FUNCTION_FAILED",
            "CKR_WRAPPED_KEY_LEN_RANGE",
            "CKR_GENERAL_ERROR",
        },
        "unwrap a private key's blob",
    )


# ------------------------------------------------------------------ 2, 3: the HA keys themselves


@pytest.mark.parametrize("member", list(ATTACKED))
def test_2_wrap_under_own_key_refused__CKR_KEY_NOT_WRAPPABLE(attacked, member):
    """(CKR_KEY_UNEXTRACTABLE first, now that the HA keys are unextractable on every member.)"""
    assert_refused(
        attempts(attacked, member, "2"), {KEY_NOT_WRAPPABLE, KEY_UNEXTRACTABLE}, "wrap under an untrusted key"
    )


@pytest.mark.parametrize("member", list(ATTACKED))
def test_1a_an_unextractable_ha_key_cannot_even_be_wrapped_under_a_domain_key(attacked, member):
    """Keys made "Extractable? n" on the HA slot are CKA_EXTRACTABLE=FALSE on every member: the
    unwrap attacks 1b-1f can only start from the blobs the HA slot keeps in its state folder."""
    found = [a for a in attacked.reports[member]["attacks"] if a["no"] == "1a"]
    assert found and {a["rv"] for a in found} == {KEY_UNEXTRACTABLE}, table(found)


@pytest.mark.parametrize("member", list(ATTACKED))
def test_3_read_private_values_refused__CKR_ATTRIBUTE_SENSITIVE(attacked, member):
    assert_refused(attempts(attacked, member, "3"), {ATTRIBUTE_SENSITIVE}, "read the secret attributes")


# ------------------------------------------------------------------ 4-8: the domain keys


@pytest.mark.parametrize("member", list(ATTACKED))
def test_4_copy_domain_key_refused__CKR_ACTION_PROHIBITED(attacked, member):
    """C_CopyObject of every domain key: label changed, CKA_PRIVATE either way, no template, unwrap
    template emptied, DECRYPT=TRUE (a decrypt oracle unwraps any blob outside the token), ...; as
    user and without login."""
    assert_refused(attempts(attacked, member, "4"), {ACTION_PROHIBITED}, "copy a domain key")


@pytest.mark.parametrize("member", list(ATTACKED))
def test_5_domain_key_only_wraps__CKR_KEY_FUNCTION_NOT_PERMITTED(attacked, member):
    """C_Encrypt / C_Decrypt (ECB, CBC, key-wrap) / C_Sign (CMAC, HMAC) / C_DeriveKey with a domain
    key: refused. CKR_KEY_FUNCTION_NOT_PERMITTED expected; CKR_KEY_TYPE_INCONSISTENT (HMAC on an
    AES key) and CKR_MECHANISM_INVALID (CKA_ALLOWED_MECHANISMS, or no such operation) also refuse."""
    assert_refused(
        attempts(attacked, member, "5"),
        {KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_TYPE_INCONSISTENT", "CKR_MECHANISM_INVALID"},
        "use a domain key for anything but wrap/unwrap",
    )


@pytest.mark.parametrize("member", list(ATTACKED))
def test_6_relabel_domain_key_refused__CKR_ACTION_PROHIBITED(attacked, member):
    found = [a for a in attempts(attacked, member, "6") if a["name"].startswith("relabel")]
    assert {a["session"] for a in found} == {"user", "nologin"}, table(found)
    assert_refused(found, {ACTION_PROHIBITED}, "relabel a domain key")


@pytest.mark.parametrize("member", list(ATTACKED))
def test_6_destroy_domain_key_refused__CKR_ACTION_PROHIBITED(attacked, member):
    found = [a for a in attempts(attacked, member, "6") if a["name"].startswith("destroy")]
    first = ATTACKED[member]
    assert any(a["session"] == first and a["rv"] != "NOT_TRIED" for a in found), table(found)
    tried = [a for a in found if a["rv"] != "NOT_TRIED"]
    assert not [a for a in found if a["rv"] == "NOT_TRIED"] and tried, (
        f"destroy a domain key: expected {ACTION_PROHIBITED}, got:\n{table(found)}"
    )
    assert_refused(tried, {ACTION_PROHIBITED}, "destroy a domain key")


@pytest.mark.parametrize("member", list(ATTACKED))
def test_7_wrap_domain_key_refused__CKR_KEY_UNEXTRACTABLE(attacked, member):
    """Wrap every domain key under the user's own AES key (must be CKR_KEY_UNEXTRACTABLE), under
    itself and under the other domain keys (CKR_KEY_UNEXTRACTABLE, or CKR_MECHANISM_INVALID when
    the wrapping domain key's CKA_ALLOWED_MECHANISMS excludes plain CKM_AES_KEY_WRAP)."""
    found = attempts(attacked, member, "7")
    own = [a for a in found if "own AES key" in a["name"]]
    assert own, table(found)
    assert_refused(own, {KEY_UNEXTRACTABLE}, "wrap a domain key under the user's own key")
    assert_refused(
        [a for a in found if a not in own],
        {KEY_UNEXTRACTABLE, "CKR_MECHANISM_INVALID"},
        "wrap a domain key under a domain key",
    )


@pytest.mark.parametrize("member", list(ATTACKED))
def test_8_user_cannot_make_a_trusted_key__CKR_ATTRIBUTE_READ_ONLY(attacked, member):
    """Set CKA_TRUSTED on one's own key, copy it with CKA_TRUSTED, create or generate a key with
    CKA_TRUSTED, as user and without login."""
    assert_refused(attempts(attacked, member, "8"), {ATTRIBUTE_READ_ONLY}, "make a trusted key")


@pytest.mark.parametrize("member", list(ATTACKED))
def test_10_locked_keys_cannot_be_loosened__CKR_ATTRIBUTE_READ_ONLY(attacked, member):
    """Other routes: SENSITIVE=FALSE / WRAP_WITH_TRUSTED=FALSE set on, or copied onto, an HA key or
    a compliant replica (CKR_ATTRIBUTE_READ_ONLY); DECRYPT=TRUE, EXTRACTABLE=TRUE or an empty unwrap
    template set on a domain key (CKR_ACTION_PROHIBITED once it is not modifiable)."""
    assert_refused(
        attempts(attacked, member, "10"), {ATTRIBUTE_READ_ONLY, ACTION_PROHIBITED}, "loosen a locked key"
    )


def test_no_key_material_recovered_by_any_route(attacked):
    """The headline: across every attempt on both members, nothing matched a real key."""
    leaks = [
        a | {"member": m}
        for m in ATTACKED
        for a in attacked.reports[m]["attacks"]
        if a["leaked"] and a["no"] != "11"
    ]
    assert not leaks, "key material recovered:\n" + "\n".join(
        f"  {a['member']}: {line}" for a in leaks for line in [table([a]).strip()]
    )


def test_11_token_files_hold_a_domain_key_only_inside_a_private_folder(attacked):
    """Not a PIN attack: SoftHSM stores public objects unencrypted, so a public domain key's value
    sits in the token files. If it does, the home (and its tokens folder) must be closed to group
    and others (mode 0700), the only protection then."""
    found = [a for m in ATTACKED for a in attacked.reports[m]["attacks"] if a["no"] == "11"]
    assert found
    if any(a["leaked"] for a in found):
        mode = stat.S_IMODE(attacked.home.stat().st_mode)
        assert mode & 0o077 == 0, f"domain key in the token files ({table(found)}) and home mode {mode:o}"


# ------------------------------------------------------------------ 9. the replicas


def test_9_ha_keys_on_every_member_are_sensitive_and_wrap_only_with_trusted(attacked):
    for member, report in attacked.reports.items():
        for kind in LABELS:
            info = report["ha"].get(kind)
            assert info, f"{member}: HA {kind} key {LABELS[kind]} not found"
            assert info["CKA_SENSITIVE"] is True, (member, kind, info)
            assert info["CKA_WRAP_WITH_TRUSTED"] is True, (member, kind, info)
            assert info["CKA_EXTRACTABLE"] is False, (member, kind, info)  # as the application asked
            assert info["CKA_PRIVATE"] is True and info["CKA_TOKEN"] is True, (member, kind, info)


def test_9_ha_keys_have_the_same_id_label_and_public_value_on_every_member(attacked):
    reports = attacked.reports
    for kind, label in LABELS.items():
        ids = {m: r["ha"][kind]["CKA_ID"] for m, r in reports.items()}
        labels = {m: r["ha"][kind]["CKA_LABEL"] for m, r in reports.items()}
        assert len(set(ids.values())) == 1 and all(ids.values()), (kind, ids)
        assert set(labels.values()) == {label}, (kind, labels)
        counts = {m: r["ha"]["_count"][label] for m, r in reports.items()}
        assert set(counts.values()) == {1 if kind == "aes" else 2}, (kind, counts)
    moduli = {m: r["ha"]["rsa"]["modulus"] for m, r in reports.items()}
    assert len(set(moduli.values())) == 1 and len(moduli[MEMBERS[0]]) == 512, moduli
    assert all(r["ha"]["rsa"]["private_modulus"] == moduli[MEMBERS[0]] for r in reports.values())
    points = {m: r["ha"]["ec"]["ec_point"] for m, r in reports.items()}
    assert len(set(points.values())) == 1 and len(points[MEMBERS[0]]) == 130, points
    probes = {m: r["ha"]["aes"].get("ecb_probe") for m, r in reports.items()}
    assert len(set(probes.values())) == 1 and probes[MEMBERS[0]], probes  # same AES value


def test_9_replica_signatures_verify_with_the_original_public_key(attacked):
    """Each member signs with its own copy (RSA PKCS#1 v1.5 SHA-256, ECDSA P-256); the signatures
    verify (cryptography, not ckdemo) with member1's public key."""
    first = attacked.reports[MEMBERS[0]]["ha"]
    public_rsa = rsa.RSAPublicNumbers(
        int(first["rsa"]["public_exponent"], 16), int(first["rsa"]["modulus"], 16)
    ).public_key()
    public_ec = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), bytes.fromhex(first["ec"]["ec_point"])
    )
    for member, report in attacked.reports.items():
        r, e = report["ha"]["rsa"], report["ha"]["ec"]
        assert r["sign_rv"] == OK and e["sign_rv"] == OK, (member, r["sign_rv"], e["sign_rv"])
        public_rsa.verify(
            bytes.fromhex(r["signature"]), bytes.fromhex(r["data"]), padding.PKCS1v15(), hashes.SHA256()
        )
        raw = bytes.fromhex(e["signature"])
        der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        public_ec.verify(
            der, hashlib.sha256(bytes.fromhex(e["data"])).digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256()))
        )


# ------------------------------------------------------------------ the menu's promise


def test_menu_extractable_n_on_the_ha_slot_means_no_clear_copy(attacked):
    """The three keys were generated in the menu with "Extractable? n" on the HA slot: for them,
    attacks 1-3 (every wrap/unwrap trick, wrap under an own key, reading the secret attributes)
    must all be refused and recover nothing, on every attacked member."""
    assert attacked.transcript.count("Extractable? [y/N] : n") == 3, attacked.transcript[-2000:]
    expected = {
        "1b": {TEMPLATE_INCONSISTENT},
        "1c": {TEMPLATE_INCONSISTENT},
        "1d": {TEMPLATE_INCONSISTENT},
        "1e": {TEMPLATE_INCONSISTENT, "CKR_FUNCTION_FAILED"},
        "1f": {TEMPLATE_INCONSISTENT, "CKR_USER_NOT_LOGGED_IN"},
        "2": {KEY_NOT_WRAPPABLE, KEY_UNEXTRACTABLE},
        "3": {ATTRIBUTE_SENSITIVE},
    }
    bad = [
        a | {"member": m}
        for m in ATTACKED
        for a in attempts(attacked, m, *expected)
        if a["leaked"] or a["rv"] not in expected[a["no"]]
    ]
    assert not bad, "'Extractable? n' keys not protected:\n" + table(bad)


DIGEST_ATTACK = """
import json, sys, pkcs11
from pkcs11 import Attribute, Mechanism, ObjectClass
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
found = []
with token.open(user_pin=sys.argv[3]) as session:
    keys = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}))
    for key in keys:
        if not bytes(key[Attribute.ID]).startswith(b"ckdemo-ha-domain"):
            continue
        try:
            value = key[Attribute.VALUE].hex()
        except pkcs11.PKCS11Error as error:
            value = type(error).__name__
        found.append({"digest": session.digest(key, mechanism=Mechanism.SHA256).hex(), "value": value})
print(json.dumps(found))
"""


def test_a_digest_of_a_domain_key_is_all_the_user_pin_gets_and_it_is_not_the_key(attacked):
    """SoftHSM2 lets the user C_DigestKey a sensitive, unextractable key (a fact about the token,
    kept here so a change shows; docs/SECURITY.md, "In short"): straight on a member with the user PIN, what
    comes back is SHA-256 of each domain key, 32 bytes, one per key, and the value stays
    unreadable."""
    from conftest import SOFTHSM_LIB

    done = subprocess.run(
        [sys.executable, "-c", DIGEST_ATTACK, SOFTHSM_LIB, MEMBERS[0], USER_PIN],
        capture_output=True,
        text=True,
        timeout=60,
        env=softhsm_env(attacked.home),
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert len(found) >= 4  # rsa, ec, aes, generic
    assert all(len(bytes.fromhex(f["digest"])) == 32 for f in found)
    assert len({f["digest"] for f in found}) == len(found)
    assert all(f["value"] == "AttributeSensitive" for f in found)
