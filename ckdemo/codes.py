"""CKR names and values in one table, and the one error type that carries them.

The constants below are the table: CKR_NAMES is read back from them, so each name and value
is written exactly once. Values follow OASIS pkcs11t.h v2.40, v3.0 and v3.1 (the published
3-01 header).
"""

from __future__ import annotations

import re

# --- PKCS#11 v2.40 ----------------------------------------------------------------------------
CKR_OK = 0x00000000
CKR_CANCEL = 0x00000001
CKR_HOST_MEMORY = 0x00000002
CKR_SLOT_ID_INVALID = 0x00000003
CKR_GENERAL_ERROR = 0x00000005
CKR_FUNCTION_FAILED = 0x00000006
CKR_ARGUMENTS_BAD = 0x00000007
CKR_NO_EVENT = 0x00000008
CKR_NEED_TO_CREATE_THREADS = 0x00000009
CKR_CANT_LOCK = 0x0000000A
CKR_ATTRIBUTE_READ_ONLY = 0x00000010
CKR_ATTRIBUTE_SENSITIVE = 0x00000011
CKR_ATTRIBUTE_TYPE_INVALID = 0x00000012
CKR_ATTRIBUTE_VALUE_INVALID = 0x00000013
CKR_ACTION_PROHIBITED = 0x0000001B
CKR_DATA_INVALID = 0x00000020
CKR_DATA_LEN_RANGE = 0x00000021
CKR_DEVICE_ERROR = 0x00000030
CKR_DEVICE_MEMORY = 0x00000031
CKR_DEVICE_REMOVED = 0x00000032
CKR_ENCRYPTED_DATA_INVALID = 0x00000040
CKR_ENCRYPTED_DATA_LEN_RANGE = 0x00000041
CKR_FUNCTION_CANCELED = 0x00000050
CKR_FUNCTION_NOT_PARALLEL = 0x00000051
CKR_FUNCTION_NOT_SUPPORTED = 0x00000054
CKR_KEY_HANDLE_INVALID = 0x00000060
CKR_KEY_SIZE_RANGE = 0x00000062
CKR_KEY_TYPE_INCONSISTENT = 0x00000063
CKR_KEY_NOT_NEEDED = 0x00000064
CKR_KEY_CHANGED = 0x00000065
CKR_KEY_NEEDED = 0x00000066
CKR_KEY_INDIGESTIBLE = 0x00000067
CKR_KEY_FUNCTION_NOT_PERMITTED = 0x00000068
CKR_KEY_NOT_WRAPPABLE = 0x00000069
CKR_KEY_UNEXTRACTABLE = 0x0000006A
CKR_MECHANISM_INVALID = 0x00000070
CKR_MECHANISM_PARAM_INVALID = 0x00000071
CKR_OBJECT_HANDLE_INVALID = 0x00000082
CKR_OPERATION_ACTIVE = 0x00000090
CKR_OPERATION_NOT_INITIALIZED = 0x00000091
CKR_PIN_INCORRECT = 0x000000A0
CKR_PIN_INVALID = 0x000000A1
CKR_PIN_LEN_RANGE = 0x000000A2
CKR_PIN_EXPIRED = 0x000000A3
CKR_PIN_LOCKED = 0x000000A4
CKR_SESSION_CLOSED = 0x000000B0
CKR_SESSION_COUNT = 0x000000B1
CKR_SESSION_HANDLE_INVALID = 0x000000B3
CKR_SESSION_PARALLEL_NOT_SUPPORTED = 0x000000B4
CKR_SESSION_READ_ONLY = 0x000000B5
CKR_SESSION_EXISTS = 0x000000B6
CKR_SESSION_READ_ONLY_EXISTS = 0x000000B7
CKR_SESSION_READ_WRITE_SO_EXISTS = 0x000000B8
CKR_SIGNATURE_INVALID = 0x000000C0
CKR_SIGNATURE_LEN_RANGE = 0x000000C1
CKR_TEMPLATE_INCOMPLETE = 0x000000D0
CKR_TEMPLATE_INCONSISTENT = 0x000000D1
CKR_TOKEN_NOT_PRESENT = 0x000000E0
CKR_TOKEN_NOT_RECOGNIZED = 0x000000E1
CKR_TOKEN_WRITE_PROTECTED = 0x000000E2
CKR_UNWRAPPING_KEY_HANDLE_INVALID = 0x000000F0
CKR_UNWRAPPING_KEY_SIZE_RANGE = 0x000000F1
CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT = 0x000000F2
CKR_USER_ALREADY_LOGGED_IN = 0x00000100
CKR_USER_NOT_LOGGED_IN = 0x00000101
CKR_USER_PIN_NOT_INITIALIZED = 0x00000102
CKR_USER_TYPE_INVALID = 0x00000103
CKR_USER_ANOTHER_ALREADY_LOGGED_IN = 0x00000104
CKR_USER_TOO_MANY_TYPES = 0x00000105
CKR_WRAPPED_KEY_INVALID = 0x00000110
CKR_WRAPPED_KEY_LEN_RANGE = 0x00000112
CKR_WRAPPING_KEY_HANDLE_INVALID = 0x00000113
CKR_WRAPPING_KEY_SIZE_RANGE = 0x00000114
CKR_WRAPPING_KEY_TYPE_INCONSISTENT = 0x00000115
CKR_RANDOM_SEED_NOT_SUPPORTED = 0x00000120
CKR_RANDOM_NO_RNG = 0x00000121
CKR_DOMAIN_PARAMS_INVALID = 0x00000130
CKR_CURVE_NOT_SUPPORTED = 0x00000140
CKR_BUFFER_TOO_SMALL = 0x00000150
CKR_SAVED_STATE_INVALID = 0x00000160
CKR_INFORMATION_SENSITIVE = 0x00000170
CKR_STATE_UNSAVEABLE = 0x00000180
CKR_CRYPTOKI_NOT_INITIALIZED = 0x00000190
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x00000191
CKR_MUTEX_BAD = 0x000001A0
CKR_MUTEX_NOT_LOCKED = 0x000001A1
CKR_NEW_PIN_MODE = 0x000001B0
CKR_NEXT_OTP = 0x000001B1
CKR_EXCEEDED_MAX_ITERATIONS = 0x000001B5
CKR_FIPS_SELF_TEST_FAILED = 0x000001B6
CKR_LIBRARY_LOAD_FAILED = 0x000001B7
CKR_PIN_TOO_WEAK = 0x000001B8
CKR_PUBLIC_KEY_INVALID = 0x000001B9
CKR_FUNCTION_REJECTED = 0x00000200
# --- added in v3.0 ----------------------------------------------------------------------------
CKR_TOKEN_RESOURCE_EXCEEDED = 0x00000201
CKR_OPERATION_CANCEL_FAILED = 0x00000202
# --- added in v3.1 ----------------------------------------------------------------------------
CKR_AEAD_DECRYPT_FAILED = 0x00000042
CKR_KEY_EXHAUSTED = 0x00000203
# --- vendor range: every code from here up belongs to the module's vendor ---------------------
CKR_VENDOR_DEFINED = 0x80000000

