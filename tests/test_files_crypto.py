"""SECURITY FUNCTIONS 40-46 on a physical slot and on the HA virtual slot, checked against
independent implementations: `cryptography`, `hashlib`/`hmac` and published vectors (NIST SP 800-38A,
RFC 4231), with public keys read out of the token by pkcs11-tool.

Keys come in two kinds. Known keys are typed into 20 Create object from values this file holds (the
published vectors, and RSA/EC keys `cryptography` made for this run), so `cryptography` can do the
other half of every check. Generated keys come from 45 and stay on the token; pkcs11-tool reads
their public part out.

Handles: on a physical slot the first session of a run is 1 and the objects a run creates or finds
next are 2, 3, ... (SoftHSM numbers sessions and objects from one counter); the HA slot draws its
virtual session and objects from one process-wide counter (ckdemo.ha.handles) the same way, above
the physical ones. Scripts name the session ${LAST_SESSION}; tests check the handles the menu printed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, padding as block_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_der_public_key

from conftest import (
    MEMBERS,
    SOFTHSM_LIB,
    TIMEOUT_S,
    USER_PIN,
    clean_env,
    no_traceback,
    requires_softhsm,
    softhsm_env,
)
from support import DOMAIN_KEY_LABEL, summary

from ckdemo.ha.handles import VIRTUAL_HANDLE_BASE

pytestmark = requires_softhsm

MIB = 1024 * 1024

# NIST SP 800-38A F.2.5 CBC-AES256.Encrypt
SP800_38A_KEY = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
SP800_38A_IV = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
SP800_38A_PLAIN = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710"
)
SP800_38A_CIPHER = bytes.fromhex(
    "f58c4c04d6e5f1ba779eabfb5f7bfbd6"
    "9cfc4e967edb808d679f777bc6702c7d"
    "39f23369a9d9bacfa530e26304231461"
    "b2eb05e2c39be9fcda6c19078c6a9d1b"
)
# RFC 4231 test case 6 (a 131-byte key: SoftHSM wants at least 32 bytes for HMAC-SHA256)
RFC4231_KEY = b"\xaa" * 131
RFC4231_DATA = b"Test Using Larger Than Block-Size Key - Hash Key First"
RFC4231_SHA256 = bytes.fromhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")

GCM_IV = bytes.fromhex("cafebabefacedbaddecaf888")
CURVES = {"06082a8648ce3d030107": ec.SECP256R1(), "06052b81040022": ec.SECP384R1()}
EC_PARAMS = {v.name: k for k, v in CURVES.items()}

# 42/43 mechanism list (crypto.py SIGN_MECHANISMS): number, and how `cryptography` does the same
RSA_MECHANISMS = {
    1: ("CKM_SHA256_RSA_PKCS", padding.PKCS1v15(), hashes.SHA256()),
    2: ("CKM_SHA384_RSA_PKCS", padding.PKCS1v15(), hashes.SHA384()),
    3: ("CKM_SHA512_RSA_PKCS", padding.PKCS1v15(), hashes.SHA512()),
    4: ("CKM_SHA256_RSA_PKCS_PSS", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()),
    5: ("CKM_SHA384_RSA_PKCS_PSS", padding.PSS(padding.MGF1(hashes.SHA384()), 48), hashes.SHA384()),
    6: ("CKM_SHA512_RSA_PKCS_PSS", padding.PSS(padding.MGF1(hashes.SHA512()), 64), hashes.SHA512()),
}
ECDSA_SHA256, ECDSA_SHA384, HMAC_SHA256 = 7, 8, 9
HASHES = {1: "sha1", 2: "sha256", 3: "sha384", 4: "sha512"}  # 44 and 46 lists

# session 1 on slot#1 (member1), logged in; the first object of the run will be handle 2
SLOT1 = """\
    1
    1
    y
    3
    1
    1
    ${CKDEMO_USER_PIN}
    """
# HA Init and HA Login on slot#5 (the HA Virtual Card Slot of a default home), a session there;
# the first object of the run will be the second virtual handle (the session took the first)
HA = """\
    50
    5
    ${CKDEMO_SO_PIN}
    51
    5
    ${CKDEMO_USER_PIN}
    1
    5
    y
    """
HA_FIRST = VIRTUAL_HANDLE_BASE + 2
SLOTS = {"slot#1": (SLOT1, 2), "HA slot": (HA, HA_FIRST)}  # login lines, first object handle
SESSION = "${LAST_SESSION}"  # the session a script works in, physical or virtual
QUIT = "0\n"

# keys `cryptography` made for this run, typed into the token by the tests
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEYS = {"P-256": ec.generate_private_key(ec.SECP256R1()), "P-384": ec.generate_private_key(ec.SECP384R1())}


# ---------------------------------------------------------------- typing keys into 20 Create object


def _hex(number: int, size: int | None = None) -> str:
    return "hex:" + number.to_bytes(size or (number.bit_length() + 7) // 8, "big").hex()


def typed_aes(label: str, value: bytes, *extra: str) -> str:
    """One secret key: handle +1."""
    return (
        "\n".join(
            [
                "20",
                SESSION,
                "2",
                "CKA_KEY_TYPE=aes",
                f"CKA_LABEL={label}",
                f"CKA_VALUE=hex:{value.hex()}",
                "CKA_ENCRYPT=true",
                "CKA_DECRYPT=true",
                *extra,
                ".",
            ]
        )
        + "\n"
    )


def typed_hmac(label: str, value: bytes) -> str:
    return (
        "\n".join(
            [
                "20",
                SESSION,
                "2",
                "CKA_KEY_TYPE=generic_secret",
                f"CKA_LABEL={label}",
                f"CKA_VALUE=hex:{value.hex()}",
                "CKA_SIGN=true",
                "CKA_VERIFY=true",
                ".",
            ]
        )
        + "\n"
    )


def typed_rsa(label: str, key: rsa.RSAPrivateKey) -> str:
    """Public key, then private key: handles +1, +2."""
    p = key.private_numbers()
    public = [f"CKA_MODULUS={_hex(p.public_numbers.n)}", f"CKA_PUBLIC_EXPONENT={_hex(p.public_numbers.e)}"]
    return (
        "\n".join(
            [
                "20",
                SESSION,
                "3",
                "CKA_KEY_TYPE=rsa",
                f"CKA_LABEL={label}",
                *public,
                "CKA_VERIFY=true",
                "CKA_ENCRYPT=true",
                ".",
                "20",
                SESSION,
                "4",
                "CKA_KEY_TYPE=rsa",
                f"CKA_LABEL={label}",
                *public,
                f"CKA_PRIVATE_EXPONENT={_hex(p.d)}",
                f"CKA_PRIME_1={_hex(p.p)}",
                f"CKA_PRIME_2={_hex(p.q)}",
                f"CKA_EXPONENT_1={_hex(p.dmp1)}",
                f"CKA_EXPONENT_2={_hex(p.dmq1)}",
                f"CKA_COEFFICIENT={_hex(p.iqmp)}",
                "CKA_SIGN=true",
                "CKA_DECRYPT=true",
                ".",
            ]
        )
        + "\n"
    )


def typed_ec(label: str, key: ec.EllipticCurvePrivateKey) -> str:
    """Public key, then private key: handles +1, +2."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    params = EC_PARAMS[key.curve.name]
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    size = (key.curve.key_size + 7) // 8
    return (
        "\n".join(
            [
                "20",
                SESSION,
                "3",
                "CKA_KEY_TYPE=ec",
                f"CKA_LABEL={label}",
                f"CKA_EC_PARAMS=hex:{params}",
                f"CKA_EC_POINT=hex:04{len(point):02x}{point.hex()}",
                "CKA_VERIFY=true",
                ".",
                "20",
                SESSION,
                "4",
                "CKA_KEY_TYPE=ec",
                f"CKA_LABEL={label}",
                f"CKA_EC_PARAMS=hex:{params}",
                f"CKA_VALUE={_hex(key.private_numbers().private_value, size)}",
                "CKA_SIGN=true",
                ".",
            ]
        )
        + "\n"
    )


