"""KEY FUNCTIONS 60-67 on real SoftHSM2 tokens, results checked with `cryptography` and openssl's
own numbers, never with ckdemo itself.

Each test types a script into `ckdemo --home H run -` on a fresh home: after Open Session and
Login, SoftHSM2 numbers the session 1 and the known keys (65) 2-7 in this order:
AES 2, HMAC 3, RSA public 4 / private 5, EC public 6 / private 7.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.keywrap import (
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap,
    aes_key_wrap_with_padding,
)

from ckdemo import known_keys as kk
from conftest import USER_PIN, requires_softhsm
from support import DOMAIN_KEYS, OK, Screen, statuses

pytestmark = requires_softhsm

LOGIN = f"1\n1\ny\n3\n1\n1\n{USER_PIN}\n"
KNOWN = LOGIN + "65\n1\nn\n"  # known keys as session objects, handles 2-7
AES, HMAC, RSA_PUB, RSA_PRIV, EC_PUB, EC_PRIV = range(2, 8)
n = lambda data: int.from_bytes(data, "big")  # noqa: E731


def rsa_key() -> rsa.RSAPrivateKey:
    public = rsa.RSAPublicNumbers(n(kk.RSA_PUBLIC_EXPONENT), n(kk.RSA_N))
    return rsa.RSAPrivateNumbers(
        n(kk.RSA_P), n(kk.RSA_Q), n(kk.RSA_D), n(kk.RSA_DP), n(kk.RSA_DQ), n(kk.RSA_QINV), public
    ).private_key()


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(n(kk.EC_D), ec.SECP256R1())


# ---------------------------------------------------------------- the constants themselves


def test_known_key_constants_agree_with_cryptography():
    key = rsa_key()  # cryptography checks p*q = n and the CRT values while loading
    assert key.key_size == 2048
    key.public_key().verify(kk.RSA_SHA256_SIGNATURE, kk.SIGNED_MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    point = ec_key().public_key().public_numbers()
    assert kk.EC_POINT_RAW == b"\x04" + point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big")
    r, s = n(kk.ECDSA_SIGNATURE[:32]), n(kk.ECDSA_SIGNATURE[32:])
    ec_key().public_key().verify(
        utils.encode_dss_signature(r, s), kk.SIGNED_MESSAGE, ec.ECDSA(hashes.SHA256())
    )
    assert hmac.new(kk.HMAC_VALUE, kk.SIGNED_MESSAGE, hashlib.sha256).digest() == kk.HMAC_SHA256_OF_MESSAGE
    assert (
        hmac.new(kk.RFC4231_TC6_KEY, kk.RFC4231_TC6_DATA, hashlib.sha256).digest()
        == kk.RFC4231_TC6_HMAC_SHA256
    )
    for name, _, digest in kk.DIGESTS:
        assert hashlib.new(name.replace("-", "").lower(), kk.ABC).digest() == digest


def test_aes_vectors_agree_with_cryptography():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    ecb = Cipher(algorithms.AES(kk.AES256_VALUE), modes.ECB()).encryptor()
    assert ecb.update(kk.AES_ECB_PLAINTEXT) + ecb.finalize() == kk.AES_ECB_CIPHERTEXT
    cbc = Cipher(algorithms.AES(kk.AES_CBC_KEY), modes.CBC(kk.AES_CBC_IV)).encryptor()
    assert cbc.update(kk.AES_CBC_PLAINTEXT) + cbc.finalize() == kk.AES_CBC_CIPHERTEXT


def test_curve_parameters_agree_with_python_pkcs11_and_the_p256_domain():
    from asn1crypto.keys import ECDomainParameters
    from pkcs11.util.ec import encode_named_curve_parameters

    for name, oid, der in kk.NAMED_CURVES:
        assert encode_named_curve_parameters(oid) == der, name
    assert kk.P256_PARAMS == kk.NAMED_CURVES[0][2]
    explicit = ECDomainParameters.load(kk.P256_EXPLICIT_PARAMS).chosen.native
    p = explicit["field_id"]["parameters"]
    a, b = n(explicit["curve"]["a"]), n(explicit["curve"]["b"])
    assert p == 2**256 - 2**224 + 2**192 + 2**96 - 1
    generator = ec.derive_private_key(1, ec.SECP256R1()).public_key().public_numbers()
    assert explicit["base"] == b"\x04" + generator.x.to_bytes(32, "big") + generator.y.to_bytes(32, "big")
    assert (generator.y**2 - generator.x**3 - a * generator.x - b) % p == 0
    # the order: n * G is the point at infinity, so (n - 1) * G = -G
    minus_g = ec.derive_private_key(explicit["order"] - 1, ec.SECP256R1()).public_key().public_numbers()
    assert (minus_g.x, minus_g.y) == (generator.x, p - generator.y)


def test_docs_list_the_same_keys():
    text = (Path(__file__).resolve().parent.parent / "docs" / "KNOWN_KEYS.md").read_text()
    pems = re.findall(r"-----BEGIN PRIVATE KEY-----.*?-----END PRIVATE KEY-----", text, re.S)
    loaded = [serialization.load_pem_private_key(p.encode(), None) for p in pems]
    assert loaded[0].private_numbers() == rsa_key().private_numbers()
    assert loaded[1].private_numbers().private_value == n(kk.EC_D)
    assert kk.AES256_VALUE.hex() in text and kk.HMAC_VALUE.decode() in text
    assert kk.HMAC_SHA256_OF_MESSAGE.hex() in text


def test_runtime_code_needs_no_cryptography():
    from test_layers import PACKAGE, imports_of, sources

    assert [str(p) for p in sources() if any(i.startswith("cryptography") for i in imports_of(p))] == []
    assert (PACKAGE / "known_keys.py").exists()


# ---------------------------------------------------------------- 65 Create known keys


def test_known_keys_on_the_token_read_back_by_pkcs11_tool(menu, home, independent):
    code, out = menu(home, LOGIN + "65\n1\ny\n65\n1\ny\n0\n")
    assert code == 0, out
    first, second = out.split("Token objects? [Y/n] : y", 2)[1:]
    assert first.count("created") == 6 and "already there" not in first
    assert second.count("already there") == 6  # fixed values: one copy each is enough
    listed = independent(
        home, "--token-label", "member1", "--login", "--pin", USER_PIN, "--list-objects"
    ).stdout
    for key in kk.KNOWN_KEYS:
        assert listed.count(f"label:      {key.label}") == len(key.objects), listed
    # the secret parts stay sensitive: the value cannot be read back
    assert "ckdemo-known-aes256" in listed
    read = independent(
        home,
        "--token-label",
        "member1",
        "--login",
        "--pin",
        USER_PIN,
        "--read-object",
        "--type",
        "secrkey",
        "--label",
        "ckdemo-known-aes256",
    )
    assert read.returncode != 0


# ---------------------------------------------------------------- 60 Wrap key


def test_wrapped_keys_unwrap_with_cryptography(menu, home, tmp_path):
    files = {name: tmp_path / f"{name}.wrap" for name in ("kw", "kwp", "oaep", "rsa")}
    code, out = menu(
        home,
        KNOWN
        + f"""\
        60
        1
        {AES}
        {AES}
        1
        {files["kw"]}
        60
        1
        {AES}
        {HMAC}
        2
        {files["kwp"]}
        60
        1
        {RSA_PUB}
        {AES}
        3
        {files["oaep"]}
        60
        1
        {AES}
        {RSA_PRIV}
        2
        {files["rsa"]}
        0
        """,
    )
    assert code == 0, out
    assert statuses(out) == [OK] * 7
    kw, kwp = files["kw"].read_bytes(), files["kwp"].read_bytes()
    assert aes_key_unwrap(kk.AES256_VALUE, kw) == kk.AES256_VALUE
    assert aes_key_unwrap_with_padding(kk.AES256_VALUE, kwp) == kk.HMAC_VALUE
    oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    assert rsa_key().decrypt(files["oaep"].read_bytes(), oaep) == kk.AES256_VALUE
    pkcs8 = aes_key_unwrap_with_padding(kk.AES256_VALUE, files["rsa"].read_bytes())
    # SoftHSM2 zero-pads the PKCS#8 to a multiple of 8 even for _PAD (docs/KNOWN_KEYS.md)
    der_length = 4 + int.from_bytes(pkcs8[2:4], "big")  # SEQUENCE, long form, 2 length bytes
    assert pkcs8[:2] == b"\x30\x82" and set(pkcs8[der_length:]) <= {0} and len(pkcs8) % 8 == 0
    assert (
        serialization.load_der_private_key(pkcs8[:der_length], None).private_numbers()
        == rsa_key().private_numbers()
    )
    # the screen shows what the file holds
    assert kw.hex() in out and kwp.hex() in out
    assert f"Key {AES} wrapped with key {AES} (CKM_AES_KEY_WRAP): 40 bytes written to {files['kw']}" in out


def test_wrap_failures_leave_no_file(menu, home, tmp_path):
    target = tmp_path / "out.wrap"
    code, out = menu(
        home,
        KNOWN
        + f"""\
        # an unknown key handle
        60
        1
        {AES}
        99
        1
        {target}
        @expect CKR_OBJECT_HANDLE_INVALID
        # the wrong key type: an HMAC key cannot wrap with CKM_AES_KEY_WRAP
        60
        1
        {HMAC}
        {AES}
        1
        {target}
        @expect CKR_WRAPPING_KEY_TYPE_INCONSISTENT
        # a key class that cannot wrap at all (an EC private key has no CKA_WRAP)
        60
        1
        {EC_PRIV}
        {AES}
        2
        {target}
        @expect CKR_KEY_FUNCTION_NOT_PERMITTED
        # an output folder that does not exist: refused before any call
        60
        1
        {AES}
        {AES}
        1
        {tmp_path}/missing/out.wrap
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert "Wrap key: no object with handle 99 in session 1" in out
    assert "Status: C_WrapKey returned error. (CKR_WRAPPING_KEY_TYPE_INCONSISTENT 0x00000115)" in out
    assert f"Wrap key: object {EC_PRIV} has no CKA_WRAP" in out
    assert f"Cannot write {tmp_path}/missing/out.wrap: the folder does not exist or is not writable." in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no file, no temporary left