# Read back from the constants above, so the table exists once (no two CKR_* share a value).
CKR_NAMES: dict[int, str] = {
    value: name
    for name, value in sorted(globals().items())
    if name.startswith("CKR_") and isinstance(value, int)
}
_CKR_VALUES: dict[str, int] = {name: value for value, name in CKR_NAMES.items()}
assert len(CKR_NAMES) == len(_CKR_VALUES), "two CKR_* names share a value"

# Device-class results: the member itself is unusable until recovered, so fail over.
MEMBER_FATAL = frozenset(
    {
        CKR_DEVICE_ERROR,  # p11-kit client whose server died
        CKR_DEVICE_REMOVED,
        CKR_DEVICE_MEMORY,
        CKR_TOKEN_NOT_PRESENT,
        CKR_TOKEN_NOT_RECOGNIZED,
        CKR_CRYPTOKI_NOT_INITIALIZED,  # the module was finalised under us: only C_Initialize helps
        # Not CKR_GENERAL_ERROR: SoftHSM answers it for a mechanism that does not fit the key, an
        # application error that would otherwise fail every member in turn (its token-store
        # faults give it too, but those are not a realistic member failure).
    }
)

# Answers about credentials: retrying them on another member (or in recovery) burns PIN tries.
CREDENTIALS_REJECTED = frozenset(
    {
        CKR_PIN_INCORRECT,
        CKR_PIN_LOCKED,
        CKR_PIN_EXPIRED,
        CKR_USER_PIN_NOT_INITIALIZED,
    }
)