# ---------------------------------------------------------------- reading the transcript and the token


def created(transcript: str) -> list[int]:
    return [int(h) for h in re.findall(r"^Object created: handle (\d+)$", transcript, re.MULTILINE)]


def generated(transcript: str) -> list[tuple[int, ...]]:
    return [
        tuple(int(h) for h in m if h)
        for m in re.findall(
            r"^Generated .*?: (?:public key handle (\d+), private key handle (\d+)|key handle (\d+))$",
            transcript,
            re.MULTILINE,
        )
    ]


def signatures(transcript: str) -> list[bytes]:
    return [
        bytes.fromhex(h)
        for h in re.findall(r"^Signature \(\d+ bytes, CKM_\w+\):\n([0-9a-f]+)$", transcript, re.MULTILINE)
    ]


def digests(transcript: str) -> list[str]:
    return re.findall(r"^CKM_SHA\w+ of .*:\n([0-9a-f]+)$", transcript, re.MULTILINE)


def ivs(transcript: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in re.findall(r"^IV: ([0-9a-f]+)$", transcript, re.MULTILINE)]


def tool_bytes(home: Path, token: str, *args: str) -> bytes:
    """pkcs11-tool on one token as the user, stdout as bytes."""
    done = subprocess.run(
        ["pkcs11-tool", "--module", SOFTHSM_LIB, "--token-label", token, "--login", "--pin", USER_PIN, *args],
        capture_output=True,
        env=softhsm_env(home),
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def tool_objects(home: Path, token: str) -> list[dict[str, str]]:
    """pkcs11-tool --list-objects: one dict per object (`kind`, `header`, label, ID, Access, ...)."""
    objects = []
    for line in tool_bytes(home, token, "--list-objects").decode().splitlines():
        head = re.match(
            r"^(Data object|Secret Key Object|Public Key Object|Private Key Object)[; ]*(.*)$", line
        )
        if head:
            objects.append({"kind": head.group(1), "header": head.group(2).strip()})
        elif objects and (field := re.match(r"^\s+([\w ]+?):\s+(.*)$", line)):
            objects[-1][field.group(1).strip()] = field.group(2).strip().strip("'")
    return [o for o in objects if not o.get("label", "").startswith(DOMAIN_KEY_LABEL)]


def tool_rsa_public(home: Path, token: str, label: str) -> rsa.RSAPublicKey:
    return load_der_public_key(tool_bytes(home, token, "--read-object", "--type", "pubkey", "--label", label))


def tool_ec_public(home: Path, token: str, label: str) -> ec.EllipticCurvePublicKey:
    """From CKA_EC_PARAMS and CKA_EC_POINT as pkcs11-tool lists them (its --read-object cannot
    export P-384 keys in OpenSC 0.23)."""
    [obj] = [o for o in tool_objects(home, token) if o["kind"] == "Public Key Object" and o["label"] == label]
    der = bytes.fromhex(obj["EC_POINT"])
    assert der[0] == 0x04 and der[1] == len(der) - 2  # DER OCTET STRING around the point
    return ec.EllipticCurvePublicKey.from_encoded_point(CURVES[obj["EC_PARAMS"]], der[2:])


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    padder = block_padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(padder.update(data) + padder.finalize()) + enc.finalize()


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = block_padding.PKCS7(128).unpadder()
    return unpadder.update(dec.update(data) + dec.finalize()) + unpadder.finalize()


def oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def raw_ecdsa(der: bytes, curve: ec.EllipticCurve) -> bytes:
    """A DER ECDSA signature as CKM_ECDSA writes it: r || s, each the size of the curve."""
    r, s = decode_dss_signature(der)
    size = (curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def der_ecdsa(raw: bytes) -> bytes:
    half = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))


# ---------------------------------------------------------------- 40/41 AES-CBC-PAD


