"""Every CKA_* type ckdemo knows, with the kind of value it holds: the one table.

Whatever carries a template -- a request from the wire, a value typed at the menu, a remote
member's reply -- is checked here before it reaches a member library (`check`). Names and
values follow OASIS pkcs11t.h v2.40 (and the v3.0 types a v2.40 token can meet).

Kinds and the plain Python value each holds in the slot protocol (ckdemo.slots):
  bool -> bool (CK_BBOOL), ulong / class / keytype -> int (CK_ULONG), text -> str (UTF-8),
  date -> datetime.date, or b"" (an empty CK_DATE, as SoftHSM2 keys carry), bytes -> bytes,
  template -> dict (a nested template, itself checked), mechanisms -> list of int.
A type outside the table -- vendor-defined (CKA_VENDOR_DEFINED and up: Luna has many) or one
this table does not name -- is opaque: bytes, handed to the module to judge, as p11-kit's own
server does (SoftHSM2 answers CKR_ATTRIBUTE_TYPE_INVALID in C_CreateObject and finds nothing in a
search). A value of the wrong kind or size for a type in the table is
CKR_ATTRIBUTE_VALUE_INVALID. Nothing else is refused here: what values mean is the token's.
"""

from __future__ import annotations

import datetime
import struct
from dataclasses import dataclass

from .codes import CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID, CKRError

CKA_VENDOR_DEFINED = 0x80000000
CKF_ARRAY_ATTRIBUTE = 0x40000000
ULONG_MAX = 2 ** (8 * struct.calcsize("L")) - 1  # a C unsigned long, as the module reads it
MAX_NESTING = 4  # templates inside templates: no token needs more
MAX_VALUE_BYTES = 1 << 20  # no real attribute value is near a MiB; a frame may carry 64 MiB


@dataclass(frozen=True)
class AttributeType:
    name: str
    code: int
    kind: str  # bool, ulong, class, keytype, text, date, bytes, template, mechanisms


