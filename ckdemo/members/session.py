"""A session on a physical slot: python-pkcs11's Session plus the calls it does not expose.

Objects are named by their integer handles above this module; the python-pkcs11 Object
wrappers stay in a per-session cache here.
"""

from __future__ import annotations

import datetime
import struct
from functools import cache
from typing import TYPE_CHECKING, Iterable, Iterator

from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.attributes import AttributeMapper

from .. import attribute_table
from ..codes import (
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_KEY_TYPE_INCONSISTENT,
    CKR_MECHANISM_INVALID,
    CKR_OBJECT_HANDLE_INVALID,
    CKRError,
)
from ..model import (
    CKA_CLASS,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_LABEL,
    KEY_TYPE_OF,
    KeySpec,
    MechanismParam,
    SessionInfo,
)
from ..slots import MemberSession
from . import keygen
from .params import to_pkcs11
from .torn import torn_key_objects

if TYPE_CHECKING:
    from .slot import PhysicalSlot

STREAM_BUFFER = 64 * 1024  # multi-part chunk size for file operations
SEARCH_ATTEMPTS = 3  # a search that met an object destroyed meanwhile is made again


@cache
def _mechanism(code: int) -> Mechanism:
    """python-pkcs11's Mechanism for a code (an enum call costs more than the cache look-up);
    one its table does not name (a vendor's, a newer one) cannot be passed by it at all."""
    try:
        return Mechanism(code)
    except ValueError:
        raise CKRError(
            CKR_MECHANISM_INVALID,
            "C_*Init",
            f"mechanism {code:#x} is not one python-pkcs11 0.10.1 can pass to the module",
        ) from None


_MAPPER = AttributeMapper()


def _pkcs11_template(template: dict[int, object], function: str) -> dict | None:
    """The template checked against the one table, as python-pkcs11 takes it; None when
    python-pkcs11 cannot pack a value (a type it has no packer for, an empty or early date, a
    nested template): its template packing fails half-way and frees memory it never allocated
    (a native crash: SIGSEGV, or free(): invalid pointer), so such a template goes the ctypes way."""
    converted = {}
    for code, value in attribute_table.check(template or {}, function).items():
        if isinstance(value, datetime.date) and value.year < 1000:
            return None  # python-pkcs11's strftime("%Y") would not give four digits
        try:
            key = Attribute(code)
            _MAPPER.pack_attribute(key, value)
        except (ValueError, TypeError, AttributeError, NotImplementedError, struct.error):
            return None  # the packer's own refusal: the ctypes path packs by the table instead
        converted[key] = value
    return converted


def _template(template: dict[int, object] | None, function: str) -> dict:
    """For calls only python-pkcs11 makes here (unwrap, derive): a template it cannot pack is
    refused in one line instead."""
    converted = _pkcs11_template(template or {}, function)
    if converted is None:
        raise CKRError(
            CKR_ATTRIBUTE_TYPE_INVALID,
            function,
            "ckdemo passes this template to the module through python-pkcs11, which "
            "cannot encode one of its attributes (vendor, nested or empty date)",
        )
    return converted


# a new label or CKA_ID leaves python-pkcs11's object as it was (it knows no capability by them):
# kept, so the next call on it does not list every object of the token to find it again
NAMES_ONLY = frozenset((0x3, 0x102))  # CKA_LABEL, CKA_ID
REAUTHENTICATED_ROOM = 1024  # a signature or plaintext of an RSA-8192 or EC key fits