@pytest.mark.parametrize("slot", SLOTS)
def test_aes_cbc_file_agrees_with_sp800_38a_and_cryptography(menu, home, tmp_path, slot):
    login, key = SLOTS[slot]
    (tmp_path / "vector.bin").write_bytes(SP800_38A_PLAIN)
    letter = b"Dear QA,\nthis letter is 70 bytes long: not a whole number of blocks!.\n"
    (tmp_path / "letter.txt").write_bytes(letter)
    theirs_iv = os.urandom(16)
    (tmp_path / "theirs.enc").write_bytes(cbc_encrypt(SP800_38A_KEY, theirs_iv, letter))
    code, out = menu(
        home,
        login,
        typed_aes("qa-sp800-38a", SP800_38A_KEY),
        f"""\
        40
        {SESSION}
        {key}
        1
        {tmp_path}/vector.bin
        {tmp_path}/vector.enc
        {SP800_38A_IV.hex()}
        # an empty IV: the token draws one and shows it
        40
        {SESSION}
        {key}
        1
        {tmp_path}/letter.txt
        {tmp_path}/letter.enc
        ""
        41
        {SESSION}
        {key}
        1
        {tmp_path}/theirs.enc
        {tmp_path}/theirs.txt
        {theirs_iv.hex()}
        """,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == [key]
    vector = (tmp_path / "vector.enc").read_bytes()
    assert vector[:64] == SP800_38A_CIPHER  # the published blocks, then one block of padding
    assert len(vector) == 80
    assert cbc_decrypt(SP800_38A_KEY, SP800_38A_IV, vector) == SP800_38A_PLAIN
    drawn = ivs(out)[1]
    assert len(drawn) == 16 and drawn != SP800_38A_IV
    assert cbc_decrypt(SP800_38A_KEY, drawn, (tmp_path / "letter.enc").read_bytes()) == letter
    assert (tmp_path / "theirs.txt").read_bytes() == letter
    assert f"Encrypted 64 bytes of {tmp_path}/vector.bin into {tmp_path}/vector.enc (80 bytes)." in out
    assert len(letter) % 16 != 0
    padded = (len(letter) // 16 + 1) * 16
    assert (
        f"Decrypted {padded} bytes of {tmp_path}/theirs.enc into {tmp_path}/theirs.txt ({len(letter)} bytes)."
        in out
    )


# ---------------------------------------------------------------- 40/41 AES-GCM


@pytest.mark.parametrize("slot", SLOTS)
def test_aes_gcm_file_with_aad_both_ways(menu, home, tmp_path, slot):
    login, key = SLOTS[slot]
    aes_key = os.urandom(32)
    plain = os.urandom(1000) + b"end of the GCM sample"
    (tmp_path / "plain.bin").write_bytes(plain)
    their_iv = os.urandom(12)
    (tmp_path / "theirs.gcm").write_bytes(AESGCM(aes_key).encrypt(their_iv, plain, b"their header"))
    code, out = menu(
        home,
        login,
        typed_aes("qa-gcm", aes_key),
        f"""\
        40
        {SESSION}
        {key}
        2
        {tmp_path}/plain.bin
        {tmp_path}/ours.gcm
        {GCM_IV.hex()}
        our header
        # no AAD, a token-drawn IV
        40
        {SESSION}
        {key}
        2
        {tmp_path}/plain.bin
        {tmp_path}/bare.gcm
        ""
        ""
        41
        {SESSION}
        {key}
        2
        {tmp_path}/theirs.gcm
        {tmp_path}/theirs.bin
        {their_iv.hex()}
        their header
        """,
        QUIT,
    )
    assert code == 0, out
    ours = (tmp_path / "ours.gcm").read_bytes()
    assert len(ours) == len(plain) + 16  # the 128-bit tag is appended
    assert AESGCM(aes_key).decrypt(GCM_IV, ours, b"our header") == plain
    drawn = ivs(out)[1]
    assert len(drawn) == 12
    assert AESGCM(aes_key).decrypt(drawn, (tmp_path / "bare.gcm").read_bytes(), None) == plain
    assert (tmp_path / "theirs.bin").read_bytes() == plain


@pytest.mark.parametrize("slot", SLOTS)
def test_gcm_with_a_wrong_tag_aad_or_iv_fails_and_leaves_no_output(menu, home, tmp_path, slot):
    login, key = SLOTS[slot]
    aes_key = os.urandom(16)
    plain = b"authenticated payload " * 20
    good = AESGCM(aes_key).encrypt(GCM_IV, plain, b"header")
    (tmp_path / "good.gcm").write_bytes(good)
    (tmp_path / "bad-tag.gcm").write_bytes(good[:-1] + bytes([good[-1] ^ 0x01]))
    (tmp_path / "bad-body.gcm").write_bytes(bytes([good[0] ^ 0x80]) + good[1:])
    before = files_in(tmp_path)
    # SoftHSM 2.6.1 answers a tag that does not match with CKR_GENERAL_ERROR
    code, out = menu(
        home,
        login,
        typed_aes("qa-gcm", aes_key),
        f"""\
        41
        {SESSION}
        {key}
        2
        {tmp_path}/bad-tag.gcm
        {tmp_path}/out-1.bin
        {GCM_IV.hex()}
        header
        @expect CKR_GENERAL_ERROR
        41
        {SESSION}
        {key}
        2
        {tmp_path}/bad-body.gcm
        {tmp_path}/out-2.bin
        {GCM_IV.hex()}
        header
        @expect CKR_GENERAL_ERROR
        41
        {SESSION}
        {key}
        2
        {tmp_path}/good.gcm
        {tmp_path}/out-3.bin
        {GCM_IV.hex()}
        another header
        @expect CKR_GENERAL_ERROR
        41
        {SESSION}
        {key}
        2
        {tmp_path}/good.gcm
        {tmp_path}/out-4.bin
        {"00" * 12}
        header
        @expect CKR_GENERAL_ERROR
        # the session is still usable: the right tag, AAD and IV decrypt
        41
        {SESSION}
        {key}
        2
        {tmp_path}/good.gcm
        {tmp_path}/out-5.bin
        {GCM_IV.hex()}
        header
        """,
        QUIT,
    )
    assert code == 0, out
    assert files_in(tmp_path) == before | {"out-5.bin"}  # no output, no temporary file left behind
    assert (tmp_path / "out-5.bin").read_bytes() == plain
    assert out.count("(CKR_GENERAL_ERROR 0x00000005)") == 4


# ---------------------------------------------------------------- 40/41 RSA-OAEP


@pytest.mark.parametrize("slot", SLOTS)
def test_rsa_oaep_file_both_ways_with_a_known_key(menu, home, tmp_path, slot):
    login, first = SLOTS[slot]
    public, private = first, first + 1
    secret = b"a 32-byte session key, wrapped.."
    (tmp_path / "secret.bin").write_bytes(secret)
    (tmp_path / "theirs.oaep").write_bytes(RSA_KEY.public_key().encrypt(secret, oaep()))
    # one byte over what 2048-bit OAEP with SHA-1 takes; SoftHSM 2.6.1 answers CKR_GENERAL_ERROR
    (tmp_path / "too-big.bin").write_bytes(os.urandom(256 - 2 * 20 - 1))
    before = files_in(tmp_path)
    code, out = menu(
        home,
        login,
        typed_rsa("qa-rsa", RSA_KEY),
        f"""\
        40
        {SESSION}
        {public}
        3
        {tmp_path}/secret.bin
        {tmp_path}/ours.oaep
        41
        {SESSION}
        {private}
        3
        {tmp_path}/theirs.oaep
        {tmp_path}/theirs.bin
        40
        {SESSION}
        {public}
        3
        {tmp_path}/too-big.bin
        {tmp_path}/too-big.oaep
        @expect CKR_GENERAL_ERROR
        """,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == [public, private]
    ours = (tmp_path / "ours.oaep").read_bytes()
    assert len(ours) == 256
    assert RSA_KEY.decrypt(ours, oaep()) == secret
    assert (tmp_path / "theirs.bin").read_bytes() == secret
    assert files_in(tmp_path) == before | {"ours.oaep", "theirs.bin"}


def test_rsa_oaep_to_a_generated_key_whose_public_part_is_read_out(menu, home, tmp_path):
    code, out = menu(
        home,
        SLOT1,
        """\
        45
        1
        1
        qa-oaep-gen
        y
        ""
        ""
        """,
        QUIT,
    )
    assert code == 0, out
    assert generated(out) == [(2, 3)]
    public = tool_rsa_public(home, "member1", "qa-oaep-gen")
    secret = os.urandom(100)
    (tmp_path / "for-the-token.oaep").write_bytes(public.encrypt(secret, oaep()))
    # a new run finds the private key by label: handle 2
    code, out = menu(
        home,
        SLOT1,
        f"""\
        26
        1
        CKA_LABEL=qa-oaep-gen
        CKA_CLASS=CKO_PRIVATE_KEY
        .
        41
        1
        2
        3
        {tmp_path}/for-the-token.oaep
        {tmp_path}/decrypted.bin
        """,
        QUIT,
    )
    assert code == 0, out
    assert re.search(r"^2 +CKO_PRIVATE_KEY +CKK_RSA +qa-oaep-gen ", out, re.MULTILINE)
    assert (tmp_path / "decrypted.bin").read_bytes() == secret


# ---------------------------------------------------------------- 40/41/44 a file of several MiB


def _peak_rss_kib(command: list[str], stdin: str, env: dict[str, str]) -> tuple[int, str]:
    """Run a command in a small Python parent that reports the child's peak RSS (KiB)."""
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], input=sys.stdin.read(), capture_output=True, text=True)\n"
        "sys.stderr.write(done.stderr)\n"
        "print(done.stdout)\n"
        "print('PEAK-RSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
    )
    no_traceback(done.stdout, done.stderr)
    peak = int(re.search(r"^PEAK-RSS (\d+)$", done.stdout, re.MULTILINE).group(1))
    return peak, done.stdout


