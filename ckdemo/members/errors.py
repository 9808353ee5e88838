"""The only place that turns python-pkcs11 exceptions into CKR codes.

python-pkcs11 0.10.1 raises one exception class per return value but keeps no number
(`map_rv_to_error` in its `_pkcs11.pxd`); the table below is that function read backwards.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

import pkcs11.exceptions as p11

from .. import codes
from ..codes import CKRError

_CKR_OF_CLASS: dict[type[p11.PKCS11Error], int] = {
    p11.AnotherUserAlreadyLoggedIn: codes.CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    p11.ArgumentsBad: codes.CKR_ARGUMENTS_BAD,  # also raised by python-pkcs11 for bad arguments
    p11.AttributeReadOnly: codes.CKR_ATTRIBUTE_READ_ONLY,
    p11.AttributeSensitive: codes.CKR_ATTRIBUTE_SENSITIVE,
    p11.AttributeTypeInvalid: codes.CKR_ATTRIBUTE_TYPE_INVALID,
    p11.AttributeValueInvalid: codes.CKR_ATTRIBUTE_VALUE_INVALID,
    p11.DataInvalid: codes.CKR_DATA_INVALID,
    p11.DataLenRange: codes.CKR_DATA_LEN_RANGE,
    p11.DeviceError: codes.CKR_DEVICE_ERROR,
    p11.DeviceMemory: codes.CKR_DEVICE_MEMORY,
    p11.DeviceRemoved: codes.CKR_DEVICE_REMOVED,
    p11.DomainParamsInvalid: codes.CKR_DOMAIN_PARAMS_INVALID,
    p11.EncryptedDataInvalid: codes.CKR_ENCRYPTED_DATA_INVALID,
    p11.EncryptedDataLenRange: codes.CKR_ENCRYPTED_DATA_LEN_RANGE,
    p11.ExceededMaxIterations: codes.CKR_EXCEEDED_MAX_ITERATIONS,
    p11.FunctionCancelled: codes.CKR_FUNCTION_CANCELED,
    p11.FunctionFailed: codes.CKR_FUNCTION_FAILED,
    p11.FunctionNotSupported: codes.CKR_FUNCTION_NOT_SUPPORTED,  # also for missing v3.2 calls
    p11.FunctionRejected: codes.CKR_FUNCTION_REJECTED,
    p11.GeneralError: codes.CKR_GENERAL_ERROR,
    p11.HostMemory: codes.CKR_HOST_MEMORY,
    p11.KeyHandleInvalid: codes.CKR_KEY_HANDLE_INVALID,
    p11.KeyIndigestible: codes.CKR_KEY_INDIGESTIBLE,
    p11.KeyNeeded: codes.CKR_KEY_NEEDED,
    p11.KeyNotNeeded: codes.CKR_KEY_NOT_NEEDED,
    p11.KeyNotWrappable: codes.CKR_KEY_NOT_WRAPPABLE,
    p11.KeySizeRange: codes.CKR_KEY_SIZE_RANGE,
    p11.KeyTypeInconsistent: codes.CKR_KEY_TYPE_INCONSISTENT,
    p11.KeyUnextractable: codes.CKR_KEY_UNEXTRACTABLE,
    p11.MechanismInvalid: codes.CKR_MECHANISM_INVALID,
    p11.MechanismParamInvalid: codes.CKR_MECHANISM_PARAM_INVALID,
    p11.NoEvent: codes.CKR_NO_EVENT,
    p11.ObjectHandleInvalid: codes.CKR_OBJECT_HANDLE_INVALID,
    p11.OperationActive: codes.CKR_OPERATION_ACTIVE,
    p11.OperationNotInitialized: codes.CKR_OPERATION_NOT_INITIALIZED,
    p11.PinExpired: codes.CKR_PIN_EXPIRED,
    p11.PinIncorrect: codes.CKR_PIN_INCORRECT,
    p11.PinInvalid: codes.CKR_PIN_INVALID,
    p11.PinLenRange: codes.CKR_PIN_LEN_RANGE,
    p11.PinLocked: codes.CKR_PIN_LOCKED,
    p11.PinTooWeak: codes.CKR_PIN_TOO_WEAK,
    p11.PublicKeyInvalid: codes.CKR_PUBLIC_KEY_INVALID,
    p11.RandomNoRNG: codes.CKR_RANDOM_NO_RNG,
    p11.RandomSeedNotSupported: codes.CKR_RANDOM_SEED_NOT_SUPPORTED,
    p11.SessionClosed: codes.CKR_SESSION_CLOSED,
    p11.SessionCount: codes.CKR_SESSION_COUNT,
    p11.SessionExists: codes.CKR_SESSION_EXISTS,
    p11.SessionHandleInvalid: codes.CKR_SESSION_HANDLE_INVALID,
    p11.SessionReadOnly: codes.CKR_SESSION_READ_ONLY,
    p11.SessionReadOnlyExists: codes.CKR_SESSION_READ_ONLY_EXISTS,
    p11.SessionReadWriteSOExists: codes.CKR_SESSION_READ_WRITE_SO_EXISTS,
    p11.SignatureInvalid: codes.CKR_SIGNATURE_INVALID,
    p11.SignatureLenRange: codes.CKR_SIGNATURE_LEN_RANGE,
    p11.SlotIDInvalid: codes.CKR_SLOT_ID_INVALID,
    p11.TemplateIncomplete: codes.CKR_TEMPLATE_INCOMPLETE,
    p11.TemplateInconsistent: codes.CKR_TEMPLATE_INCONSISTENT,
    p11.TokenNotPresent: codes.CKR_TOKEN_NOT_PRESENT,
    p11.TokenNotRecognised: codes.CKR_TOKEN_NOT_RECOGNIZED,
    p11.TokenWriteProtected: codes.CKR_TOKEN_WRITE_PROTECTED,
    p11.UnwrappingKeyHandleInvalid: codes.CKR_UNWRAPPING_KEY_HANDLE_INVALID,
    p11.UnwrappingKeySizeRange: codes.CKR_UNWRAPPING_KEY_SIZE_RANGE,
    p11.UnwrappingKeyTypeInconsistent: codes.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
    p11.UserAlreadyLoggedIn: codes.CKR_USER_ALREADY_LOGGED_IN,
    p11.UserNotLoggedIn: codes.CKR_USER_NOT_LOGGED_IN,
    p11.UserPinNotInitialized: codes.CKR_USER_PIN_NOT_INITIALIZED,
    p11.UserTooManyTypes: codes.CKR_USER_TOO_MANY_TYPES,
    p11.WrappedKeyInvalid: codes.CKR_WRAPPED_KEY_INVALID,
    p11.WrappedKeyLenRange: codes.CKR_WRAPPED_KEY_LEN_RANGE,
    p11.WrappingKeyHandleInvalid: codes.CKR_WRAPPING_KEY_HANDLE_INVALID,
    p11.WrappingKeySizeRange: codes.CKR_WRAPPING_KEY_SIZE_RANGE,
    p11.WrappingKeyTypeInconsistent: codes.CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
    # Raised by python-pkcs11 itself, never by a return value; the nearest code in meaning.
    # get_tokens() skips slots whose token is absent or unrecognised, so a member that lost
    # its token shows up as "no token with that label".
    p11.NoSuchToken: codes.CKR_TOKEN_NOT_PRESENT,
    p11.NoSuchKey: codes.CKR_KEY_HANDLE_INVALID,  # get_key(): the key to use is not there
    # The search the caller gave matched several: a bad argument, not a token fault.
    p11.MultipleTokensReturned: codes.CKR_ARGUMENTS_BAD,
    p11.MultipleObjectsReturned: codes.CKR_ARGUMENTS_BAD,
}

# Codes map_rv_to_error (and _cancel_operation) raise as a bare PKCS11Error with a message.
_CKR_OF_MESSAGE: tuple[tuple[str, int], ...] = (
    ("Buffer was too small", codes.CKR_BUFFER_TOO_SMALL),
    ("(already initialized)", codes.CKR_CRYPTOKI_ALREADY_INITIALIZED),
    ("(not initialized)", codes.CKR_CRYPTOKI_NOT_INITIALIZED),
    ("Parallel not supported", codes.CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    ("User type invalid", codes.CKR_USER_TYPE_INVALID),
    ("Failed to cancel operation", codes.CKR_OPERATION_CANCEL_FAILED),
)
_UNMAPPED = re.compile(r"Unmapped error code (0x[0-9a-fA-F]+)")  # vendor codes, e.g. Luna's


def _ckr_of_message(message: str) -> int | None:
    if match := _UNMAPPED.search(message):
        return int(match.group(1), 16)
    for text, code in _CKR_OF_MESSAGE:
        if text in message:
            return code
    return None


def ckr_of(exc: BaseException) -> int:
    """The CKR value behind a python-pkcs11 exception (or a CKRError).

    Anything else (a failed dlopen, a Python error) has no code of its own: GENERAL_ERROR.
    """
    if isinstance(exc, CKRError):
        return exc.ckr
    for cls in type(exc).__mro__:
        if cls in _CKR_OF_CLASS:
            return _CKR_OF_CLASS[cls]
    code = _ckr_of_message(str(exc)) if isinstance(exc, p11.PKCS11Error) else None
    return codes.CKR_GENERAL_ERROR if code is None else code


def translate(exc: BaseException, function: str) -> CKRError:
    """CKRError(code, function); python-pkcs11's own words stay as detail unless they only
    restate the code."""
    if isinstance(exc, CKRError):
        return exc
    message = str(exc)
    is_boilerplate = type(exc) is p11.PKCS11Error and _ckr_of_message(message) is not None
    return CKRError(ckr_of(exc), function, "" if is_boilerplate else message)


@contextmanager
def pkcs11_call(function: str) -> Iterator[None]:
    """Re-raise python-pkcs11 exceptions as CKRError(code, function), chained to the original.

    CKRError (for example from an inner pkcs11_call) and every other exception pass unchanged.
    """
    try:
        yield
    except p11.PKCS11Error as exc:
        raise translate(exc, function) from exc