# ---------------------------------------------------------------- 61 Unwrap key


def test_unwrap_keys_wrapped_by_cryptography(menu, home, tmp_path):
    """Keys wrapped outside the HSM come in and work: HMAC gives hashlib's MAC, the RSA private
    key signs what cryptography verifies with its own copy of the public key."""
    secret = b"an HMAC key wrapped by cryptography"[:32]
    (tmp_path / "hmac.wrap").write_bytes(aes_key_wrap_with_padding(kk.AES256_VALUE, secret))
    private = rsa.generate_private_key(65537, 2048)
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "rsa.wrap").write_bytes(aes_key_wrap_with_padding(kk.AES256_VALUE, pkcs8))
    (tmp_path / "aes.wrap").write_bytes(aes_key_wrap(kk.AES256_VALUE, bytes(range(100, 132))))
    code, out = menu(
        home,
        KNOWN
        + f"""\
        61
        1
        {AES}
        2
        {tmp_path}/hmac.wrap
        1
        2
        outside-hmac
        n
        42
        1
        8
        9
        message
        ""
        61
        1
        {AES}
        2
        {tmp_path}/rsa.wrap
        2
        3
        outside-rsa
        n
        42
        1
        9
        1
        message
        ""
        61
        1
        {AES}
        1
        {tmp_path}/aes.wrap
        1
        1
        outside-aes
        y
        0
        """,
    )
    assert code == 0, out
    assert "Unwrapped secret key, type Generic secret (CKM_AES_KEY_WRAP_PAD, session object): handle 8" in out
    assert "Unwrapped private key, type RSA (CKM_AES_KEY_WRAP_PAD, session object): handle 9" in out
    assert "Unwrapped secret key, type AES (CKM_AES_KEY_WRAP, token object): handle 10" in out
    signatures = re.findall(r"^Signature \(\d+ bytes, \S+\):\n([0-9a-f]+)$", out, re.MULTILINE)
    assert signatures[0] == hmac.new(secret, b"message", hashlib.sha256).hexdigest()
    private.public_key().verify(bytes.fromhex(signatures[1]), b"message", padding.PKCS1v15(), hashes.SHA256())


