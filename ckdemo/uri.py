"""RFC 7512 `pkcs11:` URIs, as pkcs11-tool, p11tool and OpenSSL users type them, for choosing a
slot or token: `pkcs11:token=member2`, `pkcs11:serial=4a12262d0b058ab8`,
`pkcs11:slot-id=20480`, `pkcs11:model=HA%20virtual%20token;manufacturer=ckdemo%20HA`.

Path attributes that choose a slot or token are matched (every one given must match, values
compared after percent-decoding, as RFC 7512 section 2.3 says); object attributes (object, id,
type) and query attributes (pin-value, module-path, ...) are read but choose nothing here. One
clear `URIError` line for what cannot be a pkcs11 URI. `matching_slots` finds the slots a URI
names among any slots that answer token_info() and slot_info() (ckdemo.slots.Slot).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import unquote

from .codes import CKRError

TOKEN_KEYS = ("token", "manufacturer", "serial", "model")
SLOT_KEYS = ("slot-description", "slot-manufacturer", "slot-id")
LIBRARY_KEYS = ("library-description", "library-manufacturer", "library-version")
OBJECT_KEYS = ("object", "id", "type")
PATH_KEYS = TOKEN_KEYS + SLOT_KEYS + LIBRARY_KEYS + OBJECT_KEYS
QUERY_KEYS = ("pin-value", "pin-source", "module-name", "module-path")


class URIError(ValueError):
    """Not a pkcs11 URI ckdemo can use: the one line to show."""


@dataclass(frozen=True)
class Pkcs11URI:
    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def matches(
        self, token: dict[str, str], slot_id: int | None = None, slot: dict[str, str] | None = None
    ) -> bool:
        """True when every token and slot attribute the URI gives matches: `token` has label,
        manufacturer, serial, model (as C_GetTokenInfo gives them, padding stripped); `slot`
        has description and manufacturer."""
        wanted = {
            "token": token.get("label"),
            "manufacturer": token.get("manufacturer"),
            "serial": token.get("serial"),
            "model": token.get("model"),
            "slot-description": (slot or {}).get("description"),
            "slot-manufacturer": (slot or {}).get("manufacturer"),
            "slot-id": None if slot_id is None else str(slot_id),
        }
        for key in TOKEN_KEYS + SLOT_KEYS:
            if key in self.path and (wanted[key] or "").strip() != self.path[key]:
                return False
        return True

    def chooses_slot(self) -> bool:
        return any(key in self.path for key in TOKEN_KEYS + SLOT_KEYS)


def is_uri(text: str) -> bool:
    return text[:7].lower() == "pkcs11:"


def parse(text: str) -> Pkcs11URI:
    if not is_uri(text):
        raise URIError(f"{text!r} is not a pkcs11 URI (pkcs11:token=LABEL, RFC 7512)")
    body = text[7:]
    path_part, _, query_part = body.partition("?")
    path: dict[str, str] = {}
    for item in filter(None, path_part.split(";")):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in PATH_KEYS:
            raise URIError(f"{text!r}: {item!r} is not a pkcs11 URI path attribute ({', '.join(PATH_KEYS)})")
        if key in path:
            raise URIError(f"{text!r}: {key} given twice")
        path[key] = unquote(value)
    query: dict[str, str] = {}
    for item in filter(None, query_part.split("&")):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in QUERY_KEYS:
            raise URIError(
                f"{text!r}: {item!r} is not a pkcs11 URI query attribute ({', '.join(QUERY_KEYS)})"
            )
        query[key] = unquote(value)
    if "slot-id" in path and not path["slot-id"].isdigit():
        raise URIError(f"{text!r}: slot-id is a number, not {path['slot-id']!r}")
    return Pkcs11URI(path, query)


def matching_slots(uri: Pkcs11URI, slots: Sequence[Any]) -> list[tuple[int, Any]]:
    """(number from 1, slot) of every slot whose token and slot match the URI; a slot that cannot
    say (a member that is down, no token) matches nothing."""
    found = []
    for number, slot in enumerate(slots, start=1):
        try:
            info = slot.token_info()
            about = slot.slot_info()
        except CKRError:
            continue
        token = {
            "label": info.label,
            "manufacturer": info.manufacturer_id,
            "serial": info.serial_number,
            "model": info.model,
        }
        if uri.matches(
            token, about.slot_id, {"description": about.description, "manufacturer": about.manufacturer_id}
        ):
            found.append((number, slot))
    return found