# The member is healthy but our session or its login is gone (re-init, C_Logout from another
# session): open and log in again, then retry; no failover.
SESSION_LOST = frozenset(
    {
        CKR_SESSION_HANDLE_INVALID,
        CKR_SESSION_CLOSED,
        CKR_USER_NOT_LOGGED_IN,
    }
)


def is_member_fatal(code: int) -> bool:
    """True when the result says the member, not the request, is broken."""
    return code in MEMBER_FATAL


class CKRError(Exception):
    """A PKCS#11 call returned something other than CKR_OK."""

    def __init__(self, ckr: int, function: str, detail: str = "") -> None:
        self.ckr = ckr
        self.function = function
        self.detail = detail
        super().__init__(f"{function} returned {describe(ckr)}" + (f": {detail}" if detail else ""))

    @property
    def name(self) -> str:
        return ckr_name(self.ckr)


class NotCarried(CKRError):
    """CKR_MECHANISM_INVALID from the way to a member, not from the token: the transport cannot
    carry the call (p11-kit RPC 0.24 and a parameter holding pointers), so nothing was asked. A
    replayed step that meets it is skipped with this reason, not failed: the set-up cannot run it."""

    def __init__(self, function: str, detail: str) -> None:
        super().__init__(CKR_MECHANISM_INVALID, function, detail)


def ckr_name(code: int) -> str:
    """'CKR_PIN_INCORRECT'; unknown codes as 'CKR_VENDOR_DEFINED+0x123' or 'CKR_0x00000999'."""
    if code in CKR_NAMES:
        return CKR_NAMES[code]
    if code >= CKR_VENDOR_DEFINED:
        return f"CKR_VENDOR_DEFINED+0x{code - CKR_VENDOR_DEFINED:X}"
    return f"CKR_0x{code:08X}"


# The two spellings ckr_name() gives unknown codes, so every name it prints reads back.
_VENDOR_NAME = re.compile(r"CKR_VENDOR_DEFINED\s*\+\s*(0X[0-9A-F]+|\d+)")
_NUMBER_NAME = re.compile(r"CKR_(0X[0-9A-F]+)")


def ckr_value(name: str) -> int:
    """Accepts 'CKR_PIN_INCORRECT', 'pin_incorrect', '0xA0', '160' or any name ckr_name() gives."""
    text = name.strip().upper()
    if match := _VENDOR_NAME.fullmatch(text):
        return CKR_VENDOR_DEFINED + int(match.group(1), 0)
    if match := _NUMBER_NAME.fullmatch(text):
        text = match.group(1)
    try:
        value = int(text, 0)
    except ValueError:
        key = text if text.startswith("CKR_") else "CKR_" + text
        if key in _CKR_VALUES:
            return _CKR_VALUES[key]
        raise KeyError(
            f"unknown return value {name!r}: expected a CKR_* name such as "
            "CKR_PIN_INCORRECT, or a number such as 0xA0"
        ) from None
    if value < 0:
        raise KeyError(f"return values are unsigned, got {name!r}")
    return value


def describe(code: int) -> str:
    """'CKR_DEVICE_ERROR (0x00000030)': the one way a return value is shown."""
    return f"{ckr_name(code)} (0x{code:08X})"