def test_unwrap_failures(menu, home, tmp_path):
    (tmp_path / "empty.wrap").write_bytes(b"")
    good = aes_key_wrap(kk.AES256_VALUE, bytes(32))
    (tmp_path / "corrupt.wrap").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    code, out = menu(
        home,
        KNOWN
        + f"""\
        # a file that is not there
        61
        1
        {AES}
        1
        {tmp_path}/missing.wrap
        @expect BAD_INPUT
        # an empty file
        61
        1
        {AES}
        1
        {tmp_path}/empty.wrap
        @expect BAD_INPUT
        # a secret key cannot be an RSA key
        61
        1
        {AES}
        1
        {tmp_path}/corrupt.wrap
        1
        3
        @expect BAD_INPUT
        # data that does not unwrap under this key: the module's own answer
        61
        1
        {AES}
        1
        {tmp_path}/corrupt.wrap
        1
        1
        broken
        n
        @expect CKR_GENERAL_ERROR
        # an unknown unwrapping key
        61
        1
        77
        1
        {tmp_path}/corrupt.wrap
        1
        1
        broken
        n
        @expect CKR_OBJECT_HANDLE_INVALID
        0
        """,
    )
    assert code == 0, out
    assert f"Cannot read {tmp_path}/missing.wrap: no such file." in out
    assert f"Invalid input: {tmp_path}/empty.wrap is empty." in out
    assert "Invalid input: a secret key cannot be of type RSA." in out
    assert "Status: C_UnwrapKey returned error. (CKR_GENERAL_ERROR 0x00000005)" in out


