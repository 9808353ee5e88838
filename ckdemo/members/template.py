"""PKCS#11 templates as ctypes CK_ATTRIBUTE arrays, for the calls python-pkcs11 cannot make.

python-pkcs11 0.10.1 packs only flat values; an attribute whose value is itself a template
(CKA_UNWRAP_TEMPLATE, CKA_WRAP_TEMPLATE) or a mechanism list (CKA_ALLOWED_MECHANISMS) needs this.
Values are packed by their Python type: bool -> CK_BBOOL, int -> CK_ULONG, bytes/str -> bytes,
dict -> nested template, list/tuple of ints -> CK_ULONG array, a date -> CK_DATE.
"""

from __future__ import annotations

import ctypes
import datetime
from ctypes import Structure, c_ubyte, c_ulong, c_void_p
from typing import Any

CK_ULONG = c_ulong


class CK_ATTRIBUTE(Structure):
    _fields_ = [("type", CK_ULONG), ("pValue", c_void_p), ("ulValueLen", CK_ULONG)]


class Packed:
    """A CK_ATTRIBUTE array and every buffer it points into (alive as long as this object)."""

    def __init__(self, template: dict[int, Any]) -> None:
        self._keep: list[Any] = []
        self.count = len(template)
        self.array = (CK_ATTRIBUTE * max(self.count, 1))()
        for item, (code, value) in zip(self.array, template.items()):
            pointer, length = self._value(value)
            item.type, item.pValue, item.ulValueLen = code, pointer, length

    def _value(self, value: Any) -> tuple[int | None, int]:
        if isinstance(value, dict):
            nested = Packed(value)
            self._keep.append(nested)
            return ctypes.cast(nested.array, c_void_p).value, ctypes.sizeof(CK_ATTRIBUTE) * nested.count
        if isinstance(value, bool):
            data = bytes([1 if value else 0])
        elif isinstance(value, datetime.date):
            data = f"{value.year:04d}{value.month:02d}{value.day:02d}".encode("ascii")
        elif isinstance(value, int):
            data = bytes(CK_ULONG(value))
        elif isinstance(value, (list, tuple)):
            data = bytes((CK_ULONG * len(value))(*value))
        elif isinstance(value, str):
            data = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        else:
            raise TypeError(f"cannot pack a {type(value).__name__} into a PKCS#11 attribute")
        buffer = (c_ubyte * max(len(data), 1)).from_buffer_copy(data or b"\0")
        self._keep.append(buffer)
        return ctypes.cast(buffer, c_void_p).value, len(data)
