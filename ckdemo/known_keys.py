"""Fixed, public test keys and known-answer vectors, so results can be reproduced off the HSM.

Choice 65 creates the keys, choice 90 runs the vectors; docs/KNOWN_KEYS.md lists every value and
shows how to redo each result with openssl or `cryptography`. The RSA and EC keys were generated
once with `cryptography` and written here as constants: nothing at run time needs `cryptography`.
They are known to everybody: never protect anything with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import (
    CKA_CLASS,
    CKA_DECRYPT,
    CKA_DERIVE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_ENCRYPT,
    CKA_EXTRACTABLE,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_MODULUS,
    CKA_PRIVATE,
    CKA_PUBLIC_EXPONENT,
    CKA_SENSITIVE,
    CKA_SIGN,
    CKA_TOKEN,
    CKA_UNWRAP,
    CKA_VALUE,
    CKA_VERIFY,
    CKA_WRAP,
    CKK_AES,
    CKK_EC,
    CKK_GENERIC_SECRET,
    CKK_RSA,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
)

# RSA private key parts (PKCS#11 v2.40 CKA_* values; model.py names only what every layer needs)
CKA_PRIVATE_EXPONENT, CKA_PRIME_1, CKA_PRIME_2 = 0x123, 0x124, 0x125
CKA_EXPONENT_1, CKA_EXPONENT_2, CKA_COEFFICIENT = 0x126, 0x127, 0x128


def _hex(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


# ---- the keys --------------------------------------------------------------------------------
AES256_VALUE = bytes(range(32))  # FIPS-197 appendix C.3: 000102...1f
# 32 bytes of ASCII, so `openssl dgst -sha256 -hmac ckdemo-known-hmac-sha256-key-32b` reproduces
# it; SoftHSM2 wants >= 32 bytes for HMAC-SHA256, and a multiple of 8 survives its key wrap as is
HMAC_VALUE = b"ckdemo-known-hmac-sha256-key-32b"

RSA_PUBLIC_EXPONENT = b"\x01\x00\x01"  # 65537
RSA_N = _hex(
    "de21028bd35af626055d9540a3f3b1d55e20de80f1e0b5a8a3b58f52cbcc1968"
    "f11ccb6a732b9222910cbe58643c1e46a351c16b000f3e0623f7cdc395e3ec6f"
    "e24860ac1aabc98bee4903c8d328d8c6f131c866e04edbf10eb3195c1a4a64cb"
    "4f8a02b39282390f3168a3263fac1efb4a34c2899a0a88268bdcc5927385ff4f"
    "90a92f00ac5a2a29c6a54ecd2bf8a45ed8458ff14adf9018e866a517cc569ef8"
    "12dc13bbbc97720425418bba83e67c42592b80d8d19f1903c2e983d3a9df803d"
    "07beeea04a395361d2bc150878821ba2361ece519c1fc4b5dc3ec8d1abd166ed"
    "ffdd5cbda1609726134d60eec085b601dfc1322e01b4eb043e74a6000ce9ef67"
)
RSA_D = _hex(
    "121941725acdbf5eee07fd2864fe19aac7691e880617e78fee8ad565e074bda0"
    "9c7e054af948546206f731592ab845453f25b855e60d828c65de2e80a0540fb3"
    "36b8ebfb89e41e5f62e7c5c1aab184d18231d560cb27a71461e7663512c550a7"
    "74d076138de7ee0b415cd9123d94e224afc6a8652577c9e1237b365e8e401d98"
    "5b4bf1a9e517f5b1b6259240f08773c66d4165fe32519c80e00f7c46b7d04300"
    "5f53aa72e16ccad60ee616ffa5c57a68c4ca2225d70ba4d44f458b1b7b22d6a0"
    "79afd537c488666c41daa5453a040c6bef7ce5bba5635a81d6fa3198ef90f730"
    "34412866a3973d1b7481ccf56c03ace48b6c41bee4124412e7e9d3f70c3e1815"
)
RSA_P = _hex(
    "f9b1e9ab81247ecb684baebd04abfa35b039b763806ae2cbfcc3a3c0ca5175df"
    "b5ff805ee24beac8c9935c624a02150d0644e72466d2e7f93e96fa09d32a6d21"
    "ab12b1bd5a9c4708e5cafd0a786ed565c1dcfe78f2b68ba329f5e41e33824c61"
    "2c91211c9c612c21bfe940866fc3fc615cb47d7642197f1fa680e94ca62d5a15"
)
RSA_Q = _hex(
    "e3bce76413039cd37d4c7e78b5612732bc3beb5dcb5c21a3aaec1ba45d84829c"
    "93edbdd21b9d78caea779fd60d44bfc2b1a9784c7a83e6d46b0015a40c8ff697"
    "3022e3ca4c48d33392e3605fc57a3d685d6dcdbe29060557c1cacfba7835b8f0"
    "dfcb0e0de52daa06dc75b4f19afd563fe2f345d8867a2ac18e8f70f16d816e8b"
)
RSA_DP = _hex(
    "dfe7ba3220cc29271d8f40521f2e58606c76550cd4cb043507a427e3698942ba"
    "28e9c4a35129e28fcab269d579a804587996afeee4859b9ed5916d060265b916"
    "c7e12ba130ef9283580c7e7c3522ae19618e5a62fac2d6d4a97be5e36f2d1870"
    "cb16192b1ecfc4533f545a983300fc0012b1870fd4962878a9464fee7bd58f41"
)
RSA_DQ = _hex(
    "a2b361c8c040d378d0caa68c4c6105651ccfde1e5b5c0df864f35be8389ba3c8"
    "8372d52b57695053ffe0c8c35f255fae93c8d456272d36eb492a7d4b7f6216b4"
    "fac1e265b3cc4f7f4810c3d8883805c91afe887fb3c54669e4dca53dbe05fb83"
    "b30ed99299c9def019eec9ffd64fe99fa8df4e661be509c8d0b5afe5fbeafd73"
)
RSA_QINV = _hex(
    "52eadf18260b7769e22ba9d633a0cd6d1488e37b2f95dd170d9eb02b10ce3b22"
    "23ae4070d6b6c1ddbe9fce64e51cfd0c5cd9343da783ed3d27f259a99d95788e"
    "66f12147a673b151d5552460cff88469b038b9684531ae648b023e70a0f49323"
    "52c05ba92cb2ab69ddd4a981c1d7e7a5d3e8fa3fbbd23c6a1d03161c81aebc88"
)

# EC P-256 (secp256r1): private scalar d and public point (x, y)
EC_D = _hex("97dbe29b843b26b84b4761c5438e10135650436da46f8e90d99e7b6eeedb320f")
EC_X = _hex("cee8a49aef144860ca6c35b761f0b9628daaa3d1b18ccb9c43e9dfc9082b3b58")
EC_Y = _hex("6168ae417e8b10708f21a3808b7722b521fbcf2bca6760ee6d167f9fa66af5f4")
P256_PARAMS = _hex("06082a8648ce3d030107")  # ECParameters: namedCurve 1.2.840.10045.3.1.7
EC_POINT_RAW = b"\x04" + EC_X + EC_Y  # uncompressed point (SEC 1), as ECDH takes it
EC_POINT_DER = b"\x04\x41" + EC_POINT_RAW  # CKA_EC_POINT: DER OCTET STRING of the point


@dataclass(frozen=True)
class KnownObject:
    object_class: int
    key_type: int
    values: dict  # {CKA_*: value}: the key material and what the key may do


@dataclass(frozen=True)
class KnownKey:
    title: str
    label: str
    key_id: bytes
    objects: tuple[KnownObject, ...]  # a secret key, or (public, private)

    def templates(
        self, token: bool, private: bool, label: str | None = None, key_id: bytes | None = None
    ) -> list[dict[int, object]]:
        """C_CreateObject templates. Secret parts stay CKA_SENSITIVE (a harness should see what
        a real key shows) but CKA_EXTRACTABLE, so wrap tests can export them; `private` is
        CKA_PRIVATE of the secret and private objects (public keys are never private)."""
        result = []
        for obj in self.objects:
            template = {
                CKA_CLASS: obj.object_class,
                CKA_KEY_TYPE: obj.key_type,
                CKA_TOKEN: token,
                CKA_LABEL: label or self.label,
                CKA_ID: key_id or self.key_id,
            }
            if obj.object_class == CKO_PUBLIC_KEY:
                template[CKA_PRIVATE] = False
            else:
                template.update({CKA_PRIVATE: private, CKA_SENSITIVE: True, CKA_EXTRACTABLE: True})
            result.append({**template, **obj.values})
        return result


_SECRET_AES = {CKA_ENCRYPT: True, CKA_DECRYPT: True, CKA_WRAP: True, CKA_UNWRAP: True}
_RSA_PUBLIC = {CKA_MODULUS: RSA_N, CKA_PUBLIC_EXPONENT: RSA_PUBLIC_EXPONENT}

KNOWN_AES256 = KnownKey(
    "AES-256",
    "ckdemo-known-aes256",
    b"ckdemo-known-1",
    (KnownObject(CKO_SECRET_KEY, CKK_AES, {CKA_VALUE: AES256_VALUE, **_SECRET_AES}),),
)
KNOWN_HMAC = KnownKey(
    "HMAC generic secret (32 bytes)",
    "ckdemo-known-hmac",
    b"ckdemo-known-2",
    (
        KnownObject(
            CKO_SECRET_KEY, CKK_GENERIC_SECRET, {CKA_VALUE: HMAC_VALUE, CKA_SIGN: True, CKA_VERIFY: True}
        ),
    ),
)
KNOWN_RSA2048 = KnownKey(
    "RSA-2048 key pair",
    "ckdemo-known-rsa2048",
    b"ckdemo-known-3",
    (
        KnownObject(
            CKO_PUBLIC_KEY, CKK_RSA, {**_RSA_PUBLIC, CKA_VERIFY: True, CKA_ENCRYPT: True, CKA_WRAP: True}
        ),
        KnownObject(
            CKO_PRIVATE_KEY,
            CKK_RSA,
            {
                **_RSA_PUBLIC,
                CKA_PRIVATE_EXPONENT: RSA_D,
                CKA_PRIME_1: RSA_P,
                CKA_PRIME_2: RSA_Q,
                CKA_EXPONENT_1: RSA_DP,
                CKA_EXPONENT_2: RSA_DQ,
                CKA_COEFFICIENT: RSA_QINV,
                CKA_SIGN: True,
                CKA_DECRYPT: True,
                CKA_UNWRAP: True,
            },
        ),
    ),
)
KNOWN_EC_P256 = KnownKey(
    "EC P-256 key pair",
    "ckdemo-known-ec-p256",
    b"ckdemo-known-4",
    (
        KnownObject(
            CKO_PUBLIC_KEY, CKK_EC, {CKA_EC_PARAMS: P256_PARAMS, CKA_EC_POINT: EC_POINT_DER, CKA_VERIFY: True}
        ),
        KnownObject(
            CKO_PRIVATE_KEY,
            CKK_EC,
            {CKA_EC_PARAMS: P256_PARAMS, CKA_VALUE: EC_D, CKA_SIGN: True, CKA_DERIVE: True},
        ),
    ),
)
KNOWN_KEYS = (KNOWN_AES256, KNOWN_HMAC, KNOWN_RSA2048, KNOWN_EC_P256)


# ---- known-answer vectors (choice 90) ------------------------------------------------------------
ABC = b"abc"
DIGESTS = (  # FIPS 180-4 examples (NIST CSRC "Examples with Intermediate Values"), message "abc"
    ("SHA-1", 0x220, _hex("a9993e364706816aba3e25717850c26c9cd0d89d")),
    ("SHA-256", 0x250, _hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")),
    (
        "SHA-512",
        0x270,
        _hex(
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        ),
    ),
)
# FIPS-197 appendix C.3 (AES-256), with AES256_VALUE as the key
AES_ECB_PLAINTEXT = _hex("00112233445566778899aabbccddeeff")
AES_ECB_CIPHERTEXT = _hex("8ea2b7ca516745bfeafc49904b496089")
# NIST SP 800-38A F.2.5 CBC-AES256.Encrypt
AES_CBC_KEY = _hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
AES_CBC_IV = _hex("000102030405060708090a0b0c0d0e0f")
AES_CBC_PLAINTEXT = _hex(
    "6bc1bee22e409f96e93d7e117393172a",
    "ae2d8a571e03ac9c9eb76fac45af8e51",
    "30c81c46a35ce411e5fbc1191a0a52ef",
    "f69f2445df4f9b17ad2b417be66c3710",
)
AES_CBC_CIPHERTEXT = _hex(
    "f58c4c04d6e5f1ba779eabfb5f7bfbd6",
    "9cfc4e967edb808d679f777bc6702c7d",
    "39f23369a9d9bacfa530e26304231461",
    "b2eb05e2c39be9fcda6c19078c6a9d1b",
)
SP800_38A_AES256 = KnownKey(
    "AES-256 (SP 800-38A)",
    "ckdemo-sp800-38a-aes256",
    b"ckdemo-known-5",
    (KnownObject(CKO_SECRET_KEY, CKK_AES, {CKA_VALUE: AES_CBC_KEY, **_SECRET_AES}),),
)
# RFC 4231 test case 6 (its test cases 1-5 have keys under the 32 bytes SoftHSM2 accepts)
RFC4231_TC6_KEY = b"\xaa" * 131
RFC4231_TC6 = KnownKey(
    "HMAC key (RFC 4231 TC6)",
    "ckdemo-rfc4231-tc6",
    b"ckdemo-known-6",
    (
        KnownObject(
            CKO_SECRET_KEY, CKK_GENERIC_SECRET, {CKA_VALUE: RFC4231_TC6_KEY, CKA_SIGN: True, CKA_VERIFY: True}
        ),
    ),
)
RFC4231_TC6_DATA = b"Test Using Larger Than Block-Size Key - Hash Key First"
RFC4231_TC6_HMAC_SHA256 = _hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")

# Made once with `cryptography` from the known keys (docs/KNOWN_KEYS.md shows how to redo them)
SIGNED_MESSAGE = b"ckdemo known-answer test"
# HMAC-SHA256 of SIGNED_MESSAGE under the known HMAC key (hashlib, openssl dgst -hmac)
HMAC_SHA256_OF_MESSAGE = _hex("0b9b0f7e858bcd1e97e589dfdb6b9bfc5f859dc4ae0ba095f4086d2a29f53909")
# RSA-2048 PKCS#1 v1.5 with SHA-256 (CKM_SHA256_RSA_PKCS): deterministic, compared byte for byte
RSA_SHA256_SIGNATURE = _hex(
    "6e5d34969f496a68e5731a8715c8bd4e20d55bc14b171ae3ad39db45b836bac6"
    "bc7f25f8d878dcebe2357b795fa601c99818725cfa495e062e4904b467d9916e"
    "cd1c08d80c68e4d8d8fde3c92afb29204f858300a9f51a7680f61d01a8bdcff4"
    "5a384b2e633e06032295d33718516a1c9517f085332902d7acb8acc4a8ea005f"
    "78aa60bb298f5224cf6a85d585f186b2bb6910fb94ee283c7c7e4ff422fb4aa8"
    "827d79216eb97199d0d8b073cfa6477ec5617273e26141ecaa9ae055e395b083"
    "2a071fdb99a118841eb1a6c68935dd240ddb2f669246a28ab5e159f08b80b3ae"
    "80af3fc3f730752658c48ea8ad4d2354ebb4a37ecfa0c03121cea8c95fa8c3e7"
)
# ECDSA P-256 over SHA-256(SIGNED_MESSAGE) as r || s (CKM_ECDSA's format): randomised, so verified
ECDSA_SIGNATURE = _hex(
    "3efc853525f3c7d6e959b81a62d64ac1391374263fd9c36348d693ae51b99264"
    "f0956876a65815261b48348e07c317bdf4e31f6464e18b9485c493b6d0d10184"
)

# ---- EC curves (choice 67) -----------------------------------------------------------------------
# P-256 as explicit ECParameters (specifiedCurve, SEC 1 / X9.62): what a user-defined curve looks like
P256_EXPLICIT_PARAMS = _hex(
    "3081e0020101302c06072a8648ce3d0101022100ffffffff0000000100000000"
    "0000000000000000ffffffffffffffffffffffff30440420ffffffff00000001"
    "000000000000000000000000fffffffffffffffffffffffc04205ac635d8aa3a"
    "93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b0441046b17d1"
    "f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342"
    "e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5022100"
    "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551"
    "020101"
)

# name, OID, DER ECParameters (namedCurve): the curves choice 67 tries
NAMED_CURVES = (
    ("secp256r1", "1.2.840.10045.3.1.7", _hex("06082a8648ce3d030107")),
    ("secp384r1", "1.3.132.0.34", _hex("06052b81040022")),
    ("secp521r1", "1.3.132.0.35", _hex("06052b81040023")),
    ("secp256k1", "1.3.132.0.10", _hex("06052b8104000a")),
    ("brainpoolP256r1", "1.3.36.3.3.2.8.1.1.7", _hex("06092b2403030208010107")),
    ("brainpoolP384r1", "1.3.36.3.3.2.8.1.1.11", _hex("06092b240303020801010b")),
    ("brainpoolP512r1", "1.3.36.3.3.2.8.1.1.13", _hex("06092b240303020801010d")),
    ("secp224r1", "1.3.132.0.33", _hex("06052b81040021")),
    ("prime192v1", "1.2.840.10045.3.1.1", _hex("06082a8648ce3d030101")),
)