# ---------------------------------------------------------------- 63 Derive Key


def test_ecdh_agrees_both_ways_and_with_cryptography(menu, home, tmp_path):
    """A = the known EC key, B = a key pair generated on the token (45), C = made by cryptography.
    A priv + B pub and B priv + A pub give one key; A priv + C pub gives what C priv + A pub
    gives in cryptography. Each derived AES key leaves wrapped under the known AES key."""
    peer = ec.generate_private_key(ec.SECP256R1())
    c_point = peer.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    wraps = [tmp_path / f"{name}.wrap" for name in ("ab", "ba", "ac")]
    code, out = menu(
        home,
        KNOWN
        + f"""\
        45
        1
        4
        peer-b
        n
        y
        n
        63
        1
        {EC_PRIV}
        8
        2
        a-with-b
        n
        63
        1
        9
        {EC_PUB}
        2
        b-with-a
        n
        63
        1
        {EC_PRIV}
        hex:{c_point.hex()}
        2
        a-with-c
        n
        60
        1
        {AES}
        10
        1
        {wraps[0]}
        60
        1
        {AES}
        11
        1
        {wraps[1]}
        60
        1
        {AES}
        12
        1
        {wraps[2]}
        0
        """,
    )
    assert code == 0, out
    assert "Generated EC P-256 key pair: public key handle 8, private key handle 9" in out
    for handle in (10, 11, 12):
        assert f"Derived AES-256 key (CKM_ECDH1_DERIVE, KDF null, session object): handle {handle}" in out
    ab, ba, ac = (aes_key_unwrap(kk.AES256_VALUE, w.read_bytes()) for w in wraps)
    assert ab == ba and len(ab) == 32
    assert ac == peer.exchange(ec.ECDH(), ec_key().public_key())


def test_derive_failures(menu, home):
    code, out = menu(
        home,
        KNOWN
        + f"""\
        # an AES key is no ECDH base key
        63
        1
        {AES}
        {EC_PUB}
        2
        x
        n
        @expect CKR_KEY_FUNCTION_NOT_PERMITTED
        # the peer handle must be an EC public key
        63
        1
        {EC_PRIV}
        {AES}
        2
        x
        n
        @expect CKR_ATTRIBUTE_TYPE_INVALID
        # an unknown peer handle
        63
        1
        {EC_PRIV}
        99
        2
        x
        n
        @expect CKR_OBJECT_HANDLE_INVALID
        # hex that is not hex
        63
        1
        {EC_PRIV}
        hex:04zz
        @expect BAD_INPUT
        # a point that is not on the curve: the module's own answer
        63
        1
        {EC_PRIV}
        hex:0411
        2
        x
        n
        @expect CKR_GENERAL_ERROR
        0
        """,
    )
    assert code == 0, out
    assert f"Derive Key: key {AES} has CKA_DERIVE=FALSE (checked by ckdemo before the call)" in out
    assert f"Derive Key: object {AES} has no CKA_EC_POINT (not an EC public key)" in out
    assert "Invalid input: the EC point is not valid hex." in out


