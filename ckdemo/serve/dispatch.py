"""Which method of a Connection answers which call: the one table, written out (no reflection).

Every call of protocol version 0 (ckdemo.rpc.calls) is either here or in UNSUPPORTED with the
reason it is answered CKR_FUNCTION_NOT_SUPPORTED; tests/test_serve_dispatch.py holds the two
against the protocol's list. The calls are grouped as the PKCS#11 specification groups them,
one module each (slot_calls, session_calls, object_calls, crypto_calls, key_calls).
"""
from __future__ import annotations

from typing import Callable

from ..rpc.calls import BY_NAME
from .connection import Connection

C = Connection
HANDLERS: dict[str, Callable] = {
    # general purpose and slots (slot_calls)
    "C_Initialize": C.C_Initialize, "C_Finalize": C.C_Finalize, "C_GetInfo": C.C_GetInfo,
    "C_GetSlotList": C.C_GetSlotList, "C_GetSlotInfo": C.C_GetSlotInfo,
    "C_GetTokenInfo": C.C_GetTokenInfo, "C_GetMechanismList": C.C_GetMechanismList,
    "C_GetMechanismInfo": C.C_GetMechanismInfo, "C_InitToken": C.C_InitToken,
    "C_WaitForSlotEvent": C.C_WaitForSlotEvent,
    # sessions and logins (session_calls)
    "C_OpenSession": C.C_OpenSession, "C_CloseSession": C.C_CloseSession,
    "C_CloseAllSessions": C.C_CloseAllSessions, "C_GetSessionInfo": C.C_GetSessionInfo,
    "C_Login": C.C_Login, "C_Logout": C.C_Logout, "C_InitPIN": C.C_InitPIN, "C_SetPIN": C.C_SetPIN,
    # objects (object_calls)
    "C_CreateObject": C.C_CreateObject, "C_CopyObject": C.C_CopyObject,
    "C_DestroyObject": C.C_DestroyObject, "C_GetObjectSize": C.C_GetObjectSize,
    "C_GetAttributeValue": C.C_GetAttributeValue, "C_SetAttributeValue": C.C_SetAttributeValue,
    "C_FindObjectsInit": C.C_FindObjectsInit, "C_FindObjects": C.C_FindObjects,
    "C_FindObjectsFinal": C.C_FindObjectsFinal,
    # cryptographic operations (crypto_calls)
    "C_EncryptInit": C.C_EncryptInit, "C_Encrypt": C.C_Encrypt, "C_EncryptUpdate": C.C_EncryptUpdate,
    "C_EncryptFinal": C.C_EncryptFinal, "C_DecryptInit": C.C_DecryptInit, "C_Decrypt": C.C_Decrypt,
    "C_DecryptUpdate": C.C_DecryptUpdate, "C_DecryptFinal": C.C_DecryptFinal,
    "C_DigestInit": C.C_DigestInit, "C_Digest": C.C_Digest, "C_DigestUpdate": C.C_DigestUpdate,
    "C_DigestKey": C.C_DigestKey, "C_DigestFinal": C.C_DigestFinal,
    "C_SignInit": C.C_SignInit, "C_Sign": C.C_Sign, "C_SignUpdate": C.C_SignUpdate,
    "C_SignFinal": C.C_SignFinal, "C_VerifyInit": C.C_VerifyInit, "C_Verify": C.C_Verify,
    "C_VerifyUpdate": C.C_VerifyUpdate, "C_VerifyFinal": C.C_VerifyFinal,
    "C_SeedRandom": C.C_SeedRandom, "C_GenerateRandom": C.C_GenerateRandom,
    # keys (key_calls)
    "C_GenerateKey": C.C_GenerateKey, "C_GenerateKeyPair": C.C_GenerateKeyPair,
    "C_WrapKey": C.C_WrapKey, "C_UnwrapKey": C.C_UnwrapKey, "C_DeriveKey": C.C_DeriveKey,
}
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
# call id -> method, as the request loop looks it up
BY_ID: dict[int, Callable] = {BY_NAME[name].id: method for name, method in HANDLERS.items()}