_B, _U, _T, _D, _Y = "bool", "ulong", "text", "date", "bytes"
_TABLE = [
    ("CKA_CLASS", 0x000, "class"),
    ("CKA_TOKEN", 0x001, _B),
    ("CKA_PRIVATE", 0x002, _B),
    ("CKA_LABEL", 0x003, _T),
    ("CKA_UNIQUE_ID", 0x004, _T),
    ("CKA_APPLICATION", 0x010, _T),
    ("CKA_VALUE", 0x011, _Y),
    ("CKA_OBJECT_ID", 0x012, _Y),
    ("CKA_CERTIFICATE_TYPE", 0x080, _U),
    ("CKA_ISSUER", 0x081, _Y),
    ("CKA_SERIAL_NUMBER", 0x082, _Y),
    ("CKA_AC_ISSUER", 0x083, _Y),
    ("CKA_OWNER", 0x084, _Y),
    ("CKA_ATTR_TYPES", 0x085, _Y),
    ("CKA_TRUSTED", 0x086, _B),
    ("CKA_CERTIFICATE_CATEGORY", 0x087, _U),
    ("CKA_JAVA_MIDP_SECURITY_DOMAIN", 0x088, _U),
    ("CKA_URL", 0x089, _T),
    ("CKA_HASH_OF_SUBJECT_PUBLIC_KEY", 0x08A, _Y),
    ("CKA_HASH_OF_ISSUER_PUBLIC_KEY", 0x08B, _Y),
    ("CKA_NAME_HASH_ALGORITHM", 0x08C, _U),
    ("CKA_CHECK_VALUE", 0x090, _Y),
    ("CKA_KEY_TYPE", 0x100, "keytype"),
    ("CKA_SUBJECT", 0x101, _Y),
    ("CKA_ID", 0x102, _Y),
    ("CKA_SENSITIVE", 0x103, _B),
    ("CKA_ENCRYPT", 0x104, _B),
    ("CKA_DECRYPT", 0x105, _B),
    ("CKA_WRAP", 0x106, _B),
    ("CKA_UNWRAP", 0x107, _B),
    ("CKA_SIGN", 0x108, _B),
    ("CKA_SIGN_RECOVER", 0x109, _B),
    ("CKA_VERIFY", 0x10A, _B),
    ("CKA_VERIFY_RECOVER", 0x10B, _B),
    ("CKA_DERIVE", 0x10C, _B),
    ("CKA_START_DATE", 0x110, _D),
    ("CKA_END_DATE", 0x111, _D),
    ("CKA_MODULUS", 0x120, _Y),
    ("CKA_MODULUS_BITS", 0x121, _U),
    ("CKA_PUBLIC_EXPONENT", 0x122, _Y),
    ("CKA_PRIVATE_EXPONENT", 0x123, _Y),
    ("CKA_PRIME_1", 0x124, _Y),
    ("CKA_PRIME_2", 0x125, _Y),
    ("CKA_EXPONENT_1", 0x126, _Y),
    ("CKA_EXPONENT_2", 0x127, _Y),
    ("CKA_COEFFICIENT", 0x128, _Y),
    ("CKA_PUBLIC_KEY_INFO", 0x129, _Y),
    ("CKA_PRIME", 0x130, _Y),
    ("CKA_SUBPRIME", 0x131, _Y),
    ("CKA_BASE", 0x132, _Y),
    ("CKA_PRIME_BITS", 0x133, _U),
    ("CKA_SUBPRIME_BITS", 0x134, _U),
    ("CKA_VALUE_BITS", 0x160, _U),
    ("CKA_VALUE_LEN", 0x161, _U),
    ("CKA_EXTRACTABLE", 0x162, _B),
    ("CKA_LOCAL", 0x163, _B),
    ("CKA_NEVER_EXTRACTABLE", 0x164, _B),
    ("CKA_ALWAYS_SENSITIVE", 0x165, _B),
    ("CKA_KEY_GEN_MECHANISM", 0x166, _U),
    ("CKA_MODIFIABLE", 0x170, _B),
    ("CKA_COPYABLE", 0x171, _B),
    ("CKA_DESTROYABLE", 0x172, _B),
    ("CKA_EC_PARAMS", 0x180, _Y),
    ("CKA_EC_POINT", 0x181, _Y),
    ("CKA_SECONDARY_AUTH", 0x200, _B),
    ("CKA_AUTH_PIN_FLAGS", 0x201, _U),
    ("CKA_ALWAYS_AUTHENTICATE", 0x202, _B),
    ("CKA_WRAP_WITH_TRUSTED", 0x210, _B),
    ("CKA_WRAP_TEMPLATE", CKF_ARRAY_ATTRIBUTE | 0x211, "template"),
    ("CKA_UNWRAP_TEMPLATE", CKF_ARRAY_ATTRIBUTE | 0x212, "template"),
    ("CKA_DERIVE_TEMPLATE", CKF_ARRAY_ATTRIBUTE | 0x213, "template"),
    ("CKA_OTP_FORMAT", 0x220, _U),
    ("CKA_OTP_LENGTH", 0x221, _U),
    ("CKA_OTP_TIME_INTERVAL", 0x222, _U),
    ("CKA_OTP_USER_FRIENDLY_MODE", 0x223, _B),
    ("CKA_OTP_CHALLENGE_REQUIREMENT", 0x224, _U),
    ("CKA_OTP_TIME_REQUIREMENT", 0x225, _U),
    ("CKA_OTP_COUNTER_REQUIREMENT", 0x226, _U),
    ("CKA_OTP_PIN_REQUIREMENT", 0x227, _U),
    ("CKA_OTP_COUNTER", 0x22E, _Y),
    ("CKA_OTP_TIME", 0x22F, _T),
    ("CKA_OTP_USER_IDENTIFIER", 0x22A, _T),
    ("CKA_OTP_SERVICE_IDENTIFIER", 0x22B, _T),
    ("CKA_OTP_SERVICE_LOGO", 0x22C, _Y),
    ("CKA_OTP_SERVICE_LOGO_TYPE", 0x22D, _T),
    ("CKA_GOSTR3410_PARAMS", 0x250, _Y),
    ("CKA_GOSTR3411_PARAMS", 0x251, _Y),
    ("CKA_GOST28147_PARAMS", 0x252, _Y),
    ("CKA_HW_FEATURE_TYPE", 0x300, _U),
    ("CKA_RESET_ON_INIT", 0x301, _B),
    ("CKA_HAS_RESET", 0x302, _B),
    ("CKA_PIXEL_X", 0x400, _U),
    ("CKA_PIXEL_Y", 0x401, _U),
    ("CKA_RESOLUTION", 0x402, _U),
    ("CKA_CHAR_ROWS", 0x403, _U),
    ("CKA_CHAR_COLUMNS", 0x404, _U),
    ("CKA_COLOR", 0x405, _B),
    ("CKA_BITS_PER_PIXEL", 0x406, _U),
    ("CKA_CHAR_SETS", 0x480, _T),
    ("CKA_ENCODING_METHODS", 0x481, _T),
    ("CKA_MIME_TYPES", 0x482, _T),
    ("CKA_MECHANISM_TYPE", 0x500, _U),
    ("CKA_REQUIRED_CMS_ATTRIBUTES", 0x501, _Y),
    ("CKA_DEFAULT_CMS_ATTRIBUTES", 0x502, _Y),
    ("CKA_SUPPORTED_CMS_ATTRIBUTES", 0x503, _Y),
    ("CKA_ALLOWED_MECHANISMS", CKF_ARRAY_ATTRIBUTE | 0x600, "mechanisms"),
    ("CKA_PROFILE_ID", 0x601, _U),  # v3.0
]
TYPES = {code: AttributeType(name, code, kind) for name, code, kind in _TABLE}
BY_NAME = {t.name: t for t in TYPES.values()}
NUMERIC_KINDS = frozenset({"ulong", "class", "keytype"})
TEXT_ATTRIBUTES = frozenset(c for c, t in TYPES.items() if t.kind == "text")
DATE_ATTRIBUTES = frozenset(c for c, t in TYPES.items() if t.kind == "date")
BOOL_ATTRIBUTES = frozenset(c for c, t in TYPES.items() if t.kind == "bool")
ULONG_ATTRIBUTES = frozenset(c for c, t in TYPES.items() if t.kind in NUMERIC_KINDS)