# ---------------------------------------------------------------- 64 PBE Key Gen


def test_pbe_shows_the_modules_own_mechanism_invalid(menu, home):
    code, out = menu(
        home,
        LOGIN
        + """\
        64
        1
        Not-Shown-Passw0rd
        hex:73616c74
        2048
        pbe-key
        @expect CKR_MECHANISM_INVALID
        0
        """,
    )
    assert code == 0, out
    assert "CKM_PKCS5_PBKD2 is not in this slot's mechanism list" in out
    assert "PBE Key Gen: the module has no PBE mechanism (CKM_PKCS5_PBKD2)" in out
    assert "Status: C_GenerateKey returned error. (CKR_MECHANISM_INVALID 0x00000070)" in out
    assert "Not-Shown-Passw0rd" not in out and "Enter password : ****" in out


def test_pbe_bad_input(menu, home):
    code, out = menu(
        home,
        LOGIN
        + """\
        64
        1
        pw
        hex:zz
        @expect BAD_INPUT
        64
        1
        pw
        salt
        0
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert "Invalid input: the salt is not valid hex." in out
    assert "Invalid input (0): choose 1-10000000." in out


# ---------------------------------------------------------------- 66 Seed RNG


def test_seed_rng_text_and_hex(menu, home):
    code, out = menu(
        home,
        LOGIN
        + """\
        66
        1
        some seed text
        66
        1
        hex:00ff00ff
        66
        1
        hex:
        @expect BAD_INPUT
        66
        1
        0xabc
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert "RNG seeded with 14 bytes" in out and "RNG seeded with 4 bytes" in out
    assert "Invalid input: an empty seed." in out
    assert "Invalid input: the seed is not valid hex." in out


# ---------------------------------------------------------------- 67 EC User Defined Curves


def test_ec_curves_table_and_explicit_parameters(menu, home):
    code, out = menu(
        home,
        LOGIN
        + """\
        67
        1
        y
        26
        1
        .
        0
        """,
    )
    assert code == 0, out
    for name, oid, _ in kk.NAMED_CURVES:
        assert re.search(rf"^{name}\s+{re.escape(oid)}\s+accepted$", out, re.MULTILINE), name
    assert f"{len(kk.NAMED_CURVES)} of {len(kk.NAMED_CURVES)} named curves accepted" in out
    assert (
        "CKM_EC_KEY_PAIR_GEN has no CKF_EC_ECPARAMETERS: the module does not support "
        "user-defined curves (explicit EC parameters)." in out
    )
    assert (
        "P-256 as explicit parameters: accepted, although the module does not advertise "
        "CKF_EC_ECPARAMETERS." in out
    )
    # every probe key pair was destroyed again: only the HA group's domain keys are left
    assert f"{DOMAIN_KEYS} object(s) found." in out


class CurveSession:
    def __init__(self, refuse: set[bytes]) -> None:
        self.refuse, self.tried = refuse, []

    def probe_ec_curve(self, params: bytes) -> None:
        from ckdemo.codes import CKR_CURVE_NOT_SUPPORTED, CKRError

        self.tried.append(params)
        if params in self.refuse:
            raise CKRError(CKR_CURVE_NOT_SUPPORTED, "C_GenerateKeyPair")


def test_explicit_curves_are_offered_where_the_module_advertises_them():
    from ckdemo.handlers import keys
    from ckdemo.menu.context import Context
    from ckdemo.model import MechanismInfo
    from ckdemo.workspace import Workspace

    class Slot:
        def mechanism_info(self, mechanism):
            return MechanismInfo(mechanism, "CKM_EC_KEY_PAIR_GEN", 256, 521, 0x10000 | 0x400000)

    session = CurveSession(refuse={kk.NAMED_CURVES[3][2]})
    session.handle = 1
    workspace = Workspace([Slot()])
    workspace.add_session(1, session)
    screen = Screen(["1", ""])
    keys.ec_curves(Context(workspace, screen))
    assert re.search(r"^secp256k1\s+1\.3\.132\.0\.10\s+CKR_CURVE_NOT_SUPPORTED$", screen.text, re.M)
    assert "8 of 9 named curves accepted" in screen.text
    assert "Try P-256 given as explicit parameters? [Y/n] : " in screen.text
    assert session.tried[-1] == kk.P256_EXPLICIT_PARAMS
    assert "P-256 as explicit parameters: accepted." in screen.text


# ---------------------------------------------------------------- the HA slot and its members

HA_SLOT = 5  # a default home: member1-3, the empty SoftHSM slot, then the HA slot
MEMBERS = ("member1", "member2", "member3")


def test_ha_slot_known_keys_unwrap_and_derive_reach_every_member(menu, home, independent, tmp_path):
    wrapped = tmp_path / "hmac.wrap"
    code, out = menu(
        home,
        f"""\
        50
        {HA_SLOT}
        5678
        51
        {HA_SLOT}
        {USER_PIN}
        1
        {HA_SLOT}
        y
        65
        ${{LAST_SESSION}}
        y
        60
        ${{LAST_SESSION}}
        ${{LAST_KNOWN_AES256}}
        ${{LAST_KNOWN_HMAC}}
        2
        {wrapped}
        61
        ${{LAST_SESSION}}
        ${{LAST_KNOWN_AES256}}
        2
        {wrapped}
        1
        2
        ha-unwrapped-hmac
        y
        63
        ${{LAST_SESSION}}
        ${{LAST_KNOWN_EC_P256_PRIVATE}}
        ${{LAST_KNOWN_EC_P256_PUBLIC}}
        3
        ha-derived
        y
        0
        """,
    )
    assert code == 0, out
    assert aes_key_unwrap_with_padding(kk.AES256_VALUE, wrapped.read_bytes()) == kk.HMAC_VALUE
    for member in MEMBERS:
        listed = independent(
            home, "--token-label", member, "--login", "--pin", USER_PIN, "--list-objects"
        ).stdout
        for label in [k.label for k in kk.KNOWN_KEYS] + ["ha-unwrapped-hmac", "ha-derived"]:
            assert f"label:      {label}" in listed, (member, label, listed)


def test_a_key_wrapped_on_one_member_unwraps_on_another(menu, home, tmp_path):
    wrapped = tmp_path / "rsa.wrap"
    code, out = menu(
        home,
        f"""\
        1
        1
        y
        3
        ${{LAST_SESSION}}
        1
        {USER_PIN}
        65
        ${{LAST_SESSION}}
        n
        60
        ${{LAST_SESSION}}
        ${{LAST_KNOWN_AES256}}
        ${{LAST_KNOWN_RSA2048_PRIVATE}}
        2
        {wrapped}
        1
        2
        y
        3
        ${{LAST_SESSION}}
        1
        {USER_PIN}
        65
        ${{LAST_SESSION}}
        n
        61
        ${{LAST_SESSION}}
        ${{LAST_KNOWN_AES256}}
        2
        {wrapped}
        2
        3
        from-member1
        n
        42
        ${{LAST_SESSION}}
        ${{LAST_OBJECT}}
        1
        {kk.SIGNED_MESSAGE.decode()}
        ""
        0
        """,
    )
    assert code == 0, out
    assert "Unwrapped private key, type RSA (CKM_AES_KEY_WRAP_PAD, session object)" in out
    # PKCS#1 v1.5 is deterministic: member2's copy signs exactly as the known key does
    assert kk.RSA_SHA256_SIGNATURE.hex() in out


def test_a_raw_point_whose_x_begins_with_its_size_less_two_stays_whole():
    """04 || x || y with x[0] == 0x3f (63, the point's size less 2) looks like a DER OCTET STRING
    of 63 bytes: the menu's ECDH took two bytes off it (CKR_GENERAL_ERROR, 1 run in 256 of
    test_ecdh_agrees_both_ways_and_with_cryptography). A DER-wrapped point is still unwrapped."""
    from ckdemo.handlers.keys import _raw_point

    point = b"\x04\x3f" + b"\x11" * 63
    assert _raw_point(point) == point
    assert _raw_point(b"\x04\x41" + point) == point
    p521 = b"\x04" + b"\x22" * 132
    assert _raw_point(b"\x04\x81\x85" + p521) == p521 and _raw_point(p521) == p521
