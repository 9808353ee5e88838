"""The calls of protocol version 0 and their signatures, as data (p11-kit 0.24.1 rpc-message.h).

Signature letters: `y` byte, `u` CK_ULONG (u64), `v` CK_VERSION, `s` space-padded string,
`z` NUL-terminated string, `M` CK_MECHANISM, `aA` attributes with values, `fA` attribute types
with buffer lengths, `ay`/`au` byte/ulong arrays, `fy`/`fu` the buffer size a caller offers.
The signature strings travel on the wire verbatim, so they are written here exactly as p11-kit
has them. The five *Info replies are read as one structure (see structs.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from .structs import Info, MechanismInfo, SessionInfo, SlotInfo, TokenInfo

PROTOCOL_VERSION = 0
HANDSHAKE = b"PRIVATE-GNOME-KEYRING-PKCS11-PROTOCOL-V-1"  # P11_RPC_HANDSHAKE, in C_Initialize
CALL_ERROR = 0  # P11_RPC_CALL_ERROR: a reply carrying only a CK_RV

_TOKEN = re.compile(r"a[yuA]|f[yuA]|[yuvszM]")


@dataclass(frozen=True)
class Call:
    id: int
    name: str
    request: str | None
    response: str
    response_struct: type | None = None

    @cached_property
    def request_fields(self) -> tuple[str, ...]:
        return tokens(self.request or "")

    @cached_property
    def response_fields(self) -> tuple[str, ...]:
        return tokens(self.response)


def tokens(signature: str) -> tuple[str, ...]:
    found = tuple(_TOKEN.findall(signature))
    if "".join(found) != signature:
        raise ValueError(f"bad signature {signature!r}")
    return found


CALLS: tuple[Call, ...] = (
    Call(0, "ERROR", None, "u"),
    Call(1, "C_Initialize", "ayyay", ""),
    Call(2, "C_Finalize", "", ""),
    Call(3, "C_GetInfo", "", "vsusv", Info),
    Call(4, "C_GetSlotList", "yfu", "au"),
    Call(5, "C_GetSlotInfo", "u", "ssuvv", SlotInfo),
    Call(6, "C_GetTokenInfo", "u", "ssssuuuuuuuuuuuvvs", TokenInfo),
    Call(7, "C_GetMechanismList", "ufu", "au"),
    Call(8, "C_GetMechanismInfo", "uu", "uuu", MechanismInfo),
    Call(9, "C_InitToken", "uayz", ""),
    Call(10, "C_OpenSession", "uu", "u"),
    Call(11, "C_CloseSession", "u", ""),
    Call(12, "C_CloseAllSessions", "u", ""),
    Call(13, "C_GetSessionInfo", "u", "uuuu", SessionInfo),
    Call(14, "C_InitPIN", "uay", ""),
    Call(15, "C_SetPIN", "uayay", ""),
    Call(16, "C_GetOperationState", "ufy", "ay"),
    Call(17, "C_SetOperationState", "uayuu", ""),
    Call(18, "C_Login", "uuay", ""),
    Call(19, "C_Logout", "u", ""),
    Call(20, "C_CreateObject", "uaA", "u"),
    Call(21, "C_CopyObject", "uuaA", "u"),
    Call(22, "C_DestroyObject", "uu", ""),
    Call(23, "C_GetObjectSize", "uu", "u"),
    Call(24, "C_GetAttributeValue", "uufA", "aAu"),
    Call(25, "C_SetAttributeValue", "uuaA", ""),
    Call(26, "C_FindObjectsInit", "uaA", ""),
    Call(27, "C_FindObjects", "ufu", "au"),
    Call(28, "C_FindObjectsFinal", "u", ""),
    Call(29, "C_EncryptInit", "uMu", ""),
    Call(30, "C_Encrypt", "uayfy", "ay"),
    Call(31, "C_EncryptUpdate", "uayfy", "ay"),
    Call(32, "C_EncryptFinal", "ufy", "ay"),
    Call(33, "C_DecryptInit", "uMu", ""),
    Call(34, "C_Decrypt", "uayfy", "ay"),
    Call(35, "C_DecryptUpdate", "uayfy", "ay"),
    Call(36, "C_DecryptFinal", "ufy", "ay"),
    Call(37, "C_DigestInit", "uM", ""),
    Call(38, "C_Digest", "uayfy", "ay"),
    Call(39, "C_DigestUpdate", "uay", ""),
    Call(40, "C_DigestKey", "uu", ""),
    Call(41, "C_DigestFinal", "ufy", "ay"),
    Call(42, "C_SignInit", "uMu", ""),
    Call(43, "C_Sign", "uayfy", "ay"),
    Call(44, "C_SignUpdate", "uay", ""),
    Call(45, "C_SignFinal", "ufy", "ay"),
    Call(46, "C_SignRecoverInit", "uMu", ""),
    Call(47, "C_SignRecover", "uayfy", "ay"),
    Call(48, "C_VerifyInit", "uMu", ""),
    Call(49, "C_Verify", "uayay", ""),
    Call(50, "C_VerifyUpdate", "uay", ""),
    Call(51, "C_VerifyFinal", "uay", ""),
    Call(52, "C_VerifyRecoverInit", "uMu", ""),
    Call(53, "C_VerifyRecover", "uayfy", "ay"),
    Call(54, "C_DigestEncryptUpdate", "uayfy", "ay"),
    Call(55, "C_DecryptDigestUpdate", "uayfy", "ay"),
    Call(56, "C_SignEncryptUpdate", "uayfy", "ay"),
    Call(57, "C_DecryptVerifyUpdate", "uayfy", "ay"),
    Call(58, "C_GenerateKey", "uMaA", "u"),
    Call(59, "C_GenerateKeyPair", "uMaAaA", "uu"),
    Call(60, "C_WrapKey", "uMuufy", "ay"),
    Call(61, "C_UnwrapKey", "uMuayaA", "u"),
    Call(62, "C_DeriveKey", "uMuaA", "u"),
    Call(63, "C_SeedRandom", "uay", ""),
    Call(64, "C_GenerateRandom", "ufy", "ay"),
    Call(65, "C_WaitForSlotEvent", "u", "u"),
)

BY_ID: dict[int, Call] = {call.id: call for call in CALLS}
BY_NAME: dict[str, Call] = {call.name: call for call in CALLS}
