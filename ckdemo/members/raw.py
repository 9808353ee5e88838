"""A thin ctypes binding for the PKCS#11 calls python-pkcs11 0.10.1 does not expose
(C_InitToken, C_GetSessionInfo, C_GetObjectSize among them).

It reaches the module instance python-pkcs11 already loaded and initialised: dlopen of the same
path returns the same handle, so C_GetFunctionList hands out pointers into that initialised
module, and session/object handles from python-pkcs11 (`session.handle`, `obj.handle`) are valid
here. It never calls C_Initialize and holds no lock: the caller serialises calls per library.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, Structure, byref, c_ubyte, c_ulong, c_void_p

from ..codes import CKR_MECHANISM_PARAM_INVALID, CKRError
from ..model import LibraryInfo, MechanismInfo, SessionInfo, SlotInfo, TokenInfo

CK_ULONG = c_ulong  # unsigned long on Linux; structs are not packed there
CK_RV = CK_ULONG
CK_BYTE_PTR = POINTER(c_ubyte)

CKR_OK = 0x0
CKR_BUFFER_TOO_SMALL = 0x150
CKR_FUNCTION_FAILED = 0x6
CKR_OPERATION_ACTIVE = 0x90
CK_UNAVAILABLE_INFORMATION = (1 << (8 * ctypes.sizeof(CK_ULONG))) - 1
CKF_DONT_BLOCK = 0x1
CKF_RW_SESSION = 0x2
CKF_SERIAL_SESSION = 0x4

# python-pkcs11's p11_open calls dlopen(path, RTLD_LAZY) (RTLD_LOCAL by default); the same
# flags plus RTLD_NOLOAD only find that loaded instance and never load (uninitialised) a new one.
DLOPEN_MODE = os.RTLD_LAZY | os.RTLD_LOCAL
DLOPEN_MODE_EXISTING = DLOPEN_MODE | os.RTLD_NOLOAD

SLOT_FLAGS = {0x1: "CKF_TOKEN_PRESENT", 0x2: "CKF_REMOVABLE_DEVICE", 0x4: "CKF_HW_SLOT"}

TOKEN_FLAGS = {
    0x1: "CKF_RNG",
    0x2: "CKF_WRITE_PROTECTED",
    0x4: "CKF_LOGIN_REQUIRED",
    0x8: "CKF_USER_PIN_INITIALIZED",
    0x20: "CKF_RESTORE_KEY_NOT_NEEDED",
    0x40: "CKF_CLOCK_ON_TOKEN",
    0x100: "CKF_PROTECTED_AUTHENTICATION_PATH",
    0x200: "CKF_DUAL_CRYPTO_OPERATIONS",
    0x400: "CKF_TOKEN_INITIALIZED",
    0x800: "CKF_SECONDARY_AUTHENTICATION",
    0x10000: "CKF_USER_PIN_COUNT_LOW",
    0x20000: "CKF_USER_PIN_FINAL_TRY",
    0x40000: "CKF_USER_PIN_LOCKED",
    0x80000: "CKF_USER_PIN_TO_BE_CHANGED",
    0x100000: "CKF_SO_PIN_COUNT_LOW",
    0x200000: "CKF_SO_PIN_FINAL_TRY",
    0x400000: "CKF_SO_PIN_LOCKED",
    0x800000: "CKF_SO_PIN_TO_BE_CHANGED",
    0x1000000: "CKF_ERROR_STATE",
}

SESSION_FLAGS = {CKF_RW_SESSION: "CKF_RW_SESSION", CKF_SERIAL_SESSION: "CKF_SERIAL_SESSION"}

MECHANISM_FLAGS = {
    0x1: "CKF_HW",
    0x100: "CKF_ENCRYPT",
    0x200: "CKF_DECRYPT",
    0x400: "CKF_DIGEST",
    0x800: "CKF_SIGN",
    0x1000: "CKF_SIGN_RECOVER",
    0x2000: "CKF_VERIFY",
    0x4000: "CKF_VERIFY_RECOVER",
    0x8000: "CKF_GENERATE",
    0x10000: "CKF_GENERATE_KEY_PAIR",
    0x20000: "CKF_WRAP",
    0x40000: "CKF_UNWRAP",
    0x80000: "CKF_DERIVE",
    0x100000: "CKF_EC_F_P",
    0x200000: "CKF_EC_F_2M",
    0x400000: "CKF_EC_ECPARAMETERS",
    0x800000: "CKF_EC_NAMEDCURVE",  # = CKF_EC_OID in v3.0
    0x1000000: "CKF_EC_UNCOMPRESS",
    0x2000000: "CKF_EC_COMPRESS",
    0x80000000: "CKF_EXTENSION",
}


class CK_VERSION(Structure):
    _fields_ = [("major", c_ubyte), ("minor", c_ubyte)]


class CK_INFO(Structure):
    _fields_ = [
        ("cryptokiVersion", CK_VERSION),
        ("manufacturerID", c_ubyte * 32),
        ("flags", CK_ULONG),
        ("libraryDescription", c_ubyte * 32),
        ("libraryVersion", CK_VERSION),
    ]


class CK_SLOT_INFO(Structure):
    _fields_ = [
        ("slotDescription", c_ubyte * 64),
        ("manufacturerID", c_ubyte * 32),
        ("flags", CK_ULONG),
        ("hardwareVersion", CK_VERSION),
        ("firmwareVersion", CK_VERSION),
    ]


class CK_TOKEN_INFO(Structure):
    _fields_ = [
        ("label", c_ubyte * 32),
        ("manufacturerID", c_ubyte * 32),
        ("model", c_ubyte * 16),
        ("serialNumber", c_ubyte * 16),
        ("flags", CK_ULONG),
        ("ulMaxSessionCount", CK_ULONG),
        ("ulSessionCount", CK_ULONG),
        ("ulMaxRwSessionCount", CK_ULONG),
        ("ulRwSessionCount", CK_ULONG),
        ("ulMaxPinLen", CK_ULONG),
        ("ulMinPinLen", CK_ULONG),
        ("ulTotalPublicMemory", CK_ULONG),
        ("ulFreePublicMemory", CK_ULONG),
        ("ulTotalPrivateMemory", CK_ULONG),
        ("ulFreePrivateMemory", CK_ULONG),
        ("hardwareVersion", CK_VERSION),
        ("firmwareVersion", CK_VERSION),
        ("utcTime", c_ubyte * 16),
    ]


class CK_SESSION_INFO(Structure):
    _fields_ = [
        ("slotID", CK_ULONG),
        ("state", CK_ULONG),
        ("flags", CK_ULONG),
        ("ulDeviceError", CK_ULONG),
    ]


class CK_MECHANISM_INFO(Structure):
    _fields_ = [("ulMinKeySize", CK_ULONG), ("ulMaxKeySize", CK_ULONG), ("flags", CK_ULONG)]


# CK_FUNCTION_LIST of PKCS#11 v2.40, in spec order.
FUNCTION_NAMES = (
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_CopyObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_EncryptInit",
    "C_Encrypt",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestKey",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_GenerateKeyPair",
    "C_WrapKey",
    "C_UnwrapKey",
    "C_DeriveKey",
    "C_SeedRandom",
    "C_GenerateRandom",
    "C_GetFunctionStatus",
    "C_CancelFunction",
    "C_WaitForSlotEvent",
)


class CK_MECHANISM(Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", c_void_p), ("ulParameterLen", CK_ULONG)]


class CK_FUNCTION_LIST(Structure):
    _fields_ = [("version", CK_VERSION)] + [(name, c_void_p) for name in FUNCTION_NAMES]


_UL, _PUL = CK_ULONG, POINTER(CK_ULONG)

# Argument types of the functions this module calls (CK_SLOT_ID, handles and flags are CK_ULONG).
PROTOTYPES = {
    "C_Finalize": (c_void_p,),
    "C_GetInfo": (POINTER(CK_INFO),),
    "C_GetSlotList": (c_ubyte, _PUL, _PUL),
    "C_GetSlotInfo": (_UL, POINTER(CK_SLOT_INFO)),
    "C_GetTokenInfo": (_UL, POINTER(CK_TOKEN_INFO)),
    "C_GetMechanismList": (_UL, _PUL, _PUL),
    "C_GetMechanismInfo": (_UL, _UL, POINTER(CK_MECHANISM_INFO)),
    "C_InitToken": (_UL, CK_BYTE_PTR, _UL, CK_BYTE_PTR),
    "C_InitPIN": (_UL, CK_BYTE_PTR, _UL),
    "C_SetPIN": (_UL, CK_BYTE_PTR, _UL, CK_BYTE_PTR, _UL),
    "C_OpenSession": (_UL, _UL, c_void_p, c_void_p, _PUL),
    "C_CloseSession": (_UL,),
    "C_CloseAllSessions": (_UL,),
    "C_GetSessionInfo": (_UL, POINTER(CK_SESSION_INFO)),
    "C_Login": (_UL, _UL, CK_BYTE_PTR, _UL),
    "C_Logout": (_UL,),
    "C_GetObjectSize": (_UL, _UL, _PUL),
    "C_GenerateRandom": (_UL, CK_BYTE_PTR, _UL),
    "C_CreateObject": (_UL, c_void_p, _UL, _PUL),
    "C_CopyObject": (_UL, _UL, c_void_p, _UL, _PUL),
    "C_SetAttributeValue": (_UL, _UL, c_void_p, _UL),
    "C_DestroyObject": (_UL, _UL),
    "C_FindObjectsInit": (_UL, c_void_p, _UL),
    "C_FindObjects": (_UL, _PUL, _UL, _PUL),
    "C_FindObjectsFinal": (_UL,),
    "C_GetAttributeValue": (_UL, _UL, c_void_p, _UL),
    "C_WaitForSlotEvent": (_UL, _PUL, c_void_p),
    "C_GenerateKey": (_UL, POINTER(CK_MECHANISM), c_void_p, _UL, _PUL),
    "C_DigestFinal": (_UL, CK_BYTE_PTR, _PUL),
    "C_DigestInit": (_UL, POINTER(CK_MECHANISM)),
    "C_DigestUpdate": (_UL, CK_BYTE_PTR, _UL),
    "C_DigestKey": (_UL, _UL),
    "C_GenerateKeyPair": (_UL, POINTER(CK_MECHANISM), c_void_p, _UL, c_void_p, _UL, _PUL, _PUL),
    "C_SignInit": (_UL, POINTER(CK_MECHANISM), _UL),
    "C_Sign": (_UL, CK_BYTE_PTR, _UL, CK_BYTE_PTR, _PUL),
    "C_DecryptInit": (_UL, POINTER(CK_MECHANISM), _UL),
    "C_Decrypt": (_UL, CK_BYTE_PTR, _UL, CK_BYTE_PTR, _PUL),
    "C_WrapKey": (_UL, POINTER(CK_MECHANISM), _UL, _UL, CK_BYTE_PTR, _PUL),
    "C_UnwrapKey": (_UL, POINTER(CK_MECHANISM), _UL, CK_BYTE_PTR, _UL, c_void_p, _UL, _PUL),
}
REAUTHENTICATED = {"sign": ("C_SignInit", "C_Sign"), "decrypt": ("C_DecryptInit", "C_Decrypt")}
CKU_CONTEXT_SPECIFIC = 2


class CK_RSA_PKCS_PSS_PARAMS(Structure):
    _fields_ = [("hashAlg", CK_ULONG), ("mgf", CK_ULONG), ("sLen", CK_ULONG)]


class CK_RSA_PKCS_OAEP_PARAMS(Structure):
    _fields_ = [
        ("hashAlg", CK_ULONG),
        ("mgf", CK_ULONG),
        ("source", CK_ULONG),
        ("pSourceData", c_void_p),
        ("ulSourceDataLen", CK_ULONG),
    ]


CKZ_DATA_SPECIFIED = 0x1


def _mechanism(mechanism: int, param) -> tuple[CK_MECHANISM, list]:
    """CK_MECHANISM for `param` (none, raw bytes, PSS or OAEP), and what must outlive the call."""
    from ..model import OAEPParam, PSSParam

    keep: list = []
    if param is None:
        return CK_MECHANISM(mechanism, None, 0), keep
    if isinstance(param, (bytes, bytearray)):
        structure = (c_ubyte * max(len(param), 1)).from_buffer_copy(bytes(param) or b"\0")
        keep.append(structure)
        return CK_MECHANISM(mechanism, ctypes.cast(structure, c_void_p), len(param)), keep
    if isinstance(param, PSSParam):
        structure = CK_RSA_PKCS_PSS_PARAMS(param.hash_mechanism, param.mgf, param.salt_length)
    elif isinstance(param, OAEPParam):
        source = bytes(param.source or b"")
        data = (c_ubyte * max(len(source), 1)).from_buffer_copy(source or b"\0")
        keep.append(data)
        structure = CK_RSA_PKCS_OAEP_PARAMS(
            param.hash_mechanism,
            param.mgf,
            CKZ_DATA_SPECIFIED,
            ctypes.cast(data, c_void_p) if source else None,
            len(source),
        )
    else:
        raise CKRError(
            CKR_MECHANISM_PARAM_INVALID,
            "C_SignInit",
            f"ckdemo passes no {type(param).__name__} to an always-authenticate key's operation",
        )
    keep.append(structure)
    return CK_MECHANISM(mechanism, ctypes.cast(byref(structure), c_void_p), ctypes.sizeof(structure)), keep


def _text(field) -> str:
    return bytes(field).decode("utf-8", errors="replace").rstrip(" \x00")


def _version(v: CK_VERSION) -> tuple[int, int]:
    return (v.major, v.minor)


def _flag_names(flags: int, table: dict[int, str]) -> tuple[str, ...]:
    return tuple(name for bit, name in table.items() if flags & bit)


def _secret(pin: str) -> tuple[ctypes.Array, int]:
    data = pin.encode("utf-8")
    return (c_ubyte * max(len(data), 1)).from_buffer_copy(data or b"\0"), len(data)


class RawModule:
    """The same, already initialised PKCS#11 module python-pkcs11 loaded from `path`."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._dll = ctypes.CDLL(path, mode=DLOPEN_MODE_EXISTING)
        except OSError as exc:
            raise OSError(f"{path} is not loaded yet: load it with pkcs11.lib() first") from exc
        function_list = POINTER(CK_FUNCTION_LIST)()
        get_function_list = self._dll.C_GetFunctionList
        get_function_list.argtypes = (POINTER(POINTER(CK_FUNCTION_LIST)),)
        get_function_list.restype = CK_RV
        self._check(get_function_list(byref(function_list)), "C_GetFunctionList")
        self.function_list = function_list.contents
        self._functions = {
            name: ctypes.CFUNCTYPE(CK_RV, *argtypes)(getattr(self.function_list, name))
            for name, argtypes in PROTOTYPES.items()
        }

    @staticmethod
    def _check(rv: int, function: str) -> None:
        if rv != CKR_OK:
            raise CKRError(rv, function)

    def _call(self, function: str, *args) -> None:
        self._check(self._functions[function](*args), function)

    def _ulong_list(self, function: str, first_arg: int) -> list[int]:
        count = CK_ULONG(0)
        while True:
            self._call(function, first_arg, None, byref(count))
            items = (CK_ULONG * count.value)()
            rv = self._functions[function](first_arg, items, byref(count))
            if rv != CKR_BUFFER_TOO_SMALL:  # the list grew between the two calls: ask again
                self._check(rv, function)
                return list(items[: count.value])

    def has_symbol(self, name: str) -> bool:
        """Vendor extension detection (e.g. Luna's CA_GetHAState) by dlsym on this library."""
        try:
            getattr(self._dll, name)
        except AttributeError:
            return False
        return True

    def get_info(self) -> LibraryInfo:
        info = CK_INFO()
        self._call("C_GetInfo", byref(info))
        return LibraryInfo(
            cryptoki_version=_version(info.cryptokiVersion),
            manufacturer_id=_text(info.manufacturerID),
            library_description=_text(info.libraryDescription),
            library_version=_version(info.libraryVersion),
            path=self.path,
        )

    def get_slot_list(self, token_present: bool) -> list[int]:
        return self._ulong_list("C_GetSlotList", int(bool(token_present)))

    def get_slot_info(self, slot_id: int) -> SlotInfo:
        info = CK_SLOT_INFO()
        self._call("C_GetSlotInfo", slot_id, byref(info))
        return SlotInfo(
            slot_id=slot_id,
            description=_text(info.slotDescription),
            manufacturer_id=_text(info.manufacturerID),
            flags=info.flags,
            flag_names=_flag_names(info.flags, SLOT_FLAGS),
            hardware_version=_version(info.hardwareVersion),
            firmware_version=_version(info.firmwareVersion),
        )

    def get_token_info(self, slot_id: int) -> TokenInfo:
        info = CK_TOKEN_INFO()
        self._call("C_GetTokenInfo", slot_id, byref(info))
        return TokenInfo(
            label=_text(info.label),
            manufacturer_id=_text(info.manufacturerID),
            model=_text(info.model),
            serial_number=_text(info.serialNumber),
            flags=info.flags,
            flag_names=_flag_names(info.flags, TOKEN_FLAGS),
            max_session_count=info.ulMaxSessionCount,
            session_count=info.ulSessionCount,
            max_rw_session_count=info.ulMaxRwSessionCount,
            rw_session_count=info.ulRwSessionCount,
            max_pin_len=info.ulMaxPinLen,
            min_pin_len=info.ulMinPinLen,
            total_public_memory=info.ulTotalPublicMemory,
            free_public_memory=info.ulFreePublicMemory,
            total_private_memory=info.ulTotalPrivateMemory,
            free_private_memory=info.ulFreePrivateMemory,
            hardware_version=_version(info.hardwareVersion),
            firmware_version=_version(info.firmwareVersion),
            utc_time=_text(info.utcTime),
        )

    def get_mechanism_list(self, slot_id: int) -> list[int]:
        return self._ulong_list("C_GetMechanismList", slot_id)

    def get_mechanism_info(self, slot_id: int, mechanism: int) -> MechanismInfo:
        info = CK_MECHANISM_INFO()
        self._call("C_GetMechanismInfo", slot_id, mechanism, byref(info))
        return MechanismInfo(
            mechanism=mechanism,
            name="",  # the caller names it from its mechanism table
            min_key_size=info.ulMinKeySize,
            max_key_size=info.ulMaxKeySize,
            flags=info.flags,
            flag_names=_flag_names(info.flags, MECHANISM_FLAGS),
        )

    def init_token(self, slot_id: int, so_pin: str, label: str) -> None:
        encoded = label.encode("utf-8")
        if len(encoded) > 32:
            raise ValueError("token label is longer than 32 bytes")
        padded = (c_ubyte * 32).from_buffer_copy(encoded.ljust(32, b" "))
        pin, pin_len = _secret(so_pin)
        self._call("C_InitToken", slot_id, pin, pin_len, padded)

    def init_pin(self, session: int, pin: str) -> None:
        self._call("C_InitPIN", session, *_secret(pin))

    def set_pin(self, session: int, old_pin: str, new_pin: str) -> None:
        self._call("C_SetPIN", session, *_secret(old_pin), *_secret(new_pin))

    def login(self, session: int, user_type: int, pin: str) -> None:
        self._call("C_Login", session, user_type, *_secret(pin))

    def logout(self, session: int) -> None:
        self._call("C_Logout", session)

    def open_session(self, slot_id: int, rw: bool) -> int:
        handle = CK_ULONG(0)
        flags = CKF_SERIAL_SESSION | (CKF_RW_SESSION if rw else 0)
        self._call("C_OpenSession", slot_id, flags, None, None, byref(handle))
        return handle.value

    def close_session(self, session: int) -> None:
        self._call("C_CloseSession", session)

    def finalize(self) -> None:
        """C_Finalize with the GIL released (python-pkcs11 holds it there, and SoftHSM2 frees
        every object it had read: most of a second at 10,000 objects, the whole process stalled)."""
        self._call("C_Finalize", None)

    def close_all_sessions(self, slot_id: int) -> None:
        self._call("C_CloseAllSessions", slot_id)

    def get_session_info(self, session: int) -> SessionInfo:
        info = CK_SESSION_INFO()
        self._call("C_GetSessionInfo", session, byref(info))
        return SessionInfo(
            handle=session,
            slot_id=info.slotID,
            state=info.state,
            flags=info.flags,
            flag_names=_flag_names(info.flags, SESSION_FLAGS),
            device_error=info.ulDeviceError,
        )

    def get_object_size(self, session: int, obj: int) -> int:
        size = CK_ULONG(0)
        self._call("C_GetObjectSize", session, obj, byref(size))
        return size.value

    def create_object(self, session: int, template: dict) -> int:
        """C_CreateObject with any template, nested ones included (CKA_UNWRAP_TEMPLATE)."""
        from .template import Packed

        packed, handle = Packed(template), CK_ULONG(0)
        self._call(
            "C_CreateObject", session, ctypes.cast(packed.array, c_void_p), packed.count, byref(handle)
        )
        return handle.value

    def copy_object(self, session: int, handle: int, template: dict) -> int:
        from .template import Packed

        packed, new = Packed(template), CK_ULONG(0)
        self._call(
            "C_CopyObject", session, handle, ctypes.cast(packed.array, c_void_p), packed.count, byref(new)
        )
        return new.value

    def set_attribute_value(self, session: int, handle: int, template: dict) -> None:
        """One C_SetAttributeValue with the whole template: the token applies all or nothing."""
        from .template import Packed

        packed = Packed(template)
        self._call("C_SetAttributeValue", session, handle, ctypes.cast(packed.array, c_void_p), packed.count)

    def find_objects(self, session: int, template: dict) -> list[int]:
        """Handles only: nothing is read from the objects (a torn one cannot break the search)."""
        from .template import Packed

        packed, found = Packed(template), []
        rv = self._functions["C_FindObjectsInit"](session, ctypes.cast(packed.array, c_void_p), packed.count)
        if rv != CKR_OK:
            # SoftHSM2 2.6.1 leaves the session in its search when the search fails half-way
            # (CKR_GENERAL_ERROR: a private object's value it cannot decrypt), and every later
            # operation is then CKR_OPERATION_ACTIVE: ended here (nothing to end is answered
            # CKR_OPERATION_NOT_INITIALIZED, and another operation running is left as it is)
            if rv != CKR_OPERATION_ACTIVE:
                self._functions["C_FindObjectsFinal"](session)
            self._check(rv, "C_FindObjectsInit")
        try:
            batch, count = (CK_ULONG * 64)(), CK_ULONG(0)
            while True:
                self._call("C_FindObjects", session, batch, 64, byref(count))
                found.extend(batch[: count.value])
                if count.value < 64:
                    return found
        finally:
            self._functions["C_FindObjectsFinal"](session)

    def attribute(self, session: int, handle: int, attribute: int) -> bytes | None:
        """One attribute's raw value, or None when the object does not have it."""
        from .template import CK_ATTRIBUTE

        item = CK_ATTRIBUTE(attribute, None, 0)
        if (
            self._functions["C_GetAttributeValue"](session, handle, byref(item), 1) != CKR_OK
            or item.ulValueLen == CK_UNAVAILABLE_INFORMATION
        ):
            return None
        buffer = (c_ubyte * max(item.ulValueLen, 1))()
        item.pValue = ctypes.cast(buffer, c_void_p)
        if self._functions["C_GetAttributeValue"](session, handle, byref(item), 1) != CKR_OK:
            return None
        return bytes(buffer[: item.ulValueLen])

    def attribute_values(self, session: int, handle: int, types: list[int]) -> dict[int, bytes]:
        """The raw values of the readable ones of `types`, read as python-pkcs11's
        Object.get_attributes reads them (its sizes first, then those available in one call):
        an error only when none is readable, so the application's Objects need not be made."""
        from .template import CK_ATTRIBUTE

        read = self._functions["C_GetAttributeValue"]
        sizes = (CK_ATTRIBUTE * len(types))(*((t, None, 0) for t in types))
        rv = read(session, handle, ctypes.cast(sizes, c_void_p), len(types))
        available = [item for item in sizes if item.ulValueLen != CK_UNAVAILABLE_INFORMATION]
        if rv == CKR_OK and len(available) < len(types):  # the spec forbids it: python-pkcs11's
            rv = CKR_FUNCTION_FAILED  # answer
        if not available:
            self._check(rv, "C_GetAttributeValue")
            return {}
        buffers = [(c_ubyte * max(item.ulValueLen, 1))() for item in available]
        values = (CK_ATTRIBUTE * len(available))(
            *(
                (item.type, ctypes.addressof(buffer), item.ulValueLen)
                for item, buffer in zip(available, buffers)
            )
        )
        self._call("C_GetAttributeValue", session, handle, ctypes.cast(values, c_void_p), len(available))
        if any(item.ulValueLen == CK_UNAVAILABLE_INFORMATION for item in values):
            raise CKRError(
                CKR_FUNCTION_FAILED, "C_GetAttributeValue", "the token gave a size and then no value"
            )
        return {item.type: ctypes.string_at(buffer, item.ulValueLen) for item, buffer in zip(values, buffers)}

    def destroy_object(self, session: int, handle: int) -> None:
        self._call("C_DestroyObject", session, handle)

    def digest_parts(self, session: int, mechanism: int, parts: list) -> bytes:
        """One digest over data (bytes) and objects (handles, C_DigestKey), in order, with the
        token's own answer for any object; a digest that fails half-way is ended (end_digest)."""
        self._call("C_DigestInit", session, byref(CK_MECHANISM(mechanism, None, 0)))
        try:
            for part in parts:
                if isinstance(part, (bytes, bytearray)):
                    if part:
                        data = bytes(part)
                        self._call(
                            "C_DigestUpdate", session, (c_ubyte * len(data)).from_buffer_copy(data), len(data)
                        )
                else:
                    self._call("C_DigestKey", session, part)
            room, length = (c_ubyte * 512)(), CK_ULONG(512)
            self._call("C_DigestFinal", session, room, byref(length))
        except BaseException:
            self.end_digest(session)
            raise
        return bytes(room[: length.value])

    def end_digest(self, session: int) -> None:
        """Ends whatever digest the session has running, if any (a C_DigestFinal with room for
        any digest; its answer does not matter). SoftHSM2 2.6.1 leaves a digest running after a
        C_DigestKey it refuses (CKR_KEY_INDIGESTIBLE): the session would answer
        CKR_OPERATION_ACTIVE to everything after, searches included."""
        room, length = (c_ubyte * 512)(), CK_ULONG(512)
        self._functions["C_DigestFinal"](session, room, byref(length))

    def generate_key(
        self, session: int, mechanism: int, template: dict, parameter: Structure | None = None
    ) -> int:
        """C_GenerateKey with exactly this template, and the mechanism's parameter structure if
        it takes one (CKM_PKCS5_PBKD2: members/pbe.py)."""
        from .template import Packed

        packed, handle = Packed(template), CK_ULONG(0)
        if parameter is None:
            chosen = CK_MECHANISM(mechanism, None, 0)
        else:
            chosen = CK_MECHANISM(
                mechanism, ctypes.cast(byref(parameter), c_void_p), ctypes.sizeof(parameter)
            )
        self._call(
            "C_GenerateKey",
            session,
            byref(chosen),
            ctypes.cast(packed.array, c_void_p),
            packed.count,
            byref(handle),
        )
        return handle.value

    def generate_key_pair(self, session: int, mechanism: int, public: dict, private: dict) -> tuple[int, int]:
        from .template import Packed

        packed_public, packed_private = Packed(public), Packed(private)
        public_handle, private_handle = CK_ULONG(0), CK_ULONG(0)
        self._call(
            "C_GenerateKeyPair",
            session,
            byref(CK_MECHANISM(mechanism, None, 0)),
            ctypes.cast(packed_public.array, c_void_p),
            packed_public.count,
            ctypes.cast(packed_private.array, c_void_p),
            packed_private.count,
            byref(public_handle),
            byref(private_handle),
        )
        return public_handle.value, private_handle.value

    def reauthenticated(
        self, session: int, operation: str, key: int, mechanism: int, param, data: bytes, pin: str, room: int
    ) -> bytes:
        """C_SignInit or C_DecryptInit, the context-specific login a CKA_ALWAYS_AUTHENTICATE key
        asks for, then C_Sign or C_Decrypt: the three in a row (python-pkcs11 has no room for
        the login between Init and the operation)."""
        init, function = REAUTHENTICATED[operation]
        chosen, keep = _mechanism(mechanism, param)
        self._call(init, session, byref(chosen), key)
        secret, length = _secret(pin)
        rv = self._functions["C_Login"](session, CKU_CONTEXT_SPECIFIC, secret, length)
        if rv != CKR_OK:
            self._functions[function](session, None, 0, None, byref(CK_ULONG(0)))  # ends it
            raise CKRError(rv, "C_Login")
        source = (c_ubyte * max(len(data), 1)).from_buffer_copy(bytes(data) or b"\0")
        output, size = (c_ubyte * room)(), CK_ULONG(room)
        self._call(function, session, source, len(data), output, byref(size))
        del keep
        return bytes(output[: size.value])

    def wrap_key(self, session: int, mechanism: int, param, wrapping: int, key: int) -> bytes:
        """C_WrapKey of any object, with the token's own answer (python-pkcs11 wraps only what it
        takes for a key, and answers CKR_ARGUMENTS_BAD itself for a data object)."""
        chosen, keep = _mechanism(mechanism, param)
        size = CK_ULONG(0)
        self._call("C_WrapKey", session, byref(chosen), wrapping, key, None, byref(size))
        output = (c_ubyte * max(size.value, 1))()
        self._call("C_WrapKey", session, byref(chosen), wrapping, key, output, byref(size))
        del keep
        return bytes(output[: size.value])

    def unwrap_key(
        self, session: int, mechanism: int, param, unwrapping: int, data: bytes, template: dict
    ) -> int:
        """C_UnwrapKey with exactly this template, in its order (SoftHSM2 applies the attributes
        one after the other: after CKA_MODIFIABLE FALSE, any other is CKR_ATTRIBUTE_READ_ONLY)."""
        from .template import Packed

        chosen, keep = _mechanism(mechanism, param)
        packed, handle = Packed(template), CK_ULONG(0)
        blob = (c_ubyte * max(len(data), 1)).from_buffer_copy(bytes(data) or b"\0")
        self._call(
            "C_UnwrapKey",
            session,
            byref(chosen),
            unwrapping,
            blob,
            len(data),
            ctypes.cast(packed.array, c_void_p),
            packed.count,
            byref(handle),
        )
        del keep
        return handle.value

    def generate_random(self, session: int, n: int) -> bytes:
        buffer = (c_ubyte * n)()
        self._call("C_GenerateRandom", session, buffer, n)
        return bytes(buffer)

    def wait_for_slot_event(self, block: bool = False) -> int:
        slot_id = CK_ULONG(0)
        self._call("C_WaitForSlotEvent", 0 if block else CKF_DONT_BLOCK, byref(slot_id), None)
        return slot_id.value