def kind(code: int) -> str:
    """The kind of a type's value; "opaque" for a type outside the table."""
    known = TYPES.get(code)
    return known.kind if known is not None else "opaque"


def name(code: int) -> str:
    known = TYPES.get(code)
    if known is not None:
        return known.name
    if code >= CKA_VENDOR_DEFINED:
        return f"CKA_VENDOR_DEFINED+{code - CKA_VENDOR_DEFINED:#x}"
    return f"attribute {code:#x}"


def check(template: dict, function: str, depth: int = 0) -> dict:
    """The template itself when every type is known and every value of its kind and size;
    CKRError(CKR_ATTRIBUTE_TYPE_INVALID / CKR_ATTRIBUTE_VALUE_INVALID) otherwise."""
    if not isinstance(template, dict):
        raise CKRError(CKR_ATTRIBUTE_VALUE_INVALID, function, "a template must be a set of attributes")
    for code, value in template.items():
        check_value(code, value, function, depth)
    return template


def check_value(code: int, value: object, function: str, depth: int = 0) -> None:
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= ULONG_MAX:
        raise CKRError(CKR_ATTRIBUTE_TYPE_INVALID, function, f"{code!r} is not an attribute type")
    what = kind(code)
    if not _fits(what, value, function, depth):
        raise CKRError(
            CKR_ATTRIBUTE_VALUE_INVALID,
            function,
            f"{name(code)} holds {_describe(what)}, not {_shown(value)}",
        )


def _fits(what: str, value: object, function: str, depth: int) -> bool:
    if what == "bool":
        return isinstance(value, bool)
    if what in NUMERIC_KINDS:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= ULONG_MAX
    if what == "text":
        if not isinstance(value, str):
            return False
        try:
            return len(value.encode("utf-8")) <= MAX_VALUE_BYTES
        except UnicodeEncodeError:
            return False
    if what == "date":
        return isinstance(value, datetime.date) or value == b""
    if what == "template":
        if depth >= MAX_NESTING or not isinstance(value, dict):
            return False
        check(value, function, depth + 1)
        return True
    if what == "mechanisms":
        return (
            isinstance(value, (list, tuple))
            and len(value) <= 4096
            and all(isinstance(m, int) and not isinstance(m, bool) and 0 <= m <= ULONG_MAX for m in value)
        )
    return isinstance(value, (bytes, bytearray)) and len(value) <= MAX_VALUE_BYTES  # bytes, opaque


def _describe(what: str) -> str:
    return {
        "bool": "a CK_BBOOL",
        "text": "UTF-8 text",
        "date": "a CK_DATE (or nothing)",
        "template": "a template",
        "mechanisms": "a list of CKM_* codes",
        "bytes": f"bytes (at most {MAX_VALUE_BYTES})",
        "opaque": f"bytes (at most {MAX_VALUE_BYTES})",
    }.get(what, "a CK_ULONG")


def _shown(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} byte(s)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- the wire's raw bytes of a value, as a module holds it (native byte order) ----------------
def from_native(code: int, raw: bytes, function: str) -> object:
    """A value as a module stores it (CK_BBOOL one byte, CK_ULONG 8 native bytes, a CK_DATE
    8 ASCII digits or nothing) as the slot protocol's plain value; a wrong size is
    CKR_ATTRIBUTE_VALUE_INVALID, as a token answers a CK_BBOOL of 2 bytes."""
    what = kind(code)
    raw = bytes(raw)
    if what == "bool":
        if len(raw) != 1:
            raise CKRError(
                CKR_ATTRIBUTE_VALUE_INVALID,
                function,
                f"{name(code)} is a CK_BBOOL (1 byte), not {len(raw)} byte(s)",
            )
        return raw != b"\0"
    if what in NUMERIC_KINDS:
        if len(raw) != struct.calcsize("L"):
            raise CKRError(
                CKR_ATTRIBUTE_VALUE_INVALID,
                function,
                f"{name(code)} is a CK_ULONG ({struct.calcsize('L')} bytes), not {len(raw)} byte(s)",
            )
        return struct.unpack("L", raw)[0]  # native size and order, as the module wrote it
    if what == "date":
        return date_from(code, raw, function)
    if what == "text":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CKRError(CKR_ATTRIBUTE_VALUE_INVALID, function, f"{name(code)} is not UTF-8 text") from None
    if what in ("template", "mechanisms"):
        raise CKRError(CKR_ATTRIBUTE_VALUE_INVALID, function, f"{name(code)} cannot travel as plain bytes")
    return raw


def date_from(code: int, raw: bytes, function: str) -> datetime.date | bytes:
    if raw == b"":
        return b""
    try:
        if len(raw) != 8 or not raw.isdigit():
            raise ValueError
        return datetime.date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
    except ValueError:
        raise CKRError(
            CKR_ATTRIBUTE_VALUE_INVALID,
            function,
            f"{name(code)} is a CK_DATE (8 digits YYYYMMDD or nothing), not {raw[:16]!r}",
        ) from None
