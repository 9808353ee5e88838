"""C_GenerateKey / C_GenerateKeyPair templates as what a slot's generate() takes (a KeySpec),
plus the attributes a KeySpec cannot say, set on the new keys afterwards."""

from __future__ import annotations

from ..codes import (
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_CURVE_NOT_SUPPORTED,
    CKR_MECHANISM_INVALID,
    CKR_TEMPLATE_INCOMPLETE,
    CKR_TEMPLATE_INCONSISTENT,
    CKRError,
)
from ..model import (
    CKA_CLASS,
    CKA_EC_PARAMS,
    CKA_PRIVATE,
    CKA_EXTRACTABLE,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_SENSITIVE,
    CKA_TOKEN,
    CKA_VALUE_LEN,
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
# what a template that does not say gets, as on one SoftHSM2 token (PKCS#11 leaves it to the
# token): not sensitive. An application that wants its key secret says CKA_SENSITIVE = TRUE.
TOKEN_DEFAULT_SENSITIVE = False
RSA_EXPONENT = 65537  # what the member layer generates with (python-pkcs11's default)
# DER ECParameters (namedCurve OID) -> the curve names KeySpec takes
CURVES = {
    bytes.fromhex("06082a8648ce3d030107"): "P-256",
    bytes.fromhex("06052b81040022"): "P-384",
    bytes.fromhex("06052b81040023"): "P-521",
}
SECRET_KINDS = {
    CKM_AES_KEY_GEN: ("aes", CKK_AES),
    CKM_GENERIC_SECRET_KEY_GEN: ("generic", CKK_GENERIC_SECRET),
}
# attributes the KeySpec itself decides; every other one is compared and set afterwards.
# CKA_PRIVATE of a secret or private key too (a token's default TRUE); a public key is public.
TOKEN_DEFAULT_PRIVATE = True
IN_SPEC = frozenset(
    {
        CKA_CLASS,
        CKA_KEY_TYPE,
        CKA_TOKEN,
        CKA_PRIVATE,
        CKA_SENSITIVE,
        CKA_EXTRACTABLE,
        CKA_MODULUS_BITS,
        CKA_PUBLIC_EXPONENT,
        CKA_EC_PARAMS,
        CKA_VALUE_LEN,
    }
)


def secret_key_spec(mechanism: int, template: dict[int, object]) -> KeySpec:
    function = "C_GenerateKey"
    if mechanism not in SECRET_KINDS:
        raise CKRError(
            CKR_MECHANISM_INVALID,
            function,
            f"ckdemo serve generates AES and generic secret keys, not mechanism {mechanism:#x}",
        )
    kind, key_type = SECRET_KINDS[mechanism]
    _expect(template, CKA_CLASS, CKO_SECRET_KEY, function)
    _expect(template, CKA_KEY_TYPE, key_type, function)
    if CKA_VALUE_LEN not in template:
        raise CKRError(CKR_TEMPLATE_INCOMPLETE, function, "CKA_VALUE_LEN is needed")
    return KeySpec(
        kind,
        int(template[CKA_VALUE_LEN]),
        str(template.get(CKA_LABEL, "")),
        bytes(template.get(CKA_ID, b"")),
        token=bool(template.get(CKA_TOKEN, False)),
        sensitive=bool(template.get(CKA_SENSITIVE, TOKEN_DEFAULT_SENSITIVE)),
        extractable=bool(template.get(CKA_EXTRACTABLE, False)),
        private=bool(template.get(CKA_PRIVATE, TOKEN_DEFAULT_PRIVATE)),
        extra=at_generation(template),
        token_defaults=True,
    )


def key_pair_spec(mechanism: int, public: dict[int, object], private: dict[int, object]) -> KeySpec:
    function = "C_GenerateKeyPair"
    _expect(public, CKA_CLASS, CKO_PUBLIC_KEY, function)
    _expect(private, CKA_CLASS, CKO_PRIVATE_KEY, function)
    if mechanism == CKM_RSA_PKCS_KEY_PAIR_GEN:
        kind, key_type = "rsa", CKK_RSA
        if CKA_MODULUS_BITS not in public:
            raise CKRError(CKR_TEMPLATE_INCOMPLETE, function, "CKA_MODULUS_BITS is needed")
        size: int | str = int(public[CKA_MODULUS_BITS])
        exponent = public.get(CKA_PUBLIC_EXPONENT)
        if exponent is not None and int.from_bytes(bytes(exponent), "big") != RSA_EXPONENT:
            raise CKRError(
                CKR_ATTRIBUTE_VALUE_INVALID,
                function,
                f"the slots generate RSA keys with public exponent {RSA_EXPONENT} only",
            )
    elif mechanism == CKM_EC_KEY_PAIR_GEN:
        kind, key_type = "ec", CKK_EC
        params = public.get(CKA_EC_PARAMS, private.get(CKA_EC_PARAMS))
        if params is None:
            raise CKRError(CKR_TEMPLATE_INCOMPLETE, function, "CKA_EC_PARAMS is needed")
        if bytes(params) not in CURVES:
            raise CKRError(
                CKR_CURVE_NOT_SUPPORTED,
                function,
                f"ckdemo serve generates on P-256, P-384 and P-521, not {bytes(params).hex()}",
            )
        size = CURVES[bytes(params)]
    else:
        raise CKRError(
            CKR_MECHANISM_INVALID,
            function,
            f"ckdemo serve generates RSA and EC key pairs, not mechanism {mechanism:#x}",
        )
    _expect(public, CKA_KEY_TYPE, key_type, function)
    _expect(private, CKA_KEY_TYPE, key_type, function)
    token = bool(private.get(CKA_TOKEN, False))
    public_extra = at_generation(public)
    if CKA_PRIVATE in public:  # a public key asked private (a token's default is public)
        public_extra += ((CKA_PRIVATE, bool(public[CKA_PRIVATE])),)
    if bool(public.get(CKA_TOKEN, False)) != token:  # a token key with a session half, or back
        public_extra += ((CKA_TOKEN, bool(public.get(CKA_TOKEN, False))),)
    return KeySpec(
        kind,
        size,
        str(private.get(CKA_LABEL, public.get(CKA_LABEL, ""))),
        bytes(private.get(CKA_ID, public.get(CKA_ID, b""))),
        token=token,
        sensitive=bool(private.get(CKA_SENSITIVE, TOKEN_DEFAULT_SENSITIVE)),
        extractable=bool(private.get(CKA_EXTRACTABLE, False)),
        private=bool(private.get(CKA_PRIVATE, TOKEN_DEFAULT_PRIVATE)),
        extra=at_generation(private),
        public_extra=public_extra,
        token_defaults=True,
    )


def beyond_spec(template: dict[int, object]) -> dict[int, object]:
    """What the KeySpec did not carry: usage flags, a label or ID of its own ..."""
    return {a: v for a, v in template.items() if a not in IN_SPEC}


def at_generation(template: dict[int, object]) -> tuple[tuple[int, object], ...]:
    """What goes into the generation itself (KeySpec.extra): every attribute beyond the spec but
    the label and ID, which name the key on the members and are set afterwards when a half of a
    pair has its own."""
    return tuple((a, v) for a, v in beyond_spec(template).items() if a not in (CKA_LABEL, CKA_ID))


def _expect(template: dict[int, object], attribute: int, value: int, function: str) -> None:
    if attribute in template and int(template[attribute]) != value:
        raise CKRError(
            CKR_TEMPLATE_INCONSISTENT,
            function,
            f"attribute {attribute:#x} is {template[attribute]}, the mechanism makes {value:#x}",
        )
