"""What a key generation sends to a member token, from a KeySpec: the mechanism and the
templates, one builder for both kinds of member (a loaded module, a remote p11-kit server).

A spec from an application's template (`token_defaults`) carries only what the application
gave: the token fills in the rest with its own defaults, as one token would. Other specs (the
menu, bench, soak) get python-pkcs11's default usage flags (its DEFAULT_KEY_CAPABILITIES), as
ckdemo has always made them."""

from __future__ import annotations

from typing import Any

from ..model import (
    CKA_CLASS,
    CKA_DECRYPT,
    CKA_DERIVE,
    CKA_EC_PARAMS,
    CKA_ENCRYPT,
    CKA_EXTRACTABLE,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_MODULUS_BITS,
    CKA_PRIVATE,
    CKA_PUBLIC_EXPONENT,
    CKA_SENSITIVE,
    CKA_SIGN,
    CKA_TOKEN,
    CKA_UNWRAP,
    CKA_VALUE_LEN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_WRAP_WITH_TRUSTED,
    CKK_AES,
    CKK_EC,
    CKK_GENERIC_SECRET,
    CKK_RSA,
    CKM_AES_KEY_GEN,
    CKM_EC_KEY_PAIR_GEN,
    CKM_RSA_PKCS_KEY_PAIR_GEN,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
    KeySpec,
)

CKM_GENERIC_SECRET_KEY_GEN = 0x350
CURVES = {  # DER OIDs of the named curves (ECParameters namedCurve)
    "P-256": bytes.fromhex("06082a8648ce3d030107"),
    "P-384": bytes.fromhex("06052b81040022"),
    "P-521": bytes.fromhex("06052b81040023"),
}
KEY_TYPES = {"aes": (CKK_AES, CKM_AES_KEY_GEN), "generic": (CKK_GENERIC_SECRET, CKM_GENERIC_SECRET_KEY_GEN)}
PAIRS = {"rsa": (CKK_RSA, CKM_RSA_PKCS_KEY_PAIR_GEN), "ec": (CKK_EC, CKM_EC_KEY_PAIR_GEN)}
# python-pkcs11's default capabilities by key type (DEFAULT_KEY_CAPABILITIES)
SECRET_CAPABILITIES = {
    CKK_AES: {
        CKA_ENCRYPT: True,
        CKA_DECRYPT: True,
        CKA_WRAP: True,
        CKA_UNWRAP: True,
        CKA_SIGN: True,
        CKA_VERIFY: True,
        CKA_DERIVE: False,
    },
    CKK_GENERIC_SECRET: {
        CKA_ENCRYPT: False,
        CKA_DECRYPT: False,
        CKA_WRAP: False,
        CKA_UNWRAP: False,
        CKA_SIGN: False,
        CKA_VERIFY: False,
        CKA_DERIVE: False,
    },
}
PAIR_CAPABILITIES = {  # (public, private) capability attributes for RSA and EC pairs
    "rsa": (
        {CKA_ENCRYPT: True, CKA_WRAP: True, CKA_VERIFY: True},
        {CKA_DECRYPT: True, CKA_UNWRAP: True, CKA_SIGN: True, CKA_DERIVE: False},
    ),
    "ec": (
        {CKA_ENCRYPT: False, CKA_WRAP: False, CKA_VERIFY: True},
        {CKA_DECRYPT: False, CKA_UNWRAP: False, CKA_SIGN: True, CKA_DERIVE: True},
    ),
}
RSA_PUBLIC_EXPONENT = b"\x01\x00\x01"

Template = dict[int, Any]


def templates(spec: KeySpec) -> tuple[int, Template | None, Template]:
    """(mechanism, public key template or None for a secret key, secret or private key template)."""
    common = {CKA_ID: spec.key_id, CKA_LABEL: spec.label, CKA_TOKEN: spec.token}
    secret = {CKA_PRIVATE: spec.private, CKA_SENSITIVE: spec.sensitive, CKA_EXTRACTABLE: spec.extractable}
    if spec.wrap_with_trusted:
        secret[CKA_WRAP_WITH_TRUSTED] = True
    if spec.kind in KEY_TYPES:
        key_type, mechanism = KEY_TYPES[spec.kind]
        usage = {} if spec.token_defaults else SECRET_CAPABILITIES[key_type]
        return (
            mechanism,
            None,
            {
                CKA_CLASS: CKO_SECRET_KEY,
                CKA_KEY_TYPE: key_type,
                **usage,
                **common,
                CKA_VALUE_LEN: int(spec.size),
                **secret,
                **dict(spec.extra),
            },
        )
    if spec.kind not in PAIRS:
        raise ValueError(f"unknown key kind {spec.kind!r}")
    key_type, mechanism = PAIRS[spec.kind]
    public_usage, private_usage = ({}, {}) if spec.token_defaults else PAIR_CAPABILITIES[spec.kind]
    public = {CKA_CLASS: CKO_PUBLIC_KEY, CKA_KEY_TYPE: key_type, **public_usage, **common, CKA_PRIVATE: False}
    if spec.kind == "rsa":
        public.update({CKA_PUBLIC_EXPONENT: RSA_PUBLIC_EXPONENT, CKA_MODULUS_BITS: int(spec.size)})
    else:
        public[CKA_EC_PARAMS] = CURVES[spec.size]
    public.update(spec.public_extra)
    private = {
        CKA_CLASS: CKO_PRIVATE_KEY,
        CKA_KEY_TYPE: key_type,
        **private_usage,
        **common,
        **secret,
        **dict(spec.extra),
    }
    return mechanism, public, private