def test_several_mib_file_encrypts_decrypts_and_hashes_streamed(menu, home, tmp_path, ckdemo_bin):
    aes_key = os.urandom(32)
    big = os.urandom(6 * MIB + 5)
    (tmp_path / "big.bin").write_bytes(big)
    iv = os.urandom(16)
    code, out = menu(
        home,
        SLOT1,
        typed_aes("qa-big", aes_key),
        f"""\
        40
        1
        2
        1
        {tmp_path}/big.bin
        {tmp_path}/big.cbc
        {iv.hex()}
        41
        1
        2
        1
        {tmp_path}/big.cbc
        {tmp_path}/big.cbc.out
        {iv.hex()}
        40
        1
        2
        2
        {tmp_path}/big.bin
        {tmp_path}/big.gcm
        {GCM_IV.hex()}
        big header
        41
        1
        2
        2
        {tmp_path}/big.gcm
        {tmp_path}/big.gcm.out
        {GCM_IV.hex()}
        big header
        44
        1
        2
        {tmp_path}/big.bin
        """,
        QUIT,
    )
    assert code == 0, out
    assert (tmp_path / "big.cbc").read_bytes() == cbc_encrypt(aes_key, iv, big)
    assert (tmp_path / "big.cbc.out").read_bytes() == big
    assert (tmp_path / "big.gcm").read_bytes() == AESGCM(aes_key).encrypt(GCM_IV, big, b"big header")
    assert (tmp_path / "big.gcm.out").read_bytes() == big
    assert digests(out) == [hashlib.sha256(big).hexdigest()]


def test_hash_and_cbc_encrypt_of_a_large_file_run_in_constant_memory(home, tmp_path, ckdemo_bin):
    """Peak memory of the ckdemo process for a 1 KiB file and a 48 MiB file: streamed in 64 KiB
    parts, the large file costs no more than a few MiB on top."""
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(os.urandom(1024))
    with open(large, "wb") as out:
        for _ in range(48):
            out.write(os.urandom(MIB))
    peaks = {}
    for source in (small, large):
        script = (
            dedent(SLOT1)
            + typed_aes("qa-stream", os.urandom(16))
            + dedent(f"""\
            44
            1
            4
            {source}
            40
            1
            2
            1
            {source}
            {source}.cbc
            {"00" * 16}
            0
            """)
        )
        peaks[source.name], out = _peak_rss_kib(
            [str(ckdemo_bin), "--home", str(home), "run", "-"], script, clean_env()
        )
        assert "Replay: 5 steps, 5 met their expectation, 0 did not" in out, out
    assert (large.parent / "large.bin.cbc").stat().st_size == 48 * MIB + 16
    assert peaks["large.bin"] - peaks["small.bin"] < 16 * 1024, peaks


# ---------------------------------------------------------------- 40/41 refusals: one line, no file


