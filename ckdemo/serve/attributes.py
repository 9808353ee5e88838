"""C_GetAttributeValue as PKCS#11 (and p11-kit's server) answer it, over a slot session.

Each wanted attribute comes back with its value, its length only (a size query: buffer length
0), or unavailable; the call's own code (CKR_OK, CKR_ATTRIBUTE_SENSITIVE,
CKR_ATTRIBUTE_TYPE_INVALID, CKR_BUFFER_TOO_SMALL) travels after the attributes (`aAu`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..codes import (
    CKR_ATTRIBUTE_SENSITIVE,
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_BUFFER_TOO_SMALL,
    CKR_OK,
    CKRError,
)
from ..model import CK_UNAVAILABLE_INFORMATION
from ..rpc.attributes import ValueType, value_type
from ..slots import Session
from . import wire

UNREADABLE = (CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID)
PRECEDENCE = (CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID, CKR_BUFFER_TOO_SMALL, CKR_OK)
# How a slot says it cannot name an attribute type (a vendor-defined or PKCS#11 3.0 one) or
# decode a value: these exceptions, not a CKR.
UNNAMED = (ValueError, NotImplementedError)


class UnnamedAttribute(CKRError):
    """A template holds a type the slot cannot name: CKR_ATTRIBUTE_TYPE_INVALID, as SoftHSM2."""


@contextmanager
def naming(function: str) -> Iterator[None]:
    """Around a slot call that carries a template (create, copy, set, generate, unwrap, derive,
    find): the slot's UNNAMED refusal becomes UnnamedAttribute, its cause chained."""
    try:
        yield
    except UNNAMED as error:
        raise UnnamedAttribute(
            CKR_ATTRIBUTE_TYPE_INVALID, function, f"an attribute type the slot cannot name ({error})"
        ) from error


def read_attributes(store: Session, handle: int, wanted) -> tuple:
    types = [entry.type for entry in wanted]
    try:
        values = store.get_attributes(handle, types)
    except CKRError as error:  # nothing readable at all: each is asked alone below
        if error.ckr not in UNREADABLE:
            raise
        values = {}
    except UNNAMED:  # a type the slot layer cannot name: each is asked alone below
        values = {}
    refused: dict[int, int] = {}
    for attribute_type in types:
        if attribute_type in refused:
            continue
        try:
            value = values.get(attribute_type)
            if attribute_type not in values:
                value = _read_one(store, handle, attribute_type)
            values[attribute_type] = _decoded(attribute_type, value)
        except CKRError as error:
            if error.ckr not in UNREADABLE:
                raise
            refused[attribute_type] = error.ckr
    answers, results = [], {CKR_OK}
    for entry in wanted:
        if entry.type in refused:
            answers.append(wire.unavailable(entry.type))
            results.add(refused[entry.type])
            continue
        value = wire.attribute(entry.type, values[entry.type])
        if entry.length == 0:
            answers.append(wire.size_only(value))
        elif entry.length < value.length:
            answers.append(wire.unavailable(entry.type))
            results.add(CKR_BUFFER_TOO_SMALL)
        else:
            answers.append(value)
    return tuple(answers), next(code for code in PRECEDENCE if code in results)


def _read_one(store: Session, handle: int, attribute_type: int) -> object:
    with naming("C_GetAttributeValue"):
        return store.read_attribute(handle, attribute_type)


def _decoded(attribute_type: int, value: object) -> object:
    """A slot reads None for a value it could not decode or a type it could not name. An empty
    date is a value (SoftHSM2 keys carry empty CKA_START_DATE/END_DATE); a CK_ULONG outside the
    slot's names is, from SoftHSM2, CKA_KEY_GEN_MECHANISM = CK_UNAVAILABLE_INFORMATION on a
    replica (said so, not as 0, which is CKM_RSA_PKCS_KEY_PAIR_GEN); anything else is a type the
    object does not have: CKR_ATTRIBUTE_TYPE_INVALID, as the token answers, not an empty value."""
    if value is not None:
        return value
    kind = value_type(attribute_type)
    if kind is ValueType.DATE:
        return b""
    if kind is ValueType.ULONG:
        return CK_UNAVAILABLE_INFORMATION
    raise CKRError(
        CKR_ATTRIBUTE_TYPE_INVALID,
        "C_GetAttributeValue",
        f"attribute {attribute_type:#x}: the slot has no value it can name",
    )
