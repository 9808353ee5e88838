"""Which group's method answers which call: the one table, written out (no reflection).

Every call of protocol version 0 (ckdemo.rpc.calls) is either here or in UNSUPPORTED with the
reason it is answered CKR_FUNCTION_NOT_SUPPORTED; tests/test_serve_dispatch.py holds the two
against the protocol's list. The calls are grouped as the PKCS#11 specification groups them,
one class each (slot_calls, session_calls, object_calls, crypto_calls, key_calls); a
connection holds one object of each over its state, and `bind` gives it its own table.
"""

from __future__ import annotations

from types import MethodType
from typing import Callable, Mapping

from ..rpc.calls import BY_NAME
from .crypto_calls import CryptoCalls
from .key_calls import KeyCalls
from .object_calls import ObjectCalls
from .session_calls import SessionCalls
from .slot_calls import SlotCalls

S, SE, O, CR, K = SlotCalls, SessionCalls, ObjectCalls, CryptoCalls, KeyCalls
GROUPS: dict[type, dict[str, Callable]] = {
    SlotCalls: {  # general purpose, slots and tokens
        "C_Initialize": S.C_Initialize,
        "C_Finalize": S.C_Finalize,
        "C_GetInfo": S.C_GetInfo,
        "C_GetSlotList": S.C_GetSlotList,
        "C_GetSlotInfo": S.C_GetSlotInfo,
        "C_GetTokenInfo": S.C_GetTokenInfo,
        "C_GetMechanismList": S.C_GetMechanismList,
        "C_GetMechanismInfo": S.C_GetMechanismInfo,
        "C_InitToken": S.C_InitToken,
        "C_WaitForSlotEvent": S.C_WaitForSlotEvent,
    },
    SessionCalls: {  # sessions and logins
        "C_OpenSession": SE.C_OpenSession,
        "C_CloseSession": SE.C_CloseSession,
        "C_CloseAllSessions": SE.C_CloseAllSessions,
        "C_GetSessionInfo": SE.C_GetSessionInfo,
        "C_Login": SE.C_Login,
        "C_Logout": SE.C_Logout,
        "C_InitPIN": SE.C_InitPIN,
        "C_SetPIN": SE.C_SetPIN,
    },
    ObjectCalls: {  # objects
        "C_CreateObject": O.C_CreateObject,
        "C_CopyObject": O.C_CopyObject,
        "C_DestroyObject": O.C_DestroyObject,
        "C_GetObjectSize": O.C_GetObjectSize,
        "C_GetAttributeValue": O.C_GetAttributeValue,
        "C_SetAttributeValue": O.C_SetAttributeValue,
        "C_FindObjectsInit": O.C_FindObjectsInit,
        "C_FindObjects": O.C_FindObjects,
        "C_FindObjectsFinal": O.C_FindObjectsFinal,
    },
    CryptoCalls: {  # cryptographic operations
        "C_EncryptInit": CR.C_EncryptInit,
        "C_Encrypt": CR.C_Encrypt,
        "C_EncryptUpdate": CR.C_EncryptUpdate,
        "C_EncryptFinal": CR.C_EncryptFinal,
        "C_DecryptInit": CR.C_DecryptInit,
        "C_Decrypt": CR.C_Decrypt,
        "C_DecryptUpdate": CR.C_DecryptUpdate,
        "C_DecryptFinal": CR.C_DecryptFinal,
        "C_DigestInit": CR.C_DigestInit,
        "C_Digest": CR.C_Digest,
        "C_DigestUpdate": CR.C_DigestUpdate,
        "C_DigestKey": CR.C_DigestKey,
        "C_DigestFinal": CR.C_DigestFinal,
        "C_SignInit": CR.C_SignInit,
        "C_Sign": CR.C_Sign,
        "C_SignUpdate": CR.C_SignUpdate,
        "C_SignFinal": CR.C_SignFinal,
        "C_VerifyInit": CR.C_VerifyInit,
        "C_Verify": CR.C_Verify,
        "C_VerifyUpdate": CR.C_VerifyUpdate,
        "C_VerifyFinal": CR.C_VerifyFinal,
        "C_SeedRandom": CR.C_SeedRandom,
        "C_GenerateRandom": CR.C_GenerateRandom,
    },
    KeyCalls: {  # keys
        "C_GenerateKey": K.C_GenerateKey,
        "C_GenerateKeyPair": K.C_GenerateKeyPair,
        "C_WrapKey": K.C_WrapKey,
        "C_UnwrapKey": K.C_UnwrapKey,
        "C_DeriveKey": K.C_DeriveKey,
    },
}
# every call answered, by name -> the group's function (unbound)
HANDLERS: dict[str, Callable] = {name: method for table in GROUPS.values() for name, method in table.items()}
UNSUPPORTED: dict[str, str] = {
    "C_GetOperationState": "an operation's state lives on one member; another could not take it",
    "C_SetOperationState": "an operation's state lives on one member; another could not take it",
    "C_SignRecoverInit": "SoftHSM2 offers no mechanism with recovery",
    "C_SignRecover": "SoftHSM2 offers no mechanism with recovery",
    "C_VerifyRecoverInit": "SoftHSM2 offers no mechanism with recovery",
    "C_VerifyRecover": "SoftHSM2 offers no mechanism with recovery",
    "C_DigestEncryptUpdate": "dual-function operations: SoftHSM2 offers none",
    "C_DecryptDigestUpdate": "dual-function operations: SoftHSM2 offers none",
    "C_SignEncryptUpdate": "dual-function operations: SoftHSM2 offers none",
    "C_DecryptVerifyUpdate": "dual-function operations: SoftHSM2 offers none",
}
# (call id, group, function), as a connection binds them
_BY_ID: tuple[tuple[int, type, Callable], ...] = tuple(
    (BY_NAME[name].id, group, method) for group, table in GROUPS.items() for name, method in table.items()
)


def bind(groups: Mapping[type, object]) -> dict[int, Callable]:
    """call id -> the method of this connection's group object that answers it."""
    return {call_id: MethodType(method, groups[group]) for call_id, group, method in _BY_ID}