def test_encrypt_and_decrypt_refusals_say_one_line_and_leave_no_file(menu, home, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "plain.txt").write_bytes(b"plain text\n")
    (work / "empty.bin").write_bytes(b"")
    (work / "odd.bin").write_bytes(os.urandom(20))  # not a whole number of AES blocks
    before = files_in(work)
    code, out = menu(
        home,
        SLOT1,
        typed_aes("qa-aes", os.urandom(16)),
        typed_rsa("qa-rsa", RSA_KEY),
        f"""\
        # a missing input file
        40
        1
        2
        1
        {work}/no-such-file.txt
        @expect BAD_INPUT
        # an output folder that does not exist
        40
        1
        2
        1
        {work}/plain.txt
        /nonexistent/dir/out
        @expect BAD_INPUT
        # an output that is a folder
        40
        1
        2
        1
        {work}/plain.txt
        {work}
        @expect BAD_INPUT
        # a key handle nobody has
        40
        1
        77
        1
        {work}/plain.txt
        {work}/out-1.bin
        {"00" * 16}
        @expect CKR_OBJECT_HANDLE_INVALID
        # an AES key for RSA-OAEP, an RSA public key for AES-CBC
        40
        1
        2
        3
        {work}/plain.txt
        {work}/out-2.bin
        @expect CKR_KEY_TYPE_INCONSISTENT
        40
        1
        3
        1
        {work}/plain.txt
        {work}/out-3.bin
        {"00" * 16}
        @expect CKR_KEY_TYPE_INCONSISTENT
        # an IV of the wrong size
        40
        1
        2
        1
        {work}/plain.txt
        {work}/out-4.bin
        0011
        @expect BAD_INPUT
        # an empty file has nothing to encrypt under RSA-OAEP
        40
        1
        3
        3
        {work}/empty.bin
        {work}/out-5.bin
        @expect BAD_INPUT
        # ciphertext that is not a whole number of blocks
        41
        1
        2
        1
        {work}/odd.bin
        {work}/out-6.bin
        {"00" * 16}
        @expect CKR_ENCRYPTED_DATA_LEN_RANGE
        # and the session still works
        40
        1
        2
        1
        {work}/plain.txt
        {work}/plain.enc
        {"00" * 16}
        """,
        QUIT,
    )
    assert code == 0, out
    assert summary(out) == "Replay: 15 steps, 15 met their expectation, 0 did not"
    assert files_in(work) == before | {"plain.enc"}
    assert f"Cannot read {work}/no-such-file.txt: no such file." in out
    assert "Cannot write /nonexistent/dir/out: the folder does not exist or is not writable." in out
    assert f"Cannot write {work}: a file name is needed." in out
    assert "Encrypt file: no object with handle 77 in session 1" in out
    assert "Status: C_Encrypt returned error. (CKR_KEY_TYPE_INCONSISTENT 0x00000063)" in out
    assert "Invalid input: 16 bytes (32 hex digits) are needed." in out
    assert f"{work}/empty.bin is empty: nothing to encrypt." in out
    assert re.search(
        r"^Status: C_Decrypt\w* returned error\. \(CKR_ENCRYPTED_DATA_LEN_RANGE 0x00000041\)$",
        out,
        re.MULTILINE,
    )


def refused_steps(transcript: str) -> list[str]:
    """How each step that missed its expectation ended: a CKR_* name, BAD_INPUT or INTERNAL_ERROR."""
    return re.findall(
        r"^FAILED line \d+: choice \d+ \(.*?\) ended with (\w+), expected", transcript, re.MULTILINE
    )


def test_encrypt_with_a_private_key_is_refused_in_one_clear_line(run_ckdemo, home, tmp_path):
    (tmp_path / "plain.txt").write_bytes(b"plain text\n")
    script = (
        dedent(SLOT1)
        + typed_rsa("qa-rsa", RSA_KEY)
        + typed_ec("qa-ec", EC_KEYS["P-256"])
        + dedent(f"""\
        40
        1
        3
        3
        {tmp_path}/plain.txt
        {tmp_path}/out-1.bin
        40
        1
        5
        1
        {tmp_path}/plain.txt
        {tmp_path}/out-2.bin
        {"00" * 16}
        0
        """)
    )
    done = run_ckdemo(home, "run", "--keep-going", "-", input=script)
    no_traceback(done.stdout, done.stderr)
    assert "Internal error" not in done.stdout
    # a key whose attributes forbid encrypting is refused before the call; no file is left
    assert refused_steps(done.stdout) == ["CKR_KEY_FUNCTION_NOT_PERMITTED"] * 2
    assert (
        done.stdout.count("Status: C_EncryptInit returned error. (CKR_KEY_FUNCTION_NOT_PERMITTED 0x00000068)")
        == 2
    )
    assert files_in(tmp_path) == {"home", "plain.txt"}


def test_decrypting_an_empty_file_is_one_clear_line(run_ckdemo, home, tmp_path):
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "plain.txt").write_bytes(b"plain text\n")
    script = (
        dedent(SLOT1)
        + typed_aes("qa-aes", os.urandom(16))
        + dedent(f"""\
        41
        1
        2
        1
        {tmp_path}/empty.bin
        {tmp_path}/out.bin
        {"00" * 16}
        # the session goes on
        44
        1
        2
        {tmp_path}/plain.txt
        0
        """)
    )
    done = run_ckdemo(home, "run", "--keep-going", "-", input=script)
    no_traceback(done.stdout, done.stderr)
    assert "Internal error" not in done.stdout
    [how] = refused_steps(done.stdout)  # the decrypt, and only the decrypt
    assert re.fullmatch(r"CKR_\w+|BAD_INPUT", how)
    assert digests(done.stdout) == [hashlib.sha256(b"plain text\n").hexdigest()]
    assert files_in(tmp_path) == {"home", "empty.bin", "plain.txt"}


# ---------------------------------------------------------------- 42 Sign, checked by `cryptography`


