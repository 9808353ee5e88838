"""CKA_* attributes by name: how a typed value is parsed and a read value is shown.

Used by the object handlers (create, copy, get, set, find, display). Values travel as plain
Python: bool, int, bytes, str.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from . import attribute_table as table
from .model import CLASS_NAMES, KEY_TYPE_NAMES

CLASS_NAMES_ALL = {
    **CLASS_NAMES,
    0x1: "CKO_CERTIFICATE",
    0x5: "CKO_HW_FEATURE",
    0x6: "CKO_DOMAIN_PARAMETERS",
    0x7: "CKO_MECHANISM",
    0x8: "CKO_OTP_KEY",
}
KEY_TYPE_NAMES_ALL = {
    **KEY_TYPE_NAMES,
    0x1: "CKK_DSA",
    0x2: "CKK_DH",
    0x13: "CKK_DES3",
    0x15: "CKK_DES2",
    0x2B: "CKK_SHA256_HMAC",
    0x40: "CKK_EC_EDWARDS",
    0x41: "CKK_EC_MONTGOMERY",
}


# A CK_ULONG is a C unsigned long: 0 .. 2**64-1 here. A value outside that range must never reach
# python-pkcs11, whose template packing then fails half-way and frees memory it never allocated
# (measured: free(): invalid pointer, a segfault). Every typed value is checked in parse().
ULONG_MAX = table.ULONG_MAX


@dataclass(frozen=True)
class AttributeDef:
    name: str
    code: int
    kind: str  # bool, ulong, bytes, text, class, keytype, date
    sensitive_value: bool = False  # shown as <sensitive> when the token refuses to reveal it


# the attributes the menu reads, types and shows (24, 25, 26, 27); codes and kinds from the one
# table (ckdemo.attribute_table)
MENU_ATTRIBUTES = (
    "CKA_CLASS",
    "CKA_TOKEN",
    "CKA_PRIVATE",
    "CKA_LABEL",
    "CKA_APPLICATION",
    "CKA_VALUE",
    "CKA_OBJECT_ID",
    "CKA_CERTIFICATE_TYPE",
    "CKA_ISSUER",
    "CKA_SERIAL_NUMBER",
    "CKA_TRUSTED",
    "CKA_CERTIFICATE_CATEGORY",
    "CKA_CHECK_VALUE",
    "CKA_KEY_TYPE",
    "CKA_SUBJECT",
    "CKA_ID",
    "CKA_SENSITIVE",
    "CKA_ENCRYPT",
    "CKA_DECRYPT",
    "CKA_WRAP",
    "CKA_UNWRAP",
    "CKA_SIGN",
    "CKA_SIGN_RECOVER",
    "CKA_VERIFY",
    "CKA_VERIFY_RECOVER",
    "CKA_DERIVE",
    "CKA_START_DATE",
    "CKA_END_DATE",
    "CKA_MODULUS",
    "CKA_MODULUS_BITS",
    "CKA_PUBLIC_EXPONENT",
    "CKA_PRIVATE_EXPONENT",
    "CKA_PRIME_1",
    "CKA_PRIME_2",
    "CKA_EXPONENT_1",
    "CKA_EXPONENT_2",
    "CKA_COEFFICIENT",
    "CKA_PUBLIC_KEY_INFO",
    "CKA_PRIME",
    "CKA_SUBPRIME",
    "CKA_BASE",
    "CKA_VALUE_BITS",
    "CKA_VALUE_LEN",
    "CKA_EXTRACTABLE",
    "CKA_LOCAL",
    "CKA_NEVER_EXTRACTABLE",
    "CKA_ALWAYS_SENSITIVE",
    "CKA_KEY_GEN_MECHANISM",
    "CKA_MODIFIABLE",
    "CKA_COPYABLE",
    "CKA_DESTROYABLE",
    "CKA_EC_PARAMS",
    "CKA_EC_POINT",
    "CKA_ALWAYS_AUTHENTICATE",
    "CKA_WRAP_WITH_TRUSTED",
)
# python-pkcs11 0.10.1 has no value type for these (no Attribute member, or no packer), so a
# template carrying one fails inside it: they can be read and shown, never typed into a template
NOT_IN_TEMPLATES = {"CKA_PUBLIC_KEY_INFO", "CKA_CERTIFICATE_CATEGORY"}
SECRET_PARTS = {
    "CKA_VALUE",
    "CKA_PRIVATE_EXPONENT",
    "CKA_PRIME_1",
    "CKA_PRIME_2",
    "CKA_EXPONENT_1",
    "CKA_EXPONENT_2",
    "CKA_COEFFICIENT",
}

ATTRIBUTES = [
    AttributeDef(n, table.BY_NAME[n].code, table.BY_NAME[n].kind, n in SECRET_PARTS) for n in MENU_ATTRIBUTES
]
BY_NAME = {a.name: a for a in ATTRIBUTES}
BY_CODE = {a.code: a for a in ATTRIBUTES}


def lookup(name: str) -> AttributeDef:
    key = name.strip().upper()
    if not key.startswith("CKA_"):
        key = "CKA_" + key
    try:
        return BY_NAME[key]
    except KeyError:
        raise KeyError(f"unknown attribute {name.strip()!r} (e.g. CKA_LABEL, CKA_ID, CKA_ENCRYPT)") from None


def _ulong(value: str, what: str) -> int:
    """A CK_ULONG as typed (decimal, 0x hex, 0o, 0b); anything a CK_ULONG cannot hold is refused."""
    try:
        number = int(value, 0)
    except ValueError:
        raise ValueError(f"{what} needs a number, not {value!r}") from None
    if not 0 <= number <= ULONG_MAX:
        raise ValueError(f"{what} needs a number from 0 to {ULONG_MAX:#x} (a CK_ULONG), not {value!r}")
    return number


def _named(attribute: AttributeDef, value: str, names: dict[int, str], what: str) -> int:
    key = value.strip().upper()
    for code, name in names.items():
        if key in (name, name.split("_", 1)[1]):
            return code
    try:
        int(value, 0)
    except ValueError:
        raise ValueError(f"{value!r} is not a {what} (e.g. {next(iter(names.values()))})") from None
    return _ulong(value, attribute.name)


def _text(attribute: AttributeDef, text: str) -> str:
    """Text goes to the token as UTF-8: refuse what cannot be encoded (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{attribute.name}: {text!r} is not valid text (UTF-8)") from None
    return text


def parse(attribute: AttributeDef, text: str):
    """A typed value: true/false, numbers, hex (0x... or hex:...), text, CKO_/CKK_ names."""
    text = text.strip()
    if attribute.kind == "bool":
        if text.lower() in ("true", "yes", "y", "1", "on"):
            return True
        if text.lower() in ("false", "no", "n", "0", "off"):
            return False
        raise ValueError(f"{attribute.name} needs true or false, not {text!r}")
    if attribute.kind == "ulong":
        return _ulong(text, attribute.name)
    if attribute.kind == "class":
        return _named(attribute, text, CLASS_NAMES_ALL, "object class")
    if attribute.kind == "keytype":
        return _named(attribute, text, KEY_TYPE_NAMES_ALL, "key type")
    if attribute.kind == "bytes":
        raw = (
            text[4:]
            if text.lower().startswith("hex:")
            else text[2:]
            if text.lower().startswith("0x")
            else None
        )
        if raw is None:
            return _text(attribute, text).encode()  # plain text, e.g. CKA_ID=mykey
        try:
            return bytes.fromhex(raw)
        except ValueError:
            raise ValueError(f"{attribute.name}: {text!r} is not valid hex") from None
    if attribute.kind == "date":
        try:
            date = datetime.date.fromisoformat(text)
        except ValueError:
            date = None
        if date is None or date.year < 1000:  # a CK_DATE holds four year digits
            raise ValueError(f"{attribute.name} needs a date YYYY-MM-DD (year 1000-9999), not {text!r}")
        return date
    return _text(attribute, text)


def parse_assignment(text: str) -> tuple[AttributeDef, object]:
    """'CKA_LABEL=my key' -> (CKA_LABEL, 'my key')."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r}: write NAME=VALUE, e.g. CKA_LABEL=mykey")
    attribute = lookup(name)
    if attribute.name in NOT_IN_TEMPLATES:
        raise ValueError(f"{attribute.name} can be read (24, 27) but not written or searched by ckdemo")
    return attribute, parse(attribute, value)


def render(attribute: AttributeDef | None, value, wrap: int = 0) -> str:
    """Text for a value; long byte strings are cut into lines of `wrap` hex digits."""
    text = _render(attribute, value)
    if wrap and isinstance(value, (bytes, bytearray)) and len(text) > wrap:
        return "\n".join(text[i : i + wrap] for i in range(0, len(text), wrap))
    return text


def _render(attribute: AttributeDef | None, value) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if attribute is not None and attribute.kind == "class" and isinstance(value, int):
        return CLASS_NAMES_ALL.get(value, f"0x{value:08X}")
    if attribute is not None and attribute.kind == "keytype" and isinstance(value, int):
        return KEY_TYPE_NAMES_ALL.get(value, f"0x{value:08X}")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex() if value else "(empty)"
    if value is None:
        return "(empty)"
    return str(value)
