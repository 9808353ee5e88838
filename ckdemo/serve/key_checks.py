"""What a token checks at C_SignInit, C_VerifyInit, C_EncryptInit, C_DecryptInit, before any data.

The server keeps an operation and does the member's work at the single-part call or at Final,
so without these checks an Init with a key that may not sign, or of the wrong type, answered
CKR_OK and the refusal came one call later: an application saw its Init succeed where one token
refuses it (found by the differential test against one SoftHSM2 token). Worse, SoftHSM2 2.6.1
crashes the process on C_Verify with an RSA mechanism and an EC key: the HA slot's members live
in this process, so the type is checked here first. Order and codes follow SoftHSM2's
(`SoftHSM::MacSignInit`, `SymEncryptInit` ...): the key's usage flag, its type for the mechanism,
then, for HMAC, the key's length.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..codes import (
    CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_KEY_INDIGESTIBLE,
    CKR_KEY_SIZE_RANGE,
    CKR_KEY_TYPE_INCONSISTENT,
    CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
    CKR_WRAPPED_KEY_LEN_RANGE,
    CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
    CKRError,
)
from ..model import HMAC, KEY_TYPE_OF
from .operations import DECRYPT, ENCRYPT, SIGN, VERIFY

CKA_ENCRYPT, CKA_DECRYPT, CKA_SIGN, CKA_VERIFY = 0x104, 0x105, 0x108, 0x10A
CKA_KEY_TYPE, CKA_VALUE_LEN = 0x100, 0x161
USAGE = {SIGN: CKA_SIGN, VERIFY: CKA_VERIFY, ENCRYPT: CKA_ENCRYPT, DECRYPT: CKA_DECRYPT}
FACTS = [CKA_KEY_TYPE, CKA_VALUE_LEN, *USAGE.values()]
CKA_ALWAYS_AUTHENTICATE = 0x202  # private keys only: read on its own
REAUTHENTICATED = (SIGN, DECRYPT)  # what SoftHSM2 asks a context-specific login for

CKK_GENERIC_SECRET = 0x10


@dataclass(frozen=True)
class KeyFacts:
    """What the checks need of a key, read once per key and connection."""

    key_type: int | None
    length: int  # bytes of a secret key's value; 0 when the slot does not say
    usage: frozenset[str]
    always_authenticate: bool = False  # each sign or decrypt asks for a context-specific login

    @classmethod
    def read(cls, values: dict[int, object], always_authenticate: bool = False) -> "KeyFacts":
        key_type = values.get(CKA_KEY_TYPE)
        return cls(
            int(key_type) if key_type is not None else None,
            int(values.get(CKA_VALUE_LEN) or 0),
            frozenset(kind for kind, attribute in USAGE.items() if values.get(attribute)),
            always_authenticate,
        )


# C_UnwrapKey: SoftHSM2 checks the wrapped key's length for the AES key wraps before anything
# else (its session aside): the shortest blob and the 8-byte blocks of RFC 3394 / RFC 5649
CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD = 0x2109, 0x210A
SHORTEST_WRAPPED = {CKM_AES_KEY_WRAP: 24, CKM_AES_KEY_WRAP_PAD: 16}


def check_wrapped_length(mechanism: int, length: int) -> None:
    """CKR_WRAPPED_KEY_LEN_RANGE for a blob no AES key wrap makes, as one token answers first."""
    shortest = SHORTEST_WRAPPED.get(mechanism)
    if shortest is not None and (length < shortest or length % 8):
        raise CKRError(
            CKR_WRAPPED_KEY_LEN_RANGE,
            "C_UnwrapKey",
            f"{length} bytes: mechanism {mechanism:#x} unwraps 8-byte blocks, at least {shortest}",
        )


# C_UnwrapKey: after the blob's length and the unwrapping key's handle, SoftHSM2 checks that key
# (class and type for the AES key wraps, then CKA_UNWRAP) before the template and the login
CKA_UNWRAP, CKO_SECRET_KEY, CKK_AES = 0x107, 0x4, 0x1F
UNWRAPPING_FACTS = [0x0, CKA_KEY_TYPE, CKA_UNWRAP]  # CKA_CLASS, CKA_KEY_TYPE, CKA_UNWRAP


def check_unwrapping_key(mechanism: int, values: dict[int, object]) -> None:
    """CKRError with one token's answer for this unwrapping key, nothing when it would go on.
    values: UNWRAPPING_FACTS as the slot read them."""
    if mechanism in SHORTEST_WRAPPED and (
        values.get(0x0) != CKO_SECRET_KEY or values.get(CKA_KEY_TYPE) != CKK_AES
    ):
        raise CKRError(
            CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
            "C_UnwrapKey",
            f"mechanism {mechanism:#x} unwraps with an AES secret key",
        )
    if not values.get(CKA_UNWRAP):
        raise CKRError(CKR_KEY_FUNCTION_NOT_PERMITTED, "C_UnwrapKey", "the key's CKA_UNWRAP is not set")


# C_WrapKey: after the wrapping key's handle, SoftHSM2 checks that key (its class and type for the
# mechanism, then CKA_WRAP) before it looks at the key to wrap: a wrapping key that may not wrap is
# the answer even when the other handle names nothing (difftest seed 1500133)
CKA_WRAP = 0x106
CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKK_RSA, CKK_EC = 0x2, 0x3, 0x0, 0x3
CKM_RSA_PKCS, CKM_RSA_PKCS_OAEP, CKM_AES_CBC, CKM_AES_CBC_PAD = 0x1, 0x9, 0x1082, 0x1085
WRAPS_WITH = {
    CKM_AES_KEY_WRAP: (CKO_SECRET_KEY, CKK_AES),
    CKM_AES_KEY_WRAP_PAD: (CKO_SECRET_KEY, CKK_AES),
    CKM_RSA_PKCS: (CKO_PUBLIC_KEY, CKK_RSA),
    CKM_RSA_PKCS_OAEP: (CKO_PUBLIC_KEY, CKK_RSA),
    CKM_AES_CBC: (None, CKK_AES),
    CKM_AES_CBC_PAD: (None, CKK_AES),
}  # (class, key type)
WRAPPING_FACTS = [0x0, CKA_KEY_TYPE, CKA_WRAP]  # CKA_CLASS, CKA_KEY_TYPE, CKA_WRAP


def check_wrapping_key(mechanism: int, values: dict[int, object]) -> None:
    """CKRError with one token's answer for this wrapping key, nothing when it would go on.
    values: WRAPPING_FACTS as the slot read them."""
    wanted = WRAPS_WITH.get(mechanism)
    if wanted is not None and (
        wanted[0] not in (None, values.get(0x0)) or values.get(CKA_KEY_TYPE) != wanted[1]
    ):
        raise CKRError(
            CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
            "C_WrapKey",
            f"mechanism {mechanism:#x} does not wrap with this key's class and type",
        )
    if not values.get(CKA_WRAP):
        raise CKRError(CKR_KEY_FUNCTION_NOT_PERMITTED, "C_WrapKey", "the key's CKA_WRAP is not set")


# C_DigestKey: SoftHSM2 digests an object's CKA_VALUE; these keys have none. It refuses them at
# once (CKR_KEY_INDIGESTIBLE) and its digest goes on; the server digests keys at C_DigestFinal, so
# it checks them here (class, key type) to answer at C_DigestKey, and keeps the digest running
NO_VALUE = frozenset({(CKO_PUBLIC_KEY, CKK_RSA), (CKO_PUBLIC_KEY, CKK_EC), (CKO_PRIVATE_KEY, CKK_RSA)})


def check_digestible(object_class: int, key_type: int | None) -> None:
    if (object_class, key_type) in NO_VALUE:
        raise CKRError(
            CKR_KEY_INDIGESTIBLE,
            "C_DigestKey",
            "the key has no CKA_VALUE to digest (the digest goes on, as on SoftHSM2)",
        )


def check(kind: str, mechanism: int, key: KeyFacts, function: str) -> None:
    """CKRError with the code one token gives at this Init; nothing when it would accept."""
    if kind not in key.usage:
        raise CKRError(
            CKR_KEY_FUNCTION_NOT_PERMITTED, function, f"the key's {kind} flag (CKA_{kind.upper()}) is not set"
        )
    if mechanism in HMAC:
        own_type, shortest = HMAC[mechanism]
        if key.key_type not in (CKK_GENERIC_SECRET, own_type):
            raise CKRError(
                CKR_KEY_TYPE_INCONSISTENT, function, f"mechanism {mechanism:#x} takes a generic secret key"
            )
        if 0 < key.length < shortest:  # 0: the length is not known here, the member decides
            raise CKRError(
                CKR_KEY_SIZE_RANGE,
                function,
                f"mechanism {mechanism:#x} needs a key of at least {shortest} bytes",
            )
        return
    wanted = KEY_TYPE_OF.get(mechanism)
    if wanted is not None and key.key_type != wanted:
        raise CKRError(
            CKR_KEY_TYPE_INCONSISTENT,
            function,
            f"mechanism {mechanism:#x} takes a key of type {wanted:#x}, not "
            f"{key.key_type if key.key_type is None else hex(key.key_type)}",
        )
