"""A session on a remote member (rpcslot.RemoteSlot), call by call over p11-kit RPC.

The session belongs to the connection it was opened on: after a reconnect it is gone with it
(every call answers CKR_DEVICE_ERROR), never confused with a new session of the same number.
Output buffers are offered at a size that fits the usual answer, so a call is one round trip;
a CKR_BUFFER_TOO_SMALL answer (the operation stays active) is asked again at the size it named.
Key templates for generation are python-pkcs11's defaults, so a key made over the socket has the
attributes the local backend gives it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

from ..codes import (
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_BUFFER_TOO_SMALL,
    CKR_FUNCTION_NOT_SUPPORTED,
    CKR_OK,
    CKRError,
    NotCarried,
)
from ..model import (
    CKA_CLASS,
    CKA_EC_PARAMS,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_PRIVATE,
    CKA_SENSITIVE,
    CKA_SIGN,
    CKA_TOKEN,
    CKA_VALUE_LEN,
    CKA_VERIFY,
    CKK_GENERIC_SECRET,
    CKM_EC_KEY_PAIR_GEN,
    CKO_SECRET_KEY,
    CKU_CONTEXT_SPECIFIC,
    KeySpec,
    MechanismParam,
    SessionInfo,
)
from ..rpc.attributes import ValueType, value_type
from ..rpc.structs import AttributeSize, BufferSize
from ..slots import MemberSession
from . import keygen, rpcvalues
from .torn import torn_key_objects

if TYPE_CHECKING:
    from .rpcclient import Connection
    from .rpcslot import RemoteSlot

CKM_PKCS5_PBKD2 = 0x3B0
FIND_BATCH = 256
SIGNATURE_ROOM = 1024  # RSA-8192
DIGEST_ROOM = 64
WRAP_ROOM = 4096  # an RSA-4096 private key wrapped with AES-KWP: about 2,400 bytes
BLOCK_ROOM = 64  # what a block cipher may add to its input (padding, held-back blocks)
ATTRIBUTE_ROOM = {
    ValueType.BYTE: 1,
    ValueType.ULONG: 8,
    ValueType.DATE: 8,
    ValueType.MECHANISM_TYPE_ARRAY: 8 * 64,
}
VALUE_ROOM = 2048  # a byte-array attribute (modulus, EC point, certificate ...)
STREAM_BUFFER = 64 * 1024


def _end_quietly(call) -> None:
    """Ends an operation a refused context-specific login left open (the module ends it on the
    next call, which it refuses)."""
    try:
        call()
    except CKRError:
        pass


class RemoteSession(MemberSession):
    def __init__(self, slot: "RemoteSlot", connection: "Connection", handle: int, rw: bool) -> None:
        self.slot = slot
        self._connection = connection
        self.handle = handle
        self.rw = rw
        self._call = connection.call  # (function, *args) -> the reply's fields

    def _output(self, function: str, room: int, *args) -> bytes:
        """A call whose last argument is the output buffer offered; asked again at the size the
        module names when it was too small."""
        result = self._call(function, *args, max(room, 1))[0]
        if isinstance(result, BufferSize):
            if result.length == 0:
                return b""
            result = self._call(function, *args, result.length)[0]
            if isinstance(result, BufferSize):
                raise CKRError(CKR_BUFFER_TOO_SMALL, function)
        return result

    def _mechanism(self, mechanism: int, param: MechanismParam, function: str):
        return rpcvalues.mechanism(mechanism, param, function)

    def _template(self, template: dict[int, object] | None, function: str):
        try:
            return rpcvalues.template(template, function)
        except (TypeError, ValueError) as exc:
            raise CKRError(CKR_ATTRIBUTE_VALUE_INVALID, function, str(exc)) from None

    # ---- session and login state ----------------------------------------------------------------
    def login(self, user_type: int, pin: str) -> None:
        self._call("C_Login", self.handle, user_type, pin.encode("utf-8"))

    def logout(self) -> None:
        self._call("C_Logout", self.handle)

    def close(self) -> None:
        self._call("C_CloseSession", self.handle)

    def info(self) -> SessionInfo:
        return self.slot.session_info(self._connection, self.handle)

    def init_pin(self, pin: str) -> None:
        self._call("C_InitPIN", self.handle, pin.encode("utf-8"))

    def set_pin(self, old_pin: str, new_pin: str) -> None:
        self._call("C_SetPIN", self.handle, old_pin.encode("utf-8"), new_pin.encode("utf-8"))

    def generate_random(self, length: int) -> bytes:
        return self._output("C_GenerateRandom", length, self.handle)

    def seed_random(self, seed: bytes) -> None:
        self._call("C_SeedRandom", self.handle, bytes(seed))

    # ---- objects ---------------------------------------------------------------------------------
    def find_objects(self, template: dict[int, object]) -> list[int]:
        wire = self._template(template, "C_FindObjectsInit")
        found: list[int] = []
        with self._connection.exclusive("C_FindObjectsInit"):
            self._call("C_FindObjectsInit", self.handle, wire)
            try:
                while True:
                    batch = self._call("C_FindObjects", self.handle, FIND_BATCH)[0]
                    found.extend(batch)
                    if len(batch) < FIND_BATCH:
                        break
            finally:
                self._call("C_FindObjectsFinal", self.handle)
        return found

    def _read(self, handle: int, attributes: list[int]) -> tuple[tuple, int]:
        """C_GetAttributeValue with room for the usual values; once more at the exact sizes
        when one did not fit."""
        wanted = [AttributeSize(a, ATTRIBUTE_ROOM.get(value_type(a), VALUE_ROOM)) for a in attributes]
        values, ckr = self._call("C_GetAttributeValue", self.handle, handle, wanted)
        if ckr == CKR_BUFFER_TOO_SMALL:
            sizes, _ = self._call(
                "C_GetAttributeValue", self.handle, handle, [AttributeSize(a, 0) for a in attributes]
            )
            wanted = [AttributeSize(s.type, max(s.length, 0)) for s in sizes]
            values, ckr = self._call("C_GetAttributeValue", self.handle, handle, wanted)
        return values, ckr

    def get_attributes(self, handle: int, attributes: list[int]) -> dict[int, object]:
        """The readable ones (as python-pkcs11 answers: an error only when none is)."""
        readable = [a for a in attributes if value_type(a) is not ValueType.ATTRIBUTE_ARRAY]
        if not readable:
            raise CKRError(
                CKR_ATTRIBUTE_TYPE_INVALID,
                "C_GetAttributeValue",
                "templates cannot be read over p11-kit RPC 0.24",
            )
        values, ckr = self._read(handle, readable)
        found = {wire.type: rpcvalues.value(wire) for wire in values if not rpcvalues.unavailable(wire)}
        if not found and ckr != CKR_OK:
            raise CKRError(ckr, "C_GetAttributeValue")
        return found

    def read_attribute(self, handle: int, attribute: int):
        found = self.get_attributes(handle, [attribute])
        if attribute not in found:
            raise CKRError(CKR_ATTRIBUTE_TYPE_INVALID, "C_GetAttributeValue")
        return found[attribute]

    def create_object(self, template: dict[int, object]) -> int:
        if any(isinstance(v, dict) for v in template.values()):  # 0.24.1: CKR_DEVICE_ERROR
            raise CKRError(
                CKR_FUNCTION_NOT_SUPPORTED,
                "C_CreateObject",
                "a remote member's p11-kit 0.24.1 transport cannot carry a template "
                "attribute (CKA_UNWRAP_TEMPLATE): such objects are made on the "
                "member's own host (`ckdemo init` does it for its members)",
            )
        return self._call("C_CreateObject", self.handle, self._template(template, "C_CreateObject"))[0]

    def torn_objects(self) -> list[int]:
        """Key objects a killed writer left behind on the member (members/torn.py)."""

        def read(handle: int, attribute: int) -> bytes | None:
            try:
                value = self.get_attributes(handle, [attribute]).get(attribute)
            except CKRError:
                return None
            if value is None or isinstance(value, (bytes, bytearray)):
                return value
            if isinstance(value, bool):
                return b"\x01" if value else b"\x00"
            if isinstance(value, int):
                return value.to_bytes(8, "little")
            return str(value).encode()

        return torn_key_objects(self.find_objects, read)

    def destroy_object(self, handle: int) -> None:
        self._call("C_DestroyObject", self.handle, handle)

    def copy_object(self, handle: int, template: dict[int, object]) -> int:
        return self._call("C_CopyObject", self.handle, handle, self._template(template, "C_CopyObject"))[0]

    def set_attributes(self, handle: int, template: dict[int, object]) -> None:
        self._call(
            "C_SetAttributeValue", self.handle, handle, self._template(template, "C_SetAttributeValue")
        )

    def object_size(self, handle: int) -> int:
        return self._call("C_GetObjectSize", self.handle, handle)[0]

    # ---- keys --------------------------------------------------------------------------------------
    def generate(self, spec: KeySpec) -> list[int]:
        """A secret key ([handle]) or a key pair ([public, private]) (keygen.py says with what)."""
        mechanism, public, private = keygen.templates(spec)
        wire = rpcvalues.mechanism(mechanism, None, "")
        timed_as = f"{spec.kind}-{spec.size}"  # a member's usual time for this kind and size
        if public is None:
            return [
                self._call(
                    "C_GenerateKey",
                    self.handle,
                    wire,
                    self._template(private, "C_GenerateKey"),
                    timed_as=timed_as,
                )[0]
            ]
        pair = self._call(
            "C_GenerateKeyPair",
            self.handle,
            wire,
            self._template(public, "C_GenerateKeyPair"),
            self._template(private, "C_GenerateKeyPair"),
            timed_as=timed_as,
        )
        return [pair[0], pair[1]]

    def wrap_key(self, wrapping: int, key: int, mechanism: int, param: MechanismParam = None) -> bytes:
        wire = self._mechanism(mechanism, param, "C_WrapKey")
        return self._output("C_WrapKey", WRAP_ROOM, self.handle, wire, wrapping, key)

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
        wire = self._mechanism(mechanism, param, "C_UnwrapKey")
        full = {CKA_CLASS: object_class, CKA_KEY_TYPE: key_type, **template}
        return self._call(
            "C_UnwrapKey", self.handle, wire, unwrapping, bytes(data), self._template(full, "C_UnwrapKey")
        )[0]

    def derive_key(
        self,
        base: int,
        mechanism: int,
        param: MechanismParam,
        key_type: int,
        length: int,
        template: dict[int, object],
    ) -> int:
        wire = self._mechanism(mechanism, param, "C_DeriveKey")
        full = {
            CKA_CLASS: CKO_SECRET_KEY,
            CKA_KEY_TYPE: key_type,
            CKA_ID: b"",
            CKA_LABEL: "",
            CKA_PRIVATE: True,
            CKA_SENSITIVE: True,
            **keygen.SECRET_CAPABILITIES.get(key_type, keygen.SECRET_CAPABILITIES[CKK_GENERIC_SECRET]),
            CKA_TOKEN: False,
            **({CKA_VALUE_LEN: length} if length else {}),
            **template,
        }
        return self._call("C_DeriveKey", self.handle, wire, base, self._template(full, "C_DeriveKey"))[0]

    def pbe_generate(self, password: str, salt: bytes, iterations: int, template: dict[int, object]) -> int:
        raise NotCarried("C_GenerateKey", rpcvalues.TRANSPORT_LIMIT)

    def probe_ec_curve(self, ec_params: bytes) -> None:
        public = {CKA_EC_PARAMS: ec_params, CKA_TOKEN: False, CKA_PRIVATE: False, CKA_VERIFY: True}
        private = {CKA_TOKEN: False, CKA_PRIVATE: False, CKA_SIGN: True}
        pair = self._call(
            "C_GenerateKeyPair",
            self.handle,
            rpcvalues.mechanism(CKM_EC_KEY_PAIR_GEN, None, ""),
            self._template(public, "C_GenerateKeyPair"),
            self._template(private, "C_GenerateKeyPair"),
        )
        for key in pair:
            self._call("C_DestroyObject", self.handle, key)

    # ---- single-part cryptography: init and operation with nothing in between --------------------
    def _single(
        self,
        init: str,
        function: str,
        key: int | None,
        mechanism: int,
        param: MechanismParam,
        room: int | None,
        *data,
        context_pin: str | None = None,
    ):
        wire = self._mechanism(mechanism, param, init)
        with self._connection.exclusive(init):
            if key is None:
                self._call(init, self.handle, wire)
            else:
                self._call(init, self.handle, wire, key)
            if context_pin is not None:  # a CKA_ALWAYS_AUTHENTICATE key: its login, after Init
                try:
                    self._call("C_Login", self.handle, CKU_CONTEXT_SPECIFIC, context_pin.encode("utf-8"))
                except CKRError:
                    _end_quietly(lambda: self._call(function, self.handle, *data, 0))
                    raise
            if room is None:
                return self._call(function, self.handle, *data)
            return self._output(function, room, self.handle, *data)

    def sign(
        self,
        handle: int,
        mechanism: int,
        data: bytes,
        param: MechanismParam = None,
        context_pin: str | None = None,
    ) -> bytes:
        return self._single(
            "C_SignInit",
            "C_Sign",
            handle,
            mechanism,
            param,
            SIGNATURE_ROOM,
            bytes(data),
            context_pin=context_pin,
        )

    def verify(
        self, handle: int, mechanism: int, data: bytes, signature: bytes, param: MechanismParam = None
    ) -> None:
        self._single(
            "C_VerifyInit", "C_Verify", handle, mechanism, param, None, bytes(data), bytes(signature)
        )

    def encrypt(self, handle: int, mechanism: int, data: bytes, param: MechanismParam = None) -> bytes:
        return self._single(
            "C_EncryptInit",
            "C_Encrypt",
            handle,
            mechanism,
            param,
            len(data) + BLOCK_ROOM + SIGNATURE_ROOM,
            bytes(data),
        )

    def decrypt(
        self,
        handle: int,
        mechanism: int,
        data: bytes,
        param: MechanismParam = None,
        context_pin: str | None = None,
    ) -> bytes:
        return self._single(
            "C_DecryptInit",
            "C_Decrypt",
            handle,
            mechanism,
            param,
            len(data) + BLOCK_ROOM,
            bytes(data),
            context_pin=context_pin,
        )

    def digest(self, mechanism: int, data: bytes) -> bytes:
        return self._single("C_DigestInit", "C_Digest", None, mechanism, None, DIGEST_ROOM, bytes(data))

    def digest_key(self, mechanism: int, handle: int) -> bytes:
        return self.digest_parts(mechanism, [handle])  # a refused key ends the digest there too

    def digest_parts(self, mechanism: int, parts: list[bytes | int]) -> bytes:
        wire = self._mechanism(mechanism, None, "C_DigestInit")
        with self._connection.exclusive("C_DigestInit"):
            self._call("C_DigestInit", self.handle, wire)
            finished = False
            try:
                for part in parts:
                    if isinstance(part, (bytes, bytearray)):
                        if part:
                            self._call("C_DigestUpdate", self.handle, bytes(part))
                    else:
                        self._call("C_DigestKey", self.handle, part)
                finished = True
                return self._output("C_DigestFinal", DIGEST_ROOM, self.handle)
            finally:
                if not finished:
                    self._abandon("C_DigestFinal", DIGEST_ROOM)

    def digest_stream(self, mechanism: int, chunks: Iterable[bytes]) -> bytes:
        wire = self._mechanism(mechanism, None, "C_DigestInit")
        self._call("C_DigestInit", self.handle, wire)
        finished = False
        try:
            for chunk in chunks:
                if chunk:
                    self._call("C_DigestUpdate", self.handle, bytes(chunk))
            finished = True
            return self._output("C_DigestFinal", DIGEST_ROOM, self.handle)
        finally:
            if not finished:
                self._abandon("C_DigestFinal", DIGEST_ROOM)

    # ---- multi-part encryption for files ---------------------------------------------------------
    def _stream(
        self,
        init: str,
        update: str,
        final: str,
        handle: int,
        mechanism: int,
        chunks: Iterable[bytes],
        param: MechanismParam,
    ) -> Iterator[bytes]:
        wire = self._mechanism(mechanism, param, init)
        self._call(init, self.handle, wire, handle)
        finished = False
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                piece = self._output(update, len(chunk) + BLOCK_ROOM, self.handle, bytes(chunk))
                if piece:
                    yield piece
            finished = True
            last = self._output(final, BLOCK_ROOM, self.handle)
            if last:
                yield last
        finally:
            if not finished:  # an abandoned operation is finalised, not left active on the session
                self._abandon(final, BLOCK_ROOM)

    def _abandon(self, final: str, room: int) -> None:
        try:
            self._output(final, room, self.handle)
        except CKRError:
            pass  # ended either way: a failed final terminates the operation too

    def encrypt_stream(
        self, handle: int, mechanism: int, chunks: Iterable[bytes], param: MechanismParam = None
    ) -> Iterator[bytes]:
        return self._stream(
            "C_EncryptInit", "C_EncryptUpdate", "C_EncryptFinal", handle, mechanism, chunks, param
        )

    def decrypt_stream(
        self, handle: int, mechanism: int, chunks: Iterable[bytes], param: MechanismParam = None
    ) -> Iterator[bytes]:
        return self._stream(
            "C_DecryptInit", "C_DecryptUpdate", "C_DecryptFinal", handle, mechanism, chunks, param
        )

    def __repr__(self) -> str:
        return f"RemoteSession({self.slot!r}, handle={self.handle})"