def test_signatures_of_generated_keys_verify_with_the_public_key_read_out(menu, home, tmp_path):
    data = b"QA release record 42"
    steps = []
    for number in RSA_MECHANISMS:  # RSA key: public 2, private 3
        steps.append(f"42\n1\n3\n{number}\n{data.decode()}\n{tmp_path}/rsa-{number}.sig\n")
    steps.append(f"42\n1\n5\n{ECDSA_SHA256}\n{data.decode()}\n{tmp_path}/p256.sig\n")
    steps.append(f"42\n1\n7\n{ECDSA_SHA384}\n{data.decode()}\n{tmp_path}/p384.sig\n")
    code, out = menu(
        home,
        SLOT1,
        """\
        45
        1
        1
        qa-sign-rsa
        y
        ""
        ""
        45
        1
        4
        qa-sign-p256
        y
        ""
        ""
        45
        1
        5
        qa-sign-p384
        y
        ""
        ""
        """,
        *steps,
        QUIT,
    )
    assert code == 0, out
    assert generated(out) == [(2, 3), (4, 5), (6, 7)]
    printed = signatures(out)
    assert len(printed) == 8

    public = tool_rsa_public(home, "member1", "qa-sign-rsa")
    for index, (number, (name, pad, digest)) in enumerate(RSA_MECHANISMS.items()):
        saved = (tmp_path / f"rsa-{number}.sig").read_bytes()
        assert saved == printed[index], name
        assert len(saved) == 256, name
        public.verify(saved, data, pad, digest)  # raises InvalidSignature if not
        with pytest.raises(InvalidSignature):
            public.verify(saved, data + b"!", pad, digest)
    for name, digest, curve_bits in (("p256", hashes.SHA256(), 256), ("p384", hashes.SHA384(), 384)):
        key = tool_ec_public(home, "member1", f"qa-sign-{name}")
        assert key.curve.key_size == curve_bits
        raw = (tmp_path / f"{name}.sig").read_bytes()
        assert len(raw) == 2 * curve_bits // 8
        key.verify(der_ecdsa(raw), data, ec.ECDSA(digest))
    # PKCS#1 v1.5 is deterministic: a second run signs alike; PSS draws a fresh salt every time
    code, again = menu(
        home,
        SLOT1,
        """\
        26
        1
        CKA_LABEL=qa-sign-rsa
        CKA_CLASS=CKO_PRIVATE_KEY
        .
        """,
        f'42\n1\n2\n1\n{data.decode()}\n""\n42\n1\n2\n4\n{data.decode()}\n""\n',
        QUIT,
    )
    assert code == 0, again
    v15, pss = signatures(again)
    assert v15 == printed[0]
    assert pss != printed[3]
    public.verify(pss, data, *RSA_MECHANISMS[4][1:])


def test_hmac_sha256_matches_rfc_4231(menu, home, tmp_path):
    code, out = menu(
        home,
        SLOT1,
        typed_hmac("qa-hmac", RFC4231_KEY),
        f"""\
        42
        1
        2
        {HMAC_SHA256}
        {RFC4231_DATA.decode()}
        {tmp_path}/mac.bin
        43
        1
        2
        {HMAC_SHA256}
        {RFC4231_DATA.decode()}
        {RFC4231_SHA256.hex()}
        """,
        QUIT,
    )
    assert code == 0, out
    assert signatures(out) == [RFC4231_SHA256]
    assert "Signature verified." in out
    assert hmac.new(RFC4231_KEY, RFC4231_DATA, hashlib.sha256).digest() == RFC4231_SHA256
    assert (tmp_path / "mac.bin").read_bytes() == RFC4231_SHA256
    assert f"Signature written to {tmp_path}/mac.bin." in out


# ---------------------------------------------------------------- 43 Verify signatures made by `cryptography`


