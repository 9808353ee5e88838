"""C_GetAttributeValue as PKCS#11 (and p11-kit's server) answer it, over a slot session.

Each wanted attribute comes back with its value, its length only (a size query: buffer length
0), or unavailable; the call's own code (CKR_OK, CKR_ATTRIBUTE_SENSITIVE,
CKR_ATTRIBUTE_TYPE_INVALID, CKR_BUFFER_TOO_SMALL) travels after the attributes (`aAu`).
"""
from __future__ import annotations

from ..codes import (CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID, CKR_BUFFER_TOO_SMALL,
                     CKR_OK, CKRError)
from ..slots import Session
from . import wire

UNREADABLE = (CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID)
PRECEDENCE = (CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID, CKR_BUFFER_TOO_SMALL, CKR_OK)


def read_attributes(store: Session, handle: int, wanted) -> tuple:
    types = [entry.type for entry in wanted]
    try:
        values = store.get_attributes(handle, types)
    except CKRError as error:  # nothing readable at all: each is asked alone below
        if error.ckr not in UNREADABLE:
            raise
        values = {}
    except (ValueError, NotImplementedError):  # a type the slot layer cannot name
        values = {}
    refused: dict[int, int] = {}
    for attribute_type in types:
        if attribute_type not in values and attribute_type not in refused:
            try:
                values[attribute_type] = store.read_attribute(handle, attribute_type)
            except CKRError as error:
                if error.ckr not in UNREADABLE:
                    raise
                refused[attribute_type] = error.ckr
            except (ValueError, NotImplementedError):
                refused[attribute_type] = CKR_ATTRIBUTE_TYPE_INVALID
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