class PhysicalSession(MemberSession):
    """Opened without a PIN (CKDemo logs in as a separate step), so closing it never logs out."""

    def __init__(self, slot: "PhysicalSlot", session, rw: bool) -> None:
        self.slot = slot
        self._session = session
        self.rw = rw
        self.handle: int = session.handle
        self._objects: dict[int, object] = {}

    @property
    def _module(self):
        return self.slot.module

    def _call(self, function: str, fn, *args, **kwargs):
        module = self.slot.module
        module.check_fault(self.slot.slot_id, function)
        return module.call(function, fn, *args, **kwargs)

    def _calling(self, function: str):
        self._module.check_fault(self.slot.slot_id, function)
        return self._module.calling(function)

    # session and login state
    def login(self, user_type: int, pin: str) -> None:
        self._call("C_Login", self._module.raw.login, self.handle, user_type, pin)

    def logout(self) -> None:
        self._call("C_Logout", self._module.raw.logout, self.handle)

    def close(self) -> None:
        self._objects.clear()
        self._call("C_CloseSession", self._session.close)

    def info(self) -> SessionInfo:
        return self._call("C_GetSessionInfo", self._module.raw.get_session_info, self.handle)

    def init_pin(self, pin: str) -> None:
        self._call("C_InitPIN", self._module.raw.init_pin, self.handle, pin)

    def set_pin(self, old_pin: str, new_pin: str) -> None:
        self._call("C_SetPIN", self._module.raw.set_pin, self.handle, old_pin, new_pin)

    def generate_random(self, length: int) -> bytes:
        return self._call("C_GenerateRandom", self._session.generate_random, length * 8)

    # objects
    def _remember(self, obj) -> int:
        self._objects[obj.handle] = obj
        return obj.handle

    def _object(self, handle: int, function: str = "C_GetAttributeValue"):
        """python-pkcs11's object for a handle, for the operations only it makes (sign, verify,
        encrypt, decrypt, derive): made when first needed, by a search of the objects of its
        class, CKA_ID and label (python-pkcs11 reads ten attributes of every object it lists and
        makes a class of its own for each: listing 10,000 keys stalled every thread)."""
        if handle not in self._objects:
            for template in self._searches(handle, function):
                for obj in self._listed({Attribute(code): value for code, value in template.items()}):
                    self._objects.setdefault(obj.handle, obj)
                if handle in self._objects:
                    break
        try:
            return self._objects[handle]
        except KeyError:
            raise self._unknown(handle, function) from None

    def _unknown(self, handle: int, function: str) -> CKRError:
        return CKRError(
            CKR_OBJECT_HANDLE_INVALID, function, f"no object with handle {handle} in session {self.handle}"
        )

    def _exists(self, handle: int, function: str) -> int:
        """The object's class, read by handle: CKR_OBJECT_HANDLE_INVALID (said as before) when
        this session cannot see it."""
        try:
            return self.get_attributes(handle, [CKA_CLASS])[CKA_CLASS]
        except CKRError as error:
            if error.ckr == CKR_OBJECT_HANDLE_INVALID:
                raise self._unknown(handle, function) from None
            raise  # a member failure, a session gone: said as such

    def _searches(self, handle: int, function: str) -> Iterator[dict]:
        """What python-pkcs11 lists to find the object: what has its class, CKA_ID and label
        when a search of those finds it (SoftHSM2 can fail a search that compares a private
        object's byte string, and python-pkcs11 then keeps its session's operation lock: the
        search is tried through ctypes first), else its class (numbers only), else everything."""
        try:
            name = self.get_attributes(handle, [CKA_CLASS, CKA_ID, CKA_LABEL])
        except CKRError as error:
            if error.ckr == CKR_OBJECT_HANDLE_INVALID:
                raise self._unknown(handle, function) from None
            raise  # a member failure, a session gone: said as such
        except ValueError:  # a label python-pkcs11 cannot decode (not UTF-8)
            name = {CKA_CLASS: self._exists(handle, function)}
        else:
            try:
                if handle in self.find_objects(name):
                    yield name
            except CKRError:
                pass
        yield {CKA_CLASS: name[CKA_CLASS]}
        yield {}

    def _operation(self, handle: int, method: str, function: str, calling: str):
        """The key's python-pkcs11 operation; it offers only what the key's CKA_SIGN, CKA_WRAP,
        ... allowed when it was read, so a missing one is the key's own refusal. A member failed
        on purpose fails it as `calling` (the call the application made), before the key is
        looked up."""
        self._module.check_fault(self.slot.slot_id, calling)
        operation = getattr(self._object(handle, function), method, None)
        if operation is None:
            raise CKRError(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                function,
                f"key {handle} does not allow {method.strip('_').replace('_', ' ')} "
                "(checked by ckdemo before the call)",
            )
        return operation

    def find_objects(self, template: dict[int, object]) -> list[int]:
        """Handles only, through ctypes: python-pkcs11 would make an object of each (ten
        attributes read, a class made), which a recovery comparing 10,000 keys paid in
        garbage-collector pauses of every thread of the process (docs/PERFORMANCE.md)."""
        attribute_table.check(template or {}, "C_FindObjectsInit")
        return self._call("C_FindObjectsInit", self._module.raw.find_objects, self.handle, template or {})

    def _listed(self, template: dict) -> list:
        """python-pkcs11's objects of a search. It reads each object's class as it lists them,
        so an object another application destroys meanwhile fails the whole search
        (CKR_OBJECT_HANDLE_INVALID): the search is made again, as a token's would not see it."""
        for attempt in range(SEARCH_ATTEMPTS):
            try:
                with self._calling("C_FindObjects"):
                    return list(self._session.get_objects(template))
            except CKRError as error:
                if error.ckr != CKR_OBJECT_HANDLE_INVALID or attempt == SEARCH_ATTEMPTS - 1:
                    raise
        return []

    def get_attributes(self, handle: int, attributes: list[int]) -> dict[int, object]:
        """The readable ones, decoded as python-pkcs11 decodes them; read through ctypes by
        handle (no python-pkcs11 object needed)."""
        keys = [Attribute(a) for a in attributes]  # ValueError: a type python-pkcs11 cannot name
        if not keys:
            return {}
        found = self._call(
            "C_GetAttributeValue", self._module.raw.attribute_values, self.handle, handle, keys
        )
        return {int(code): _MAPPER.unpack_attributes(Attribute(code), value) for code, value in found.items()}

    def create_object(self, template: dict[int, object]) -> int:
        attribute_table.check(template or {}, "C_CreateObject")
        return self._call("C_CreateObject", self._module.raw.create_object, self.handle, template or {})

    def destroy_object(self, handle: int) -> None:
        # by handle, without python-pkcs11's object: a torn object could not even be wrapped
        with self._calling("C_DestroyObject"):
            self._module.raw.destroy_object(self.handle, handle)
        self._objects.pop(handle, None)

    def torn_objects(self) -> list[int]:
        """Key objects a killed writer left behind (members/torn.py), found by raw calls."""
        raw = self._module.raw
        with self._calling("C_FindObjects"):
            return torn_key_objects(
                lambda template: raw.find_objects(self.handle, template),
                lambda handle, attribute: raw.attribute(self.handle, handle, attribute),
            )

    # keys
    def generate(self, spec: KeySpec) -> list[int]:
        """Generate a secret key ([handle]) or a key pair ([public, private]) with the templates
        keygen.py makes, as they are (python-pkcs11 would write its own defaults into them)."""
        mechanism, public, private = keygen.templates(spec)
        raw = self._module.raw
        if public is None:
            made = [self._call("C_GenerateKey", raw.generate_key, self.handle, mechanism, private)]
        else:
            made = list(
                self._call(
                    "C_GenerateKeyPair", raw.generate_key_pair, self.handle, mechanism, public, private
                )
            )
        return made

    # single-part crypto: python-pkcs11's Cython `_sign`/`_encrypt`/... straight (its public
    # methods only dispatch bytes to them), through module.call (no context managers): these
    # run once per signature of every application on the HA slot (docs/PERFORMANCE.md)
    def sign(
        self,
        handle: int,
        mechanism: int,
        data: bytes,
        param: MechanismParam = None,
        context_pin: str | None = None,
    ) -> bytes:
        if context_pin is not None:
            return self._reauthenticated("sign", handle, mechanism, param, data, context_pin)
        return self._call(
            "C_Sign",
            self._operation(handle, "_sign", "C_SignInit", "C_Sign"),
            bytes(data),
            mechanism=_mechanism(mechanism),
            mechanism_param=to_pkcs11(param),
        )

    def _reauthenticated(
        self, operation: str, handle: int, mechanism: int, param, data: bytes, pin: str
    ) -> bytes:
        """An operation on a CKA_ALWAYS_AUTHENTICATE key, with its context-specific login."""
        return self._call(
            f"C_{operation.title()}",
            self._module.raw.reauthenticated,
            self.handle,
            operation,
            handle,
            mechanism,
            param,
            bytes(data),
            pin,
            max(REAUTHENTICATED_ROOM, len(data)),
        )

    def verify(
        self, handle: int, mechanism: int, data: bytes, signature: bytes, param: MechanismParam = None
    ) -> None:
        """Returns when the signature is good; CKRError(CKR_SIGNATURE_INVALID) otherwise."""
        # python-pkcs11's verify() folds CKR_SIGNATURE_LEN_RANGE into False; its _verify()
        # raises the module's own answer, which is what the status line must show
        wanted = KEY_TYPE_OF.get(mechanism)
        if wanted is not None and self._key_type(handle) != wanted:  # SoftHSM2 would crash
            raise CKRError(
                CKR_KEY_TYPE_INCONSISTENT,
                "C_VerifyInit",
                f"mechanism {mechanism:#x} takes a key of type {wanted:#x} "
                "(checked by ckdemo: SoftHSM2 2.6.1 crashes on it)",
            )
        self._call(
            "C_Verify",
            self._operation(handle, "_verify", "C_VerifyInit", "C_Verify"),
            bytes(data),
            signature,
            mechanism=_mechanism(mechanism),
            mechanism_param=to_pkcs11(param),
        )

    def _key_type(self, handle: int) -> int | None:
        """python-pkcs11 reads it once per key object (cached_property); the read is a module
        call like any other: its failure is a CKRError (a member gone, a session it lost)."""
        with self._calling("C_VerifyInit"):
            return getattr(self._object(handle, "C_VerifyInit"), "key_type", None)

    def encrypt(self, handle: int, mechanism: int, data: bytes, param: MechanismParam = None) -> bytes:
        return self._call(
            "C_Encrypt",
            self._operation(handle, "_encrypt", "C_EncryptInit", "C_Encrypt"),
            bytes(data),
            mechanism=_mechanism(mechanism),
            mechanism_param=to_pkcs11(param),
        )

    def decrypt(
        self,
        handle: int,
        mechanism: int,
        data: bytes,
        param: MechanismParam = None,
        context_pin: str | None = None,
    ) -> bytes:
        if context_pin is not None:
            return self._reauthenticated("decrypt", handle, mechanism, param, data, context_pin)
        return self._call(
            "C_Decrypt",
            self._operation(handle, "_decrypt", "C_DecryptInit", "C_Decrypt"),
            bytes(data),
            mechanism=_mechanism(mechanism),
            mechanism_param=to_pkcs11(param),
        )

    def encrypt_stream(
        self, handle: int, mechanism: int, chunks: Iterable[bytes], param: MechanismParam = None
    ) -> Iterator[bytes]:
        """Multi-part C_EncryptUpdate/C_EncryptFinal over chunks; constant memory."""
        return self._stream(
            "C_EncryptUpdate",
            self._operation(handle, "encrypt", "C_EncryptInit", "C_EncryptUpdate"),
            mechanism,
            chunks,
            param,
        )

    def decrypt_stream(
        self, handle: int, mechanism: int, chunks: Iterable[bytes], param: MechanismParam = None
    ) -> Iterator[bytes]:
        return self._stream(
            "C_DecryptUpdate",
            self._operation(handle, "decrypt", "C_DecryptInit", "C_DecryptUpdate"),
            mechanism,
            chunks,
            param,
        )

    def _stream(self, function, operation, mechanism, chunks, param) -> Iterator[bytes]:
        with self._calling(function):
            output = operation(
                iter(chunks),
                mechanism=_mechanism(mechanism),
                mechanism_param=to_pkcs11(param),
                buffer_size=STREAM_BUFFER,
            )
        try:
            while True:
                with self._calling(function):
                    try:
                        piece = next(output)
                    except StopIteration:
                        return
                if piece:
                    yield piece
        finally:
            output.close()  # an abandoned operation is finalised, not left active on the session

    def digest(self, mechanism: int, data: bytes) -> bytes:
        with self._calling("C_Digest"):
            return self._session.digest(data, mechanism=_mechanism(mechanism))

    def digest_stream(self, mechanism: int, chunks: Iterable[bytes]) -> bytes:
        with self._calling("C_DigestUpdate"):
            return self._session.digest(iter(chunks), mechanism=_mechanism(mechanism))

    def digest_key(self, mechanism: int, handle: int) -> bytes:
        return self.digest_parts(mechanism, [handle])

    def digest_parts(self, mechanism: int, parts: list[bytes | int]) -> bytes:
        """Through ctypes: python-pkcs11 digests keys only (a data object was a TypeError), and
        leaves a digest running when the token refuses a key (raw.digest_parts ends it)."""
        return self._call("C_DigestKey", self._module.raw.digest_parts, self.handle, mechanism, list(parts))

    def seed_random(self, seed: bytes) -> None:
        self._call("C_SeedRandom", self._session.seed_random, seed)

    def copy_object(self, handle: int, template: dict[int, object]) -> int:
        self._exists(handle, "C_CopyObject")
        attribute_table.check(template or {}, "C_CopyObject")
        return self._call("C_CopyObject", self._module.raw.copy_object, self.handle, handle, template or {})

    def set_attributes(self, handle: int, template: dict[int, object]) -> None:
        """One C_SetAttributeValue with the whole template, as the application sent it: the
        token applies all of it or none (one attribute at a time could stop half-way)."""
        self._exists(handle, "C_SetAttributeValue")
        attribute_table.check(template, "C_SetAttributeValue")
        self._call("C_SetAttributeValue", self._module.raw.set_attribute_value, self.handle, handle, template)
        if not set(template) <= NAMES_ONLY:
            self._objects.pop(handle, None)  # python-pkcs11 knew its capabilities as they were

    def read_attribute(self, handle: int, attribute: int):
        """One attribute; CKRError(CKR_ATTRIBUTE_SENSITIVE / _TYPE_INVALID) when unreadable,
        None for one python-pkcs11 cannot name or decode (e.g. an empty CKA_START_DATE)."""
        try:
            key = Attribute(attribute)
        except ValueError:
            self.get_attributes(handle, [CKA_CLASS])  # the handle is checked all the same
            return None
        found = self._call(
            "C_GetAttributeValue", self._module.raw.attribute_values, self.handle, handle, [key]
        )
        try:
            value = _MAPPER.unpack_attributes(key, found[key])
        except ValueError:
            return None
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def object_size(self, handle: int) -> int:
        self._exists(handle, "C_GetObjectSize")
        return self._call("C_GetObjectSize", self._module.raw.get_object_size, self.handle, handle)

    def derive_key(
        self,
        base: int,
        mechanism: int,
        param: MechanismParam,
        key_type: int,
        length: int,
        template: dict[int, object],
    ) -> int:
        derive = self._operation(base, "derive_key", "C_DeriveKey", "C_DeriveKey")
        with self._calling("C_DeriveKey"):
            derived = derive(
                KeyType(key_type),
                length * 8,
                mechanism=_mechanism(mechanism),
                mechanism_param=to_pkcs11(param),
                template=_template(template, "C_DeriveKey"),
            )
        return self._remember(derived)

    def wrap_key(self, wrapping: int, key: int, mechanism: int, param: MechanismParam = None) -> bytes:
        """Through ctypes, so that the token answers in its own order: python-pkcs11 refuses a
        wrapping key without CKA_WRAP (CKR_KEY_FUNCTION_NOT_PERMITTED) before the token says its
        type does not fit the mechanism, and a data object to wrap with its own CKR_ARGUMENTS_BAD.
        Handles this session does not know are refused as before (the menu names them)."""
        self._exists(wrapping, "C_WrapKey")
        self._exists(key, "C_WrapKey")
        return self._call(
            "C_WrapKey", self._module.raw.wrap_key, self.handle, mechanism, param, wrapping, key
        )

    def unwrap_key(
        self,
        unwrapping: int,
        object_class: int,
        key_type: int,
        data: bytes,
        mechanism: int,
        template: dict[int, object],
        param: MechanismParam = None,
    ) -> int:
        """Through ctypes with the template as it is, in its order: python-pkcs11 merges it into
        its own default unwrap template (attributes a private key must not have, which SoftHSM2
        refuses: CKR_ATTRIBUTE_TYPE_INVALID) and reorders it, and SoftHSM2's answer depends on the
        order (raw.unwrap_key)."""
        self._exists(unwrapping, "C_UnwrapKey")  # a handle this session knows
        full = {CKA_CLASS: object_class, CKA_KEY_TYPE: key_type, **template}
        made = self._call(
            "C_UnwrapKey",
            self._module.raw.unwrap_key,
            self.handle,
            mechanism,
            param,
            unwrapping,
            bytes(data),
            full,
        )
        return made

    def pbe_generate(self, password: str, salt: bytes, iterations: int, template: dict[int, object]) -> int:
        """C_GenerateKey with CKM_PKCS5_PBKD2 (HMAC-SHA256 PRF), through ctypes (members/pbe.py)."""
        from . import pbe

        return self._call(
            "C_GenerateKey",
            pbe.generate_key,
            self._module.raw,
            self.handle,
            password,
            salt,
            iterations,
            template,
        )

    def probe_ec_curve(self, ec_params: bytes) -> None:
        """Generate a public session key pair on these DER ECParameters and destroy it again:
        returns when the module accepts the curve, CKRError with its answer otherwise."""
        public = {
            Attribute.EC_PARAMS: ec_params,
            Attribute.TOKEN: False,
            Attribute.PRIVATE: False,
            Attribute.VERIFY: True,
        }
        private = {Attribute.TOKEN: False, Attribute.PRIVATE: False, Attribute.SIGN: True}
        with self._calling("C_GenerateKeyPair"):
            pair = self._session.generate_keypair(
                KeyType.EC, public_template=public, private_template=private
            )
        for key in pair:
            with self._calling("C_DestroyObject"):
                key.destroy()

    def __repr__(self) -> str:
        return f"PhysicalSession({self.slot!r}, handle={self.handle})"