@pytest.mark.parametrize("slot", SLOTS)
def test_verify_accepts_what_cryptography_signs_and_refuses_tampering(menu, home, tmp_path, slot):
    login, first = SLOTS[slot]
    rsa_public = first  # then private
    p256_public, p384_public, hmac_key = first + 2, first + 4, first + 6
    data = b"signed by cryptography, checked by the token"
    good, bad = [], []

    def case(handle: int, number: int, signature: bytes) -> None:
        tampered = bytearray(signature)
        tampered[len(tampered) // 2] ^= 0x01
        good.append(f"43\n{SESSION}\n{handle}\n{number}\n{data.decode()}\n{signature.hex()}\n")
        bad.append(
            f"43\n{SESSION}\n{handle}\n{number}\n{data.decode()}\n{bytes(tampered).hex()}\n"
            "@expect CKR_SIGNATURE_INVALID\n"
        )

    for number, (_, pad, digest) in RSA_MECHANISMS.items():
        case(rsa_public, number, RSA_KEY.sign(data, pad, digest))
    for handle, number, curve, digest in (
        (p256_public, ECDSA_SHA256, "P-256", hashes.SHA256()),
        (p384_public, ECDSA_SHA384, "P-384", hashes.SHA384()),
    ):
        key = EC_KEYS[curve]
        case(handle, number, raw_ecdsa(key.sign(data, ec.ECDSA(digest)), key.curve))
    case(hmac_key, HMAC_SHA256, hmac.new(RFC4231_KEY, data, hashlib.sha256).digest())

    code, out = menu(
        home,
        login,
        typed_rsa("qa-rsa", RSA_KEY),
        typed_ec("qa-p256", EC_KEYS["P-256"]),
        typed_ec("qa-p384", EC_KEYS["P-384"]),
        typed_hmac("qa-hmac", RFC4231_KEY),
        *good,
        *bad,
        f"""\
        # the right signature over other data
        43
        {SESSION}
        {rsa_public}
        1
        other data
        {RSA_KEY.sign(data, padding.PKCS1v15(), hashes.SHA256()).hex()}
        @expect CKR_SIGNATURE_INVALID
        """,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == list(range(first, first + 7))
    assert out.count("Signature verified.") == 9
    assert out.count("Status: C_Verify returned error. (CKR_SIGNATURE_INVALID 0x000000C0)") == 10
    assert summary(out).endswith(" 0 did not")


def test_verify_of_a_signature_of_the_wrong_length_keeps_the_module_answer(menu, home):
    code, out = menu(
        home,
        SLOT1,
        typed_rsa("qa-rsa", RSA_KEY),
        """\
        43
        1
        2
        1
        data
        00ff
        @expect CKR_SIGNATURE_LEN_RANGE
        """,
        QUIT,
    )
    assert code == 0, out
    assert "Status: C_Verify returned error. (CKR_SIGNATURE_LEN_RANGE 0x000000C1)" in out


def test_sign_with_a_public_key_is_refused_in_one_clear_line(run_ckdemo, home):
    script = (
        dedent(SLOT1)
        + typed_rsa("qa-rsa", RSA_KEY)
        + dedent("""\
        42
        1
        2
        1
        data
        ""
        43
        1
        3
        1
        data
        00
        0
        """)
    )
    done = run_ckdemo(home, "run", "--keep-going", "-", input=script)
    no_traceback(done.stdout, done.stderr)
    out = done.stdout
    assert "Internal error" not in out
    assert refused_steps(out) == ["CKR_KEY_FUNCTION_NOT_PERMITTED"] * 2
    assert "Status: C_SignInit returned error. (CKR_KEY_FUNCTION_NOT_PERMITTED 0x00000068)" in out
    assert "Status: C_VerifyInit returned error. (CKR_KEY_FUNCTION_NOT_PERMITTED 0x00000068)" in out


def test_sign_and_verify_refusals(menu, home):
    code, out = menu(
        home,
        SLOT1,
        typed_rsa("qa-rsa", RSA_KEY),
        typed_aes("qa-aes", os.urandom(16)),
        f"""\
        # HMAC and ECDSA with an RSA key: the module's answers (SoftHSM 2.6.1 has no better one
        # than CKR_GENERAL_ERROR for ECDSA with a key that is not EC; python-pkcs11 says the same)
        42
        1
        3
        {HMAC_SHA256}
        data
        ""
        @expect CKR_KEY_TYPE_INCONSISTENT
        42
        1
        3
        {ECDSA_SHA256}
        data
        ""
        @expect CKR_GENERAL_ERROR
        42
        1
        55
        1
        data
        ""
        @expect CKR_OBJECT_HANDLE_INVALID
        42
        1
        3
        1
        ""
        @expect BAD_INPUT
        42
        1
        3
        1
        data
        /nonexistent/dir/sig.bin
        @expect BAD_INPUT
        43
        1
        2
        1
        data
        not-hex
        @expect BAD_INPUT
        42
        1
        3
        10
        @expect BAD_INPUT
        # the session still signs
        42
        1
        3
        1
        data
        ""
        """,
        QUIT,
    )
    assert code == 0, out
    assert summary(out) == "Replay: 13 steps, 13 met their expectation, 0 did not"
    assert "Invalid input: empty data." in out
    assert "Cannot write /nonexistent/dir/sig.bin: the folder does not exist or is not writable." in out
    assert "Invalid input: the signature must be hex or @file." in out
    assert "Invalid input (10): choose 1-9." in out
    [signature] = signatures(out)
    RSA_KEY.public_key().verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())


def test_sign_and_verify_read_data_and_signature_from_files_in_a_script(menu, home, tmp_path):
    data = b"a record kept in a file\n"
    (tmp_path / "record.txt").write_bytes(data)
    (tmp_path / "record.sig").write_bytes(RSA_KEY.sign(data, padding.PKCS1v15(), hashes.SHA256()))
    code, out = menu(
        home,
        SLOT1,
        typed_rsa("qa-rsa", RSA_KEY),
        f"""\
        42
        1
        3
        1
        @{tmp_path}/record.txt
        ""
        43
        1
        2
        1
        @{tmp_path}/record.txt
        @{tmp_path}/record.sig
        42
        1
        3
        1
        @{tmp_path}/no-such-file
        @expect BAD_INPUT
        """,
        QUIT,
    )
    assert code == 0, out
    [signature] = signatures(out)
    assert signature == (tmp_path / "record.sig").read_bytes()  # PKCS#1 v1.5 is deterministic
    assert "Signature verified." in out
    assert f"Cannot read {tmp_path}/no-such-file: no such file." in out


# ---------------------------------------------------------------- 42/43 on the HA slot


def test_ha_signatures_verify_with_the_public_key_of_every_member(menu, home, tmp_path):
    data = b"HA signed record"
    # four signatures per key: the group balances them over its members
    signs = [
        f"42\n{SESSION}\n{HA_FIRST + 1}\n{4 + i % 2}\n{data.decode()}\n{tmp_path}/rsa-{i}.sig\n"
        for i in range(4)
    ]
    signs += [
        f"42\n{SESSION}\n{HA_FIRST + 3}\n{ECDSA_SHA256}\n{data.decode()}\n{tmp_path}/ec-{i}.sig\n"
        for i in range(4)
    ]
    code, out = menu(
        home,
        HA,
        """\
        45
        ${LAST_SESSION}
        1
        qa-ha-rsa
        y
        ""
        ""
        45
        ${LAST_SESSION}
        4
        qa-ha-ec
        y
        ""
        ""
        """,
        *signs,
        QUIT,
    )
    assert code == 0, out
    assert generated(out) == [(HA_FIRST, HA_FIRST + 1), (HA_FIRST + 2, HA_FIRST + 3)]
    rsa_keys = {m: tool_rsa_public(home, m, "qa-ha-rsa").public_numbers() for m in MEMBERS}
    ec_keys = {m: tool_ec_public(home, m, "qa-ha-ec").public_numbers() for m in MEMBERS}
    assert len(set(rsa_keys.values())) == 1 and len(set(ec_keys.values())) == 1  # one key on every member
    rsa_public = rsa_keys["member1"].public_key()
    ec_public = ec_keys["member1"].public_key()
    for i in range(4):
        _, pad, digest = RSA_MECHANISMS[4 + i % 2]
        rsa_public.verify((tmp_path / f"rsa-{i}.sig").read_bytes(), data, pad, digest)
        ec_public.verify(der_ecdsa((tmp_path / f"ec-{i}.sig").read_bytes()), data, ec.ECDSA(hashes.SHA256()))


# ---------------------------------------------------------------- 44 Hash file, 46 Digest Key


@pytest.mark.parametrize("slot", SLOTS)
def test_hash_file_equals_hashlib(menu, home, tmp_path, slot):
    login, _ = SLOTS[slot]
    samples = {"empty.bin": b"", "abc.txt": b"abc", "several-mib.bin": os.urandom(5 * MIB + 17)}
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
    steps = [f"44\n{SESSION}\n{number}\n{tmp_path}/{name}\n" for name in samples for number in HASHES]
    code, out = menu(home, login, *steps, QUIT)
    assert code == 0, out
    expected = [
        hashlib.new(HASHES[number], data).hexdigest() for data in samples.values() for number in HASHES
    ]
    assert digests(out) == expected
    # FIPS 180-4 "abc" examples, as a published anchor for hashlib itself
    assert expected[4] == "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert expected[5] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert f"CKM_SHA_1 of {tmp_path}/several-mib.bin ({5 * MIB + 17} bytes):" in out


def test_hash_file_refusals(menu, shared_home, tmp_path):
    code, out = menu(
        shared_home,
        SLOT1,
        f"""\
        44
        1
        2
        {tmp_path}/missing.bin
        @expect BAD_INPUT
        44
        1
        2
        {tmp_path}
        @expect BAD_INPUT
        44
        1
        5
        @expect BAD_INPUT
        """,
        QUIT,
    )
    assert code == 0, out
    assert f"Cannot read {tmp_path}/missing.bin: no such file." in out
    assert f"Cannot read {tmp_path}: a folder (only regular files are read)." in out
    assert "Invalid input (5): choose 1-4." in out


@pytest.mark.parametrize("slot", SLOTS)
def test_digest_key_equals_hashlib_over_the_key_value(menu, home, slot):
    login, key = SLOTS[slot]
    readable, hidden = os.urandom(32), os.urandom(16)
    steps = [f"46\n{SESSION}\n{number}\n{key}\n" for number in HASHES]
    # SoftHSM digests a sensitive key too (C_DigestKey never shows the value)
    steps.append(f"46\n{SESSION}\n2\n{key + 1}\n")
    code, out = menu(
        home,
        login,
        typed_aes("qa-readable", readable, "CKA_SENSITIVE=false", "CKA_EXTRACTABLE=true"),
        typed_aes("qa-hidden", hidden, "CKA_SENSITIVE=true"),
        *steps,
        QUIT,
    )
    assert code == 0, out
    assert created(out) == [key, key + 1]
    assert digests(out) == [hashlib.new(HASHES[n], readable).hexdigest() for n in HASHES] + [
        hashlib.sha256(hidden).hexdigest()
    ]
    assert f"CKM_SHA_1 of key {key}:" in out


# ---------------------------------------------------------------- 45 Simple Generate Key


def _by_label(home: Path, token: str) -> dict[tuple[str, str], dict[str, str]]:
    return {(o["kind"], o.get("label", "")): o for o in tool_objects(home, token)}


def test_generate_every_key_type_as_token_or_session_objects(menu, home):
    code, out = menu(
        home,
        SLOT1,
        """\
        45
        1
        1
        qa-rsa2048
        y
        ""
        ""
        45
        1
        2
        qa-rsa3072
        y
        ""
        ""
        45
        1
        4
        qa-p256
        y
        ""
        ""
        45
        1
        5
        qa-p384
        y
        n
        y
        45
        1
        6
        qa-aes128
        y
        ""
        ""
        45
        1
        7
        qa-aes256
        y
        n
        y
        45
        1
        8
        qa-generic
        y
        n
        y
        # session objects: they go with the process
        45
        1
        6
        qa-session-aes
        n
        ""
        ""
        45
        1
        4
        qa-session-p256
        n
        ""
        ""
        """,
        QUIT,
    )
    assert code == 0, out
    assert generated(out) == [(2, 3), (4, 5), (6, 7), (8, 9), (10,), (11,), (12,), (13,), (14, 15)]
    tool = _by_label(home, "member1")
    assert "qa-session-aes" not in {label for _, label in tool}
    assert "qa-session-p256" not in {label for _, label in tool}
    assert len(tool) == 11

    assert tool["Public Key Object", "qa-rsa2048"]["header"] == "RSA 2048 bits"
    assert tool["Public Key Object", "qa-rsa3072"]["header"] == "RSA 3072 bits"
    assert tool_rsa_public(home, "member1", "qa-rsa3072").key_size == 3072
    assert tool["Public Key Object", "qa-p256"]["EC_PARAMS"] == EC_PARAMS["secp256r1"]
    assert tool["Public Key Object", "qa-p384"]["EC_PARAMS"] == EC_PARAMS["secp384r1"]
    assert tool["Secret Key Object", "qa-aes128"]["header"] == "AES length 16"
    assert tool["Secret Key Object", "qa-aes256"]["header"] == "AES length 32"
    assert tool["Secret Key Object", "qa-generic"]["header"] == "Generic secret length 32"

    def access(kind: str, label: str) -> set[str]:
        return set(tool[kind, label]["Access"].split(", "))

    # the defaults: sensitive and never extractable
    for kind, label in (
        ("Private Key Object", "qa-rsa2048"),
        ("Private Key Object", "qa-rsa3072"),
        ("Private Key Object", "qa-p256"),
        ("Secret Key Object", "qa-aes128"),
    ):
        assert access(kind, label) == {"sensitive", "always sensitive", "never extractable", "local"}, label
        assert "VALUE" not in tool[kind, label]
    # the answers changed: readable and extractable, and pkcs11-tool reads the value
    for kind, label in (
        ("Private Key Object", "qa-p384"),
        ("Secret Key Object", "qa-aes256"),
        ("Secret Key Object", "qa-generic"),
    ):
        assert access(kind, label) == {"extractable", "local"}, label
    assert len(bytes.fromhex(tool["Secret Key Object", "qa-aes256"]["VALUE"])) == 32


def test_generated_keys_on_the_ha_slot_are_on_every_member_and_sensitive_by_default(menu, home):
    code, out = menu(
        home,
        HA,
        """\
        45
        ${LAST_SESSION}
        7
        qa-ha-aes
        y
        ""
        ""
        45
        ${LAST_SESSION}
        4
        qa-ha-p256
        y
        ""
        ""
        """,
        QUIT,
    )
    assert code == 0, out
    assert generated(out) == [(HA_FIRST,), (HA_FIRST + 1, HA_FIRST + 2)]
    for member in MEMBERS:
        tool = _by_label(home, member)
        for kind, label in (
            ("Secret Key Object", "qa-ha-aes"),
            ("Private Key Object", "qa-ha-p256"),
            ("Public Key Object", "qa-ha-p256"),
        ):
            assert (kind, label) in tool, (member, kind, label)
        assert "sensitive" in tool["Secret Key Object", "qa-ha-aes"]["Access"].split(", "), member
        assert "sensitive" in tool["Private Key Object", "qa-ha-p256"]["Access"].split(", "), member
        assert "VALUE" not in tool["Secret Key Object", "qa-ha-aes"], member
    ids = {m: {(k, l, o.get("ID")) for (k, l), o in _by_label(home, m).items()} for m in MEMBERS}
    assert ids["member1"] == ids["member2"] == ids["member3"]


def test_ha_non_sensitive_key_is_non_sensitive_on_every_member(menu, home):
    code, out = menu(
        home,
        HA,
        """\
        45
        ${LAST_SESSION}
        8
        qa-ha-readable
        y
        n
        y
        """,
        QUIT,
    )
    assert code == 0, out
    values = set()
    for member in MEMBERS:
        key = _by_label(home, member)["Secret Key Object", "qa-ha-readable"]
        assert "sensitive" not in key["Access"].split(", "), member
        values.add(key.get("VALUE"))
    assert len(values) == 1 and None not in values
