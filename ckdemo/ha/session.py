"""A virtual session on the HA slot: virtual session and object handles over member sessions."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..codes import (
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_KEY_INDIGESTIBLE,
    CKR_OBJECT_HANDLE_INVALID,
    CKR_SESSION_HANDLE_INVALID,
    CKR_USER_NOT_LOGGED_IN,
    CKRError,
)
from ..model import (
    CKA_ALWAYS_AUTHENTICATE,
    CKA_CLASS,
    CKA_DERIVE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_ENCRYPT,
    CKA_MODULUS,
    CKA_PRIVATE,
    CKA_PUBLIC_EXPONENT,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_EXTRACTABLE,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_MODIFIABLE,
    CKA_NEVER_EXTRACTABLE,
    CKA_SENSITIVE,
    CKA_TOKEN,
    CKA_VALUE,
    CKA_VALUE_LEN,
    CKA_WRAP_WITH_TRUSTED,
    CKO_DATA,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
    CKU_SO,
    KeySpec,
    MechanismParam,
    SessionInfo,
)
from ..slots import Session, fan_out
from . import handles, replication
from .failover import MemberFailed, ObjectMissing
from .marks import is_mark
from .member import HAMember
from .vault import FACTS, Kept

CKF_RW_SESSION, CKF_SERIAL_SESSION = 0x2, 0x4
RO_PUBLIC, RO_USER, RW_PUBLIC, RW_USER, RW_SO = range(5)  # CKS_* session states
# a record may answer them (vault.py); CKA_LABEL: an object made alike another (alike_label)
SEARCHED_BY_RECORD = frozenset(FACTS) | {CKA_SENSITIVE, CKA_LABEL}
CKA_APPLICATION, CKA_OBJECT_ID = 0x10, 0x12
# what a copy made anew takes over from an original that is not modifiable (_copy_anew): all of
# a data object and of a public key (the key's facts come from its record)
COPIED_ANEW = {
    CKO_DATA: (
        CKA_CLASS,
        CKA_TOKEN,
        CKA_PRIVATE,
        CKA_MODIFIABLE,
        CKA_LABEL,
        CKA_APPLICATION,
        CKA_OBJECT_ID,
        CKA_VALUE,
    ),
    CKO_PUBLIC_KEY: (
        CKA_CLASS,
        CKA_KEY_TYPE,
        CKA_TOKEN,
        CKA_PRIVATE,
        CKA_MODIFIABLE,
        CKA_LABEL,
        CKA_ID,
        CKA_ENCRYPT,
        CKA_VERIFY,
        CKA_WRAP,
        CKA_DERIVE,
        CKA_MODULUS,
        CKA_PUBLIC_EXPONENT,
        CKA_EC_PARAMS,
        CKA_EC_POINT,
    ),
}
# attribute changes a token takes one way only: a refused template cannot put them back
ONE_WAY = {CKA_SENSITIVE: True, CKA_EXTRACTABLE: False, CKA_WRAP_WITH_TRUSTED: True}
MIN_DIGESTIBLE_BYTES = 16  # a sensitive key's digest is only as secret as 128 bits of key


@dataclass
class VirtualObject:
    handle: int
    key: tuple  # (class, CKA_ID, label): how members are searched, never by member handle
    # member serial -> (member generation, member handle)
    on_member: dict[str, tuple[int, int]] = field(default_factory=dict)
    session_object: bool = False  # CKA_TOKEN false: destroyed when its virtual session closes


def _lost_with_every_member(cls):
    """Every call but close of a session opened before the group lost every member answers
    CKR_SESSION_HANDLE_INVALID, as a Luna HA slot's sessions do (HAGroup.lose_everything)."""
    for name, function in list(vars(cls).items()):
        if name.startswith("_") or name == "close" or not callable(function):
            continue
        setattr(cls, name, _checked(function))
    return cls


def _checked(function):
    @functools.wraps(function)
    def call(self, *args, **kwargs):
        if self.epoch != self.group.epoch:
            raise CKRError(
                CKR_SESSION_HANDLE_INVALID,
                "HA",
                f"session {self.handle} was lost with every member of the HA group: "
                "finalize, initialize and log in again",
            )
        return function(self, *args, **kwargs)

    return call


@_lost_with_every_member
class VirtualSession(Session):
    def __init__(self, group, rw: bool) -> None:
        self.group = group
        self.epoch = group.epoch
        self.handle = handles.allocate()  # process-wide: PKCS#11 handles are unique per application
        self.rw = rw
        self.failover = group.failover  # runs every call on the members (failover.py)
        self.objects: dict[int, VirtualObject] = {}
        self._by_key: dict[tuple, VirtualObject] = {}

    # ---- session and login -------------------------------------------------------------------
    def login(self, user_type: int, pin: str) -> None:
        self.group.login(user_type, pin)

    def logout(self) -> None:
        self.group.logout()

    def close(self) -> None:
        """Session objects follow the session: they go from every member with it."""
        self.group.before_call()
        for obj in [o for o in self.objects.values() if o.session_object]:
            try:
                self.destroy_object(obj.handle)
            except CKRError:
                pass  # gone with a failed member already; the close itself must succeed
        self.group.sessions.pop(self.handle, None)
        self.objects.clear()

    def info(self) -> SessionInfo:
        self.group.before_call()
        creds = self.group.credentials
        if creds is None:
            state = RW_PUBLIC if self.rw else RO_PUBLIC
        elif creds[0] == CKU_SO:
            state = RW_SO
        else:
            state = RW_USER if self.rw else RO_USER
        flags = CKF_SERIAL_SESSION | (CKF_RW_SESSION if self.rw else 0)
        names = (("CKF_RW_SESSION",) if self.rw else ()) + ("CKF_SERIAL_SESSION",)
        return SessionInfo(self.handle, self.group.slot_id, state, flags, names, 0)

    def init_pin(self, pin: str) -> None:
        self._everywhere("C_InitPIN", lambda s, m: s.init_pin(pin))
        self.group.pin_unlocked()  # as on a token: a new user PIN is not locked

    def set_pin(self, old_pin: str, new_pin: str) -> None:
        self._everywhere("C_SetPIN", lambda s, m: s.set_pin(old_pin, new_pin))
        if self.group.credentials:
            self.group.credentials = (self.group.credentials[0], new_pin)

    # ---- load-balanced single-part calls ------------------------------------------------------
    def generate_random(self, length: int) -> bytes:
        return self.failover.one("C_GenerateRandom", lambda s, m: s.generate_random(length))

    def sign(
        self,
        handle: int,
        mechanism: int,
        data: bytes,
        param: MechanismParam = None,
        context_pin: str | None = None,
    ) -> bytes:
        obj = self._object(handle, "C_Sign")
        if obj.key[0] == CKO_PRIVATE_KEY and self.group.reauthenticated.get(obj.key) is not False:
            return self.failover.one(
                "C_Sign",
                lambda s, m: self._reauthenticated(s, m, obj).sign(
                    self._on(m, obj), mechanism, data, param, **self._context(obj, context_pin)
                ),
                mechanism=mechanism,
            )
        return self.failover.one(
            "C_Sign", lambda s, m: s.sign(self._on(m, obj), mechanism, data, param), mechanism=mechanism
        )

    def verify(
        self, handle: int, mechanism: int, data: bytes, signature: bytes, param: MechanismParam = None
    ) -> None:
        obj = self._object(handle, "C_Verify")
        self.failover.one(
            "C_Verify",
            lambda s, m: s.verify(self._on(m, obj), mechanism, data, signature, param),
            mechanism=mechanism,
        )

    def encrypt(self, handle: int, mechanism: int, data: bytes, param: MechanismParam = None) -> bytes:
        obj = self._object(handle, "C_Encrypt")
        return self.failover.one(
            "C_Encrypt", lambda s, m: s.encrypt(self._on(m, obj), mechanism, data, param), mechanism=mechanism
        )

    def decrypt(
        self,
        handle: int,
        mechanism: int,
        data: bytes,
        param: MechanismParam = None,
        context_pin: str | None = None,
    ) -> bytes:
        obj = self._object(handle, "C_Decrypt")
        if obj.key[0] == CKO_PRIVATE_KEY and self.group.reauthenticated.get(obj.key) is not False:
            return self.failover.one(
                "C_Decrypt",
                lambda s, m: self._reauthenticated(s, m, obj).decrypt(
                    self._on(m, obj), mechanism, data, param, **self._context(obj, context_pin)
                ),
                mechanism=mechanism,
            )
        return self.failover.one(
            "C_Decrypt", lambda s, m: s.decrypt(self._on(m, obj), mechanism, data, param), mechanism=mechanism
        )

    def _reauthenticated(self, session, member: HAMember, obj: VirtualObject):
        """The member session, once it is known whether each use of the key asks for a
        context-specific login (read on the serving member, in the same call, once a key)."""
        if self.group.reauthenticated.get(obj.key) is None:
            try:
                found = session.get_attributes(self._on(member, obj), [CKA_ALWAYS_AUTHENTICATE])
            except CKRError as error:
                if self.group.is_member_failure(error):
                    raise
                found = {}  # not readable: the operation's own answer says what is wrong
            self.group.reauthenticated[obj.key] = bool(found.get(CKA_ALWAYS_AUTHENTICATE))
        return session

    def _context(self, obj: VirtualObject, given: str | None) -> dict[str, str | None]:
        """The context-specific login of a CKA_ALWAYS_AUTHENTICATE key's operation on the member:
        with the PIN the application gave (a server checked it), else the HA login's own (the
        menu has no such step)."""
        if not self.group.reauthenticated.get(obj.key):
            return {}
        if given is None:
            credentials = self.group.credentials
            given = credentials[1] if credentials and credentials[0] != CKU_SO else None
        return {"context_pin": given}

    def digest(self, mechanism: int, data: bytes) -> bytes:
        return self.failover.one("C_Digest", lambda s, m: s.digest(mechanism, data), mechanism=mechanism)

    def digest_key(self, mechanism: int, handle: int) -> bytes:
        """A sensitive key shorter than MIN_DIGESTIBLE_BYTES is not digested: its digest would
        give the key away to a brute force at once (a 2-byte secret: 65,536 tries). A single
        SoftHSM2 token digests it; the HA slot answers CKR_KEY_INDIGESTIBLE (docs/SECURITY.md)."""
        obj = self._digestible(handle)
        return self.failover.one(
            "C_DigestKey", lambda s, m: s.digest_key(mechanism, self._on(m, obj)), mechanism=mechanism
        )

    def digest_parts(self, mechanism: int, parts: list[bytes | int]) -> bytes:
        keys = {p: self._digestible(p) for p in parts if not isinstance(p, (bytes, bytearray))}

        def on(session, member: HAMember) -> bytes:
            pieces = [p if isinstance(p, (bytes, bytearray)) else self._on(member, keys[p]) for p in parts]
            return session.digest_parts(mechanism, pieces)

        return self.failover.one("C_DigestKey", on, mechanism=mechanism)

    def _digestible(self, handle: int) -> VirtualObject:
        obj = self._object(handle, "C_DigestKey")
        # every member's reading: SoftHSM2 stores CKA_VALUE_LEN 0 on an unwrapped copy, only the
        # member that generated the key knows its length
        try:
            read = self._everywhere(
                "C_DigestKey", lambda s, m: s.get_attributes(self._on(m, obj), [CKA_SENSITIVE, CKA_VALUE_LEN])
            )
        except MemberFailed:
            raise
        except CKRError as error:
            if error.ckr == CKR_ATTRIBUTE_TYPE_INVALID:
                return obj  # not a secret key: the token answers what it digests of it
            raise
        sensitive = any(found.get(CKA_SENSITIVE) for _, found in read)
        length = max(int(found.get(CKA_VALUE_LEN) or 0) for _, found in read)
        if sensitive and length < MIN_DIGESTIBLE_BYTES:
            raise CKRError(
                CKR_KEY_INDIGESTIBLE,
                "C_DigestKey",
                f"a sensitive key of {length} byte(s) is not digested (its digest "
                f"would reveal it; at least {MIN_DIGESTIBLE_BYTES} bytes)",
            )
        return obj

    def wrap_key(self, wrapping: int, key: int, mechanism: int, param: MechanismParam = None) -> bytes:
        wrapper, wrapped = self._object(wrapping, "C_WrapKey"), self._object(key, "C_WrapKey")
        return self.failover.one(
            "C_WrapKey",
            lambda s, m: s.wrap_key(self._on(m, wrapper), self._on(m, wrapped), mechanism, param),
            mechanism=mechanism,
        )

    def read_attribute(self, handle: int, attribute: int):
        obj = self._object(handle, "C_GetAttributeValue")
        facts = self._facts(obj)
        if attribute in facts:
            return self.get_attributes(handle, [attribute])[attribute]
        return self.failover.one(
            "C_GetAttributeValue", lambda s, m: s.read_attribute(self._on(m, obj), attribute)
        )

    def object_size(self, handle: int) -> int:
        obj = self._object(handle, "C_GetObjectSize")
        return self.failover.one("C_GetObjectSize", lambda s, m: s.object_size(self._on(m, obj)))

    # ---- multi-part: pinned to one member; a member failure mid-way fails back to the caller
    def encrypt_stream(
        self, handle: int, mechanism: int, chunks: Iterable[bytes], param: MechanismParam = None
    ) -> Iterator[bytes]:
        obj = self._object(handle, "C_EncryptInit")
        return self.failover.stream(
            "C_EncryptInit",
            mechanism,
            chunks,
            lambda s, m, data: s.encrypt_stream(self._on(m, obj), mechanism, data, param),
        )

    def decrypt_stream(
        self, handle: int, mechanism: int, chunks: Iterable[bytes], param: MechanismParam = None
    ) -> Iterator[bytes]:
        obj = self._object(handle, "C_DecryptInit")
        return self.failover.stream(
            "C_DecryptInit",
            mechanism,
            chunks,
            lambda s, m, data: s.decrypt_stream(self._on(m, obj), mechanism, data, param),
        )

    def digest_stream(self, mechanism: int, chunks: Iterable[bytes]) -> bytes:
        return b"".join(
            self.failover.stream(
                "C_DigestInit", mechanism, chunks, lambda s, m, data: iter([s.digest_stream(mechanism, data)])
            )
        )

    # ---- changes applied on every member ----------------------------------------------------
    def _everywhere(self, function: str, op, undo=None, touched=None) -> list[tuple[HAMember, Any]]:
        """A change on every active member, seen from any process as one (the state lock).
        touched(results): the identities it changed, for the group's journal (journal.py)."""
        if touched is None:  # nothing an object holds (a PIN, the RNG's seed, a probe)
            with self.group.state_lock():
                return self.failover.every(function, op, undo)
        with self.group.change() as changed:
            results = self.failover.every(function, op, undo)
            changed.extend(touched(results))
            return results

    def _made(self, results: list[tuple[HAMember, Any]]) -> list[tuple]:
        """The identity of the object a change made on every member (journal.py)."""
        return [replication.object_key(self._first_answering(results)[2])]

    def _first_answering(self, results: list[tuple[HAMember, Any]], facts: bool = False) -> tuple:
        """(member, its handle, the object's identity) from the first member that made the
        object and still answers: one that fails right after the change (a kill, a fault in the
        middle of the call) is failed and resynchronised when it comes back; the change holds on
        the others, so the application's call succeeds (it answered CKR_DEVICE_ERROR for a copy
        made on two members: differential test with remote members, seed 2400045)."""

        def read(member: HAMember, handle: int) -> tuple:
            session = self.failover.session_for(member)
            ident = replication.identity(session, handle)
            if not facts or ident[CKA_CLASS] not in (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY):
                return member, handle, ident, None
            return member, handle, ident, replication.read_facts(session, handle)

        failed: MemberFailed | None = None
        for member, handle in results:
            try:  # (pinned: a member-fatal answer fails that member)
                return self.failover.pinned(member, read, member, handle)
            except MemberFailed as exc:
                failed = exc
        raise failed

    def seed_random(self, seed: bytes) -> None:
        self._everywhere("C_SeedRandom", lambda s, m: s.seed_random(seed))

    def set_attributes(self, handle: int, template: dict[int, Any]) -> None:
        """All or nothing across members: a refusal (SoftHSM2 keeps what it set before the
        attribute it refused) puts back, on every member, the values read before."""
        obj = self._object(handle, "C_SetAttributeValue")
        if template.get(CKA_EXTRACTABLE) is False:
            self._keep_before_hardening(obj)
        template, label = self._renamed(obj, template)
        asked_sensitive = template.get(CKA_SENSITIVE)
        if asked_sensitive is False and self._facts(obj).get(CKA_SENSITIVE) is False:
            # not sensitive, as the record says; a copy from the blob (a member that came back)
            # is, and would refuse it: setting the value the key has changes nothing anywhere
            template = {a: v for a, v in template.items() if a != CKA_SENSITIVE}
        self._tried_on_a_copy(obj, template)
        before = self._readable(handle, list(template))
        if CKA_LABEL in before:
            before[CKA_LABEL] = obj.key[2]  # the members' own (a marked one, _alike)
        try:
            self._everywhere(
                "C_SetAttributeValue",
                lambda s, m: s.set_attributes(
                    self._on(m, obj), self._as_the_copy_is(s, self._on(m, obj), obj, template)
                ),
                touched=lambda _: [obj.key, _renamed_key(obj.key, template)],
            )
        except MemberFailed:
            raise
        except CKRError:
            if before:
                self._everywhere("C_SetAttributeValue", lambda s, m: self._put_back(s, m, obj, before))
            raise
        if CKA_ALWAYS_AUTHENTICATE in template:
            self.group.reauthenticated.pop(obj.key, None)
        kept = self.group.vault.get(obj.key)
        if kept is not None and asked_sensitive is not None and CKA_SENSITIVE in kept.facts:
            kept.facts[CKA_SENSITIVE] = bool(asked_sensitive)  # now so on every copy
            self.group.vault.put(obj.key, kept, token=not obj.session_object)
        if (
            CKA_ID in template
            or CKA_LABEL in template
            or (  # its identity on members changed
                obj.key[0] == CKO_DATA and CKA_VALUE in template
            )
        ):
            self._rekey(obj, template)
        self._keep_label(obj, label)

    def _as_the_copy_is(
        self, session, handle: int, obj: VirtualObject, template: dict[int, Any]
    ) -> dict[int, Any]:
        """A template for one member's copy of a key whose record answers CKA_SENSITIVE FALSE:
        copies from the blob are sensitive already, and SoftHSM2 refuses any CKA_SENSITIVE on a
        sensitive key (CKR_ATTRIBUTE_READ_ONLY, TRUE too); the copy that is not sensitive (its
        generating member's) takes it, so that no member keeps the value readable."""
        if (
            template.get(CKA_SENSITIVE) is not True
            or self._facts(obj).get(CKA_SENSITIVE) is not False
            or _after_unmodifiable(template, CKA_SENSITIVE)
        ):
            return template
        if not session.get_attributes(handle, [CKA_SENSITIVE]).get(CKA_SENSITIVE):
            return template
        return {a: v for a, v in template.items() if a != CKA_SENSITIVE}

    def _tried_on_a_copy(self, obj: VirtualObject, template: dict[int, Any]) -> None:
        """A change that cannot be put back (SENSITIVE TRUE, EXTRACTABLE FALSE, WRAP_WITH_TRUSTED
        TRUE) beside other attributes is tried first on a scratch copy on one member: SoftHSM2
        keeps on a session object what it set before an attribute it refuses, and the one-way
        change would stay where the token changes nothing. The member's refusal is the answer.
        An object that cannot be copied (not copyable, not modifiable) is not tried."""
        if (
            len(template) < 2
            or obj.key[0] not in (CKO_PRIVATE_KEY, CKO_SECRET_KEY)
            or not any(a in template and bool(template[a]) is v for a, v in ONE_WAY.items())
        ):
            return

        def trial(session, member: HAMember) -> None:
            try:
                scratch = session.copy_object(
                    self._on(member, obj), {CKA_TOKEN: False, CKA_ID: replication.TWIN_ID}
                )
            except CKRError:
                return
            try:
                session.set_attributes(scratch, template)
            finally:
                session.destroy_object(scratch)

        self.failover.one("C_SetAttributeValue", trial)

    def _renamed(self, obj: VirtualObject, template: dict[int, Any]) -> tuple[dict[int, Any], str | None]:
        """What members set, and the application's label when they keep another: a new label or
        CKA_ID (a data object's value) that gives the object the identity of another object."""
        cls, name, label = obj.key
        named_by = CKA_VALUE if cls == CKO_DATA else CKA_ID
        recorded = self._facts(obj).get(CKA_LABEL)
        if CKA_LABEL not in template:
            if recorded is not None or named_by not in template:
                return template, recorded  # a marked label stays as unique as it was
        wanted = _text(template.get(CKA_LABEL, label))
        new = (cls, bytes(template.get(named_by, name)), wanted)
        if new != obj.key and self._taken(new):
            return {**template, CKA_LABEL: replication.alike_label(wanted)}, wanted
        return ({**template, CKA_LABEL: wanted} if recorded is not None else template), None

    def _taken(self, key: tuple) -> bool:
        """Does an object of this identity (class, CKA_ID or a data object's value, label) exist?"""
        if key in self.group.order:
            return True
        return bool(
            self.failover.one("C_FindObjects", lambda s, m: s.find_objects(replication.search_template(key)))
        )

    def _alike(self, cls: int, template: dict[int, Any]) -> tuple[dict[int, Any], str | None]:
        """A new object's template for the members, and the application's label when its
        identity is another object's already: two objects the application made alike (two keys
        of one CKA_ID and label, a copy of a data object) are two objects on every member too."""
        label = _text(template.get(CKA_LABEL, ""))
        name = template.get(CKA_VALUE if cls == CKO_DATA else CKA_ID, b"")
        if cls is None or not self._taken((cls, bytes(name), label)):
            return template, None
        marked = replication.alike_label(label)  # in its place, or first (see _identified)
        return (
            {**template, CKA_LABEL: marked} if CKA_LABEL in template else {CKA_LABEL: marked, **template}
        ), label

    def _keep_label(self, obj: VirtualObject, label: str | None) -> None:
        """The record answers the application's label when members keep a marked one."""
        kept = self.group.vault.get(obj.key)
        if label is None and (kept is None or CKA_LABEL not in kept.facts):
            return
        kept = kept or Kept()
        if label is None:
            kept.facts.pop(CKA_LABEL)
        else:
            kept.facts[CKA_LABEL] = label
        self.group.vault.put(obj.key, kept, token=not obj.session_object)

    def _keep_before_hardening(self, obj: VirtualObject) -> None:
        """A key about to become unextractable is wrapped under the domain key while it still
        can be: a member that comes back, or is added later, gets it from the vault."""
        kept = self.group.vault.get(obj.key)
        if kept is not None and kept.blob:
            return

        def wrap(_, member: HAMember):
            session = self.failover.on(member)
            h = self._on(member, obj)
            found = session.get_attributes(h, [CKA_CLASS, CKA_KEY_TYPE, CKA_TOKEN])
            if found[CKA_CLASS] not in (CKO_PRIVATE_KEY, CKO_SECRET_KEY):
                return None
            flags = session.get_attributes(h, [CKA_SENSITIVE, CKA_EXTRACTABLE])
            if not flags[CKA_EXTRACTABLE]:
                return None
            return (
                found[CKA_TOKEN],
                bool(flags[CKA_SENSITIVE]),
                replication.keep(session, h, found[CKA_CLASS], found[CKA_KEY_TYPE]),
            )

        try:
            made = self.failover.one("C_SetAttributeValue", wrap)
        except MemberFailed:
            raise
        except CKRError:
            return  # the set itself says what is wrong with the object
        if made is None or made[2] is None:
            return
        token, sensitive, (generation, blob) = made
        kept = kept or Kept()
        kept.generation, kept.blob = generation, blob
        if not sensitive:  # a copy from the blob is sensitive: the record says what it is
            kept.facts[CKA_SENSITIVE] = False
        self.group.vault.put(obj.key, kept, token=bool(token))

    def _readable(self, handle: int, attributes: list[int]) -> dict[int, Any]:
        """The values of those attributes the object answers (one it has not, or will not say,
        is left out: nothing to put back there). One at a time when the whole template is not
        readable: a template of a label and an attribute the object has not (CKA_ENCRYPT of a
        private key) still puts the label back (SoftHSM2 keeps, on a session object, the label
        it set before refusing the other)."""
        try:
            return self.get_attributes(handle, attributes)
        except MemberFailed:
            raise
        except CKRError:
            pass
        values = {}
        for attribute in attributes:
            try:
                values.update(self.get_attributes(handle, [attribute]))
            except MemberFailed:
                raise
            except CKRError:
                continue  # not this one (sensitive, or not an attribute of the object)
        return values

    def _put_back(self, session, member: HAMember, obj: VirtualObject, values: dict[int, Any]) -> None:
        for attribute, value in values.items():  # one by one: what the token takes back
            try:
                session.set_attributes(self._on(member, obj), {attribute: value})
            except CKRError:
                pass  # never changed, or a one-way change (EXTRACTABLE TRUE -> FALSE)

    def copy_object(self, handle: int, template: dict[int, Any]) -> int:
        obj = self._object(handle, "C_CopyObject")
        cls, name, label = obj.key
        named_by = CKA_VALUE if cls == CKO_DATA else CKA_ID
        # the copy's identity as the application made it: the original's unless the template
        # says otherwise (members tell it from the original by a marked label, _alike)
        asked = {named_by: name, CKA_LABEL: self._facts(obj).get(CKA_LABEL, label), **template}
        members_template, label = self._alike(cls, asked)
        # members label the copy otherwise than their original (the copy is marked, or the
        # original is and the application's label is free again): an original that is not
        # modifiable takes no label in a copy, so the copy is made anew
        relabelled = label is not None or CKA_LABEL in self._facts(obj)
        if relabelled and not self.read_attribute(handle, CKA_MODIFIABLE):
            if cls in COPIED_ANEW:
                return self._copy_anew(obj, template, members_template, label)
            return self._copy_key_anew(obj, template, members_template[CKA_LABEL], label)
        if members_template is not asked or CKA_LABEL in self._facts(obj):  # in its place or first:
            label_first = {CKA_LABEL: members_template[CKA_LABEL]}  # nothing may follow MODIFIABLE FALSE
            template = {**template, **label_first} if CKA_LABEL in template else {**label_first, **template}
        if template.get(CKA_EXTRACTABLE) is False:
            self._keep_before_hardening(obj)
        kept = self.group.vault.get(obj.key)
        if (
            template.get(CKA_PRIVATE)
            and kept is not None
            and kept.blob
            and not self.read_attribute(handle, CKA_PRIVATE)
        ):
            kept = self._kept_private(obj, kept)
        if kept is not None and CKA_SENSITIVE in template and CKA_SENSITIVE in kept.facts:
            # the copy is as sensitive as its template says (the original's record says otherwise)
            kept = Kept(
                {**kept.facts, CKA_SENSITIVE: bool(template[CKA_SENSITIVE])}, kept.blob, kept.generation
            )
        if (
            template.get(CKA_SENSITIVE) is False
            and self._facts(obj).get(CKA_SENSITIVE) is False
            and not _after_unmodifiable(template, CKA_SENSITIVE)
        ):
            template = {a: v for a, v in template.items() if a != CKA_SENSITIVE}  # as it is: nothing to ask
        results = self._everywhere(
            "C_CopyObject",
            lambda s, m: s.copy_object(
                self._on(m, obj), self._as_the_copy_is(s, self._on(m, obj), obj, template)
            ),
            _destroy_made,
            self._made,
        )
        return self._register_results(results, kept, label)

    def _kept_private(self, obj: VirtualObject, kept: Kept) -> Kept:
        """The record of a private copy of a key that is not private: its blob wrapped anew under
        the domain key of private keys, so that a member that comes back gets the copy (the blob
        as kept unwraps only into a key that is not private)."""
        cls = obj.key[0]
        key_type = self.read_attribute(obj.handle, CKA_KEY_TYPE)
        made = self.failover.one(
            "C_CopyObject",
            lambda s, m: replication.rekept(s, cls, key_type, kept.blob, kept.generation, False),
        )
        if made is None:
            return Kept(dict(kept.facts))  # (a member that comes back then lacks it: said in its log)
        return Kept(dict(kept.facts), made[1], made[0])

    def _copy_anew(
        self, obj: VirtualObject, template: dict[int, Any], made: dict[int, Any], label: str | None
    ) -> int:
        """A copy of a data object or a public key that is not modifiable: SoftHSM2 takes no
        other label in such a copy, so members could not tell it from the original. The token's
        answer to the copy as asked comes from one member (that copy is destroyed at once); then
        the copy is created on every member from the original's attributes, with a marked label
        (_alike), and its record is the original's (a key's facts: LOCAL, KEY_GEN_MECHANISM ...)."""
        self.failover.one(
            "C_CopyObject", lambda s, m: s.destroy_object(s.copy_object(self._on(m, obj), template))
        )
        original = {}
        for attribute in COPIED_ANEW[obj.key[0]]:
            try:
                original[attribute] = self.read_attribute(obj.handle, attribute)
            except CKRError as error:
                if error.ckr != CKR_ATTRIBUTE_TYPE_INVALID:
                    raise
        made = {**{a: v for a, v in original.items() if v is not None}, **made}
        kept = self.group.vault.get(obj.key)
        results = self._everywhere(
            "C_CopyObject", lambda s, m: s.create_object(made), _destroy_made, self._made
        )
        return self._register_results(results, kept, label)

    def _copy_key_anew(
        self, obj: VirtualObject, template: dict[int, Any], members_label: str, label: str | None
    ) -> int:
        """A copy of a secret or private key that is not modifiable (so it takes no template at
        all, SoftHSM2: CKR_ATTRIBUTE_READ_ONLY for any attribute): the token's answer to the copy
        as asked comes from one member (that copy is destroyed at once); then each member makes
        the copy as recovery makes a key a member lacks (replication.replicate: from the blob kept
        of an unextractable key, through a key made for it otherwise), under the members' label
        (marked, or the application's where the original's is marked), and
        not modifiable as the original. Its record is the original's."""
        self.failover.one(
            "C_CopyObject", lambda s, m: s.destroy_object(s.copy_object(self._on(m, obj), template))
        )
        kept = self.group.vault.get(obj.key)
        final = {CKA_LABEL: members_label}
        results = self._everywhere(
            "C_CopyObject",
            lambda s, m: replication.replicate(s, self._on(m, obj), s, kept, final=final, again=True),
            _destroy_made,
            self._made,
        )
        return self._register_results(results, kept, label)

    def unwrap_key(
        self,
        unwrapping: int,
        object_class: int,
        key_type: int,
        data: bytes,
        mechanism: int,
        template: dict[int, Any],
        param: MechanismParam = None,
    ) -> int:
        """Unwrapped on every member: the unwrapping key is the same on all, so is the result."""
        wrapper = self._object(unwrapping, "C_UnwrapKey")
        template, label = self._alike(object_class, self._identified(template))
        results = self._everywhere(
            "C_UnwrapKey",
            lambda s, m: _leaving_nothing(
                s,
                object_class,
                template,
                lambda: s.unwrap_key(
                    self._on(m, wrapper), object_class, key_type, data, mechanism, template, param
                ),
            ),
            _destroy_made,
            self._made,
        )
        handle = self._register_results(results, label=label)
        self._keep_by_twin(
            handle,
            template,
            lambda s, m, twin: s.unwrap_key(
                self._on(m, wrapper), object_class, key_type, data, mechanism, twin, param
            ),
        )
        return handle

    def derive_key(
        self,
        base: int,
        mechanism: int,
        param: MechanismParam,
        key_type: int,
        length: int,
        template: dict[int, Any],
    ) -> int:
        """Derived on every member: same base key and inputs give the same key everywhere."""
        base_obj = self._object(base, "C_DeriveKey")
        template, label = self._alike(CKO_SECRET_KEY, self._identified(template))
        results = self._everywhere(
            "C_DeriveKey",
            lambda s, m: _leaving_nothing(
                s,
                CKO_SECRET_KEY,
                template,
                lambda: s.derive_key(self._on(m, base_obj), mechanism, param, key_type, length, template),
            ),
            _destroy_made,
            self._made,
        )
        handle = self._register_results(results, label=label)
        self._keep_by_twin(
            handle,
            template,
            lambda s, m, twin: s.derive_key(self._on(m, base_obj), mechanism, param, key_type, length, twin),
        )
        return handle

    def pbe_generate(self, password: str, salt: bytes, iterations: int, template: dict[int, Any]) -> int:
        """On every member: PBKDF2 of the same password and salt is the same key everywhere."""
        template = self._identified(template)
        results = self._everywhere(
            "C_GenerateKey",
            lambda s, m: s.pbe_generate(password, salt, iterations, template),
            _destroy_made,
            self._made,
        )
        return self._register_results(results)

    def probe_ec_curve(self, ec_params: bytes) -> None:
        """The HA slot accepts a curve when every active member does."""
        self._everywhere("C_GenerateKeyPair", lambda s, m: s.probe_ec_curve(ec_params))

    def _identified(self, template: dict[int, Any]) -> dict[int, Any]:
        """Members find an object again by class, CKA_ID and label: give it an ID when none was
        typed. A data object has no CKA_ID (the token would refuse it): its value and label name it."""
        if template.get(CKA_ID) or template.get(CKA_CLASS) == CKO_DATA:
            return template
        return {
            CKA_ID: os.urandom(8),
            **template,
        }  # first: SoftHSM2 takes nothing after MODIFIABLE FALSE at unwrap

    def _register_results(self, results, kept: Kept | None = None, label: str | None = None) -> int:
        """A new object made on every member alike: its record in the vault is what the first
        member says of it (copies: the original's), so a copy made later by recovery answers
        the same. label: the application's, when members keep a marked one (_alike)."""
        first_member, first_handle, ident, facts = self._first_answering(results, facts=kept is None)
        obj = self._register(replication.object_key(ident), first_member, first_handle)
        obj.session_object = not ident.get(CKA_TOKEN, True)
        if ident[CKA_CLASS] in (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY):
            record = Kept(dict(kept.facts), kept.blob, kept.generation) if kept else Kept(facts)
            record.facts.pop(CKA_LABEL, None)  # a copy's own label, below
            self.group.vault.put(obj.key, record, token=not obj.session_object)
        self._keep_label(obj, label)
        for member, handle in results:
            if member is not first_member:
                obj.on_member[member.serial] = (member.generation, handle)
        return obj.handle

    def _rekey(self, obj: VirtualObject, template: dict[int, Any]) -> None:
        cls, name, label = obj.key
        named_by = CKA_VALUE if cls == CKO_DATA else CKA_ID
        new = (cls, bytes(template.get(named_by, name)), template.get(CKA_LABEL, label))
        self._by_key.pop(obj.key, None)
        self.group.vault.move(obj.key, new)
        self.group.reauthenticated.pop(obj.key, None)
        self.group.order[new] = self.group.order.pop(obj.key, None) or self.group.place(new)
        obj.key = new
        self._by_key[new] = obj

    def get_attributes(self, handle: int, attributes: list[int]) -> dict[int, Any]:
        """What one token would answer: the facts kept of the key (vault.py) over what the
        serving member's copy says of itself."""
        obj = self._object(handle, "C_GetAttributeValue")
        facts = self._facts(obj)
        asked = [a for a in attributes if a not in facts] or [CKA_CLASS]  # the object is still there
        found = self.failover.one(
            "C_GetAttributeValue", lambda s, m: s.get_attributes(self._on(m, obj), asked)
        )
        found = {a: v for a, v in found.items() if a in attributes}
        found.update({a: facts[a] for a in attributes if a in facts})
        return found

    def _facts(self, obj: VirtualObject) -> dict[int, Any]:
        kept = self.group.vault.get(obj.key)
        return kept.facts if kept else {}

    def find_objects(self, template: dict[int, Any]) -> list[int]:
        """Searches stay on one member, as on Luna (docs/HA.md); results get virtual handles. The
        group's own domain keys are not the application's objects: the HA slot does not show them.
        The attributes a key's record answers (vault.FACTS) are matched against the record, not
        against the member's copy."""
        by_record = {a: v for a, v in template.items() if a in SEARCHED_BY_RECORD}
        on_member = {a: v for a, v in template.items() if a not in SEARCHED_BY_RECORD}

        def search(session, member: HAMember) -> list[int]:
            found = []
            for h in session.find_objects(on_member):
                try:
                    ident = replication.identity(session, h)
                except CKRError as error:
                    if error.ckr != CKR_OBJECT_HANDLE_INVALID:
                        raise
                    continue  # destroyed since the search by another application: gone, as on a token
                if replication.is_domain_key_id(ident.get(CKA_ID)) or is_mark(ident):
                    continue  # the group's own objects
                key = replication.object_key(ident)
                if by_record and not self._matches(session, h, key, by_record, ident):
                    continue
                obj = self._register(key, member, h)
                if obj not in found:  # two objects of one identity (class, ID, label) are one here
                    found.append(obj)
            # the same order every time, whichever member searched and in every session: the
            # order in which the group made or first saw each object, as a token lists its objects
            # in the order it made them (a member's own order differs from the next one's, and
            # applications that enumerate by index, pkcs11-tool --test, rely on it)
            order = self.group.order
            # (one destroyed by another application meanwhile has no place: listed last)
            found.sort(key=lambda o: order.get(o.key, float("inf")))
            return [o.handle for o in found]

        return self.failover.one("C_FindObjects", search)

    def _matches(self, session, h: int, key: tuple, wanted: dict[int, Any], ident: dict[int, Any]) -> bool:
        kept = self.group.vault.get(key)
        facts = kept.facts if kept else {}
        for attribute, value in wanted.items():
            if attribute in facts:
                have = facts[attribute]
            elif attribute in ident:
                have = ident[attribute]
            else:
                try:
                    have = session.read_attribute(h, attribute)
                except CKRError as error:
                    if self.group.is_member_failure(error):
                        raise
                    return False  # the object has no such attribute, or will not say
            if attribute == CKA_LABEL:
                have, value = _text(have or ""), _text(value)
            if have is None or _plain(have) != _plain(value):
                return False
        return True

    # ---- key management: made on one member, then copied to every other active member -----------
    def generate(self, spec: KeySpec) -> list[int]:
        label = None  # the application's, when members keep a marked one (_alike)
        if not spec.key_id:
            spec = _with(spec, key_id=os.urandom(8))  # members find the key by CKA_ID
        elif any(self._taken(key) for key in _identities(spec)):
            label, spec = spec.label or "", _with(spec, label=replication.alike_label(spec.label or ""))
        asked_wwt = bool(dict(spec.extra).get(CKA_WRAP_WITH_TRUSTED, spec.wrap_with_trusted))
        # a key the application wants unextractable could never be copied: it is made extractable
        # (a sensitive one by trusted keys only), wrapped once under the domain key for the vault,
        # copied to the other members as unextractable, and made so on its own member (vault.py).
        # One that is also not modifiable (or not destroyable) is generated modifiable: its own
        # member's copy is then made anew, as asked, and the one generated destroyed.
        made, final = spec, {}
        if not spec.extractable:
            asked = dict(spec.extra)
            final = {
                CKA_EXTRACTABLE: False,
                **{a: False for a in replication.NOT_AT_UNWRAP if asked.get(a, True) is False},
            }
            made = _with(
                spec,
                extractable=True,
                wrap_with_trusted=spec.sensitive or asked_wwt,
                extra=tuple(
                    (a, v) for a, v in spec.extra if a not in (CKA_EXTRACTABLE, CKA_WRAP_WITH_TRUSTED, *final)
                ),
            )
        with self.group.change() as changed:  # on every member or on none, seen from any process
            handles = self.failover.one(
                "C_GenerateKeyPair", lambda s, m: self._generate_on(s, m, made, final, spec, asked_wwt, label)
            )
            changed.extend(self.objects[h].key for h in handles)
            return handles

    def _generate_on(
        self,
        session,
        source: HAMember,
        made: KeySpec,
        final: dict[int, Any],
        spec: KeySpec,
        asked_wwt: bool,
        label: str | None,
    ) -> list[int]:
        """The keys generated on `source` and copied to every other member. A source that dies
        while they are copied takes the copies with it (the failover engine then generates on
        another member); its own keys are removed when it comes back (resynchronisation
        destroys what no other member holds, and the orphans are replaced)."""
        before = None if made.kind in ("aes", "generic") else self._keys_on(session)
        try:
            with fan_out():  # a source late by far is given up: the key is made on another member
                handles = session.generate(made)
        except CKRError as exc:
            if self.group.is_member_failure(exc):  # late or gone: a key it makes after all is an
                with self.group.lock:  # orphan, replaced when it comes back
                    self.group.orphans.setdefault(source.serial, set()).update(_identities(spec))
            elif before is not None:
                self._remove_half_made(session, before)
            raise
        kept: list[tuple] = []
        try:
            # the source's part too (its key wrapped for the vault, read, copied, made
            # unextractable) is given up when the source is late by far: a source that stops
            # answering after generating takes the copies with it, as one that dies
            with fan_out():
                kept = self._keep_generated(source, handles, bool(final), spec, asked_wwt, label)
                return self._replicate_all(source, handles, final)
        except MemberFailed as exc:
            self._forget(kept)
            if exc.member is source:
                with self.group.lock:
                    self.group.orphans.setdefault(source.serial, set()).update(_identities(spec))
            raise
        except BaseException:
            self._forget(kept)
            raise

    @staticmethod
    def _keys_on(session) -> set[int]:
        """Every public and private key the member session sees (the state lock is held)."""
        return {
            h for cls in (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY) for h in session.find_objects({CKA_CLASS: cls})
        }

    def _remove_half_made(self, session, before: set[int]) -> None:
        """SoftHSM2 keeps the half of a key pair it made before refusing the other half's
        template (an attribute of the other class: CKR_ATTRIBUTE_TYPE_INVALID), sometimes with
        neither its CKA_ID nor its label: removed, so that no member holds a key the group never
        made (one token keeps it: docs/DIFFTEST.md)."""
        try:
            for h in self._keys_on(session) - before:
                session.destroy_object(h)
        except CKRError:
            pass  # best effort: the refusal being reported is what the caller must see

    def _keep_generated(
        self,
        source: HAMember,
        handles: list[int],
        harden: bool,
        spec: KeySpec,
        asked_wwt: bool,
        label: str | None,
    ) -> list[tuple]:
        """The vault's record of each new key: what the generating member says of it (it is
        LOCAL, its KEY_GEN_MECHANISM ...) and, for a key to be made unextractable, the blob and
        what one token would say of such a key."""
        src = self.failover.on(source)
        keys = []
        for h in handles:
            ident = replication.identity(src, h)
            kept = Kept(replication.read_facts(src, h))
            cls = ident[CKA_CLASS]
            if harden and cls in (CKO_PRIVATE_KEY, CKO_SECRET_KEY):
                blob = replication.keep(src, h, cls, ident[CKA_KEY_TYPE])
                if blob is not None:
                    kept.generation, kept.blob = blob
                kept.facts.update({CKA_NEVER_EXTRACTABLE: True, CKA_WRAP_WITH_TRUSTED: asked_wwt})
                if not spec.sensitive:  # a copy from the blob is sensitive: say what was asked
                    kept.facts[CKA_SENSITIVE] = False
            if label is not None:
                kept.facts[CKA_LABEL] = label
            key = replication.object_key(ident)
            self.group.vault.put(key, kept, token=bool(ident.get(CKA_TOKEN, True)))
            keys.append(key)
        return keys

    def _forget(self, keys: list[tuple]) -> None:
        for key in keys:
            self.group.vault.drop(key)

    def create_object(self, template: dict[int, Any]) -> int:
        """The caller typed the values: create them on every member alike."""
        template, label = self._alike(template.get(CKA_CLASS), self._identified(template))
        results = self._everywhere(
            "C_CreateObject", lambda s, m: s.create_object(template), _destroy_made, self._made
        )
        handle = self._register_results(results, label=label)
        self._keep_by_twin(handle, template, lambda s, m, twin: s.create_object({**template, **twin}))
        return handle

    def _keep_by_twin(self, handle: int, template: dict[int, Any], make) -> None:
        """An unextractable key made alike on every member (created from a value, unwrapped,
        derived) is made once more on one member as a session key that trusted keys may wrap,
        wrapped under the domain key for the vault, and destroyed: a member that comes back gets
        it from the vault, while every member's copy is exactly what was asked."""
        obj = self.objects[handle]
        kept = self.group.vault.get(obj.key)
        if kept is None or kept.blob or obj.key[0] not in (CKO_PRIVATE_KEY, CKO_SECRET_KEY):
            return
        twin = {
            CKA_TOKEN: False,
            CKA_EXTRACTABLE: True,
            CKA_WRAP_WITH_TRUSTED: True,
            CKA_ID: replication.TWIN_ID,
            CKA_LABEL: "",
            CKA_MODIFIABLE: True,
            replication.CKA_DESTROYABLE: True,
        }

        def wrap(_, member: HAMember):
            session = self.failover.on(member)
            found = session.get_attributes(
                self._on(member, obj), [CKA_KEY_TYPE, CKA_SENSITIVE, CKA_EXTRACTABLE]
            )
            if found[CKA_EXTRACTABLE]:
                return None
            made = make(
                session,
                member,
                {**{a: v for a, v in template.items() if a not in replication.AT_CREATION}, **twin},
            )
            try:
                return bool(found[CKA_SENSITIVE]), replication.keep(
                    session, made, obj.key[0], found[CKA_KEY_TYPE]
                )
            finally:
                session.destroy_object(made)

        try:
            blob = self.failover.one("C_CreateObject", wrap)
        except MemberFailed:
            raise
        except CKRError as exc:  # e.g. an unwrapping key whose own template forbids the twin
            self.group.log.record(
                self.group.serial,
                "*",
                "not kept",
                f"{obj.key[2] or obj.key[1].hex()}: {exc.name}: a member that "
                "comes back cannot get this unextractable key",
            )
            return
        if blob is not None and blob[1] is not None:
            sensitive, (kept.generation, kept.blob) = blob
            if not sensitive:  # a copy from the blob is sensitive: the record says what it is
                kept.facts[CKA_SENSITIVE] = False
            self.group.vault.put(obj.key, kept, token=not obj.session_object)

    def destroy_object(self, handle: int) -> None:
        obj = self._object(handle, "C_DestroyObject")
        self._everywhere(
            "C_DestroyObject", lambda s, m: s.destroy_object(self._on(m, obj)), touched=lambda _: [obj.key]
        )
        self.objects.pop(handle, None)
        self._by_key.pop(obj.key, None)
        self.group.vault.drop(obj.key)
        self.group.order.pop(obj.key, None)  # made again later: listed last, as on a token
        self.group.reauthenticated.pop(obj.key, None)

    def _replicate_all(
        self, source: HAMember, handles: list[int], final: dict[int, Any] | None = None
    ) -> list[int]:
        """Copies new objects to every other active member. If a copy is refused (not a member
        failure: e.g. a transport that cannot carry the wrap mechanism), nothing is left on only
        some members: every copy and the originals are destroyed and the refusal is returned.
        `final`: what the copies take instead of the source's values, and the source's own copy
        last (a key made unextractable); a source that fails there takes the copies with it."""
        src = self.failover.on(source)
        copies: list[tuple[HAMember, int]] = []
        placed: list[tuple[VirtualObject, dict[str, tuple[int, int]]]] = []
        try:
            for h in handles:
                ident = replication.identity(src, h)
                on_member = {source.serial: (source.generation, h)}
                for member in self.group.active_members():
                    if member is source:
                        continue
                    try:
                        copy = replication.replicate(
                            src,
                            h,
                            self.failover.on(member, fanned_out=True),
                            self.group.vault.get(replication.object_key(ident)),
                            final if ident[CKA_CLASS] != CKO_PUBLIC_KEY else None,
                        )
                    except MemberFailed as exc:
                        if exc.member is source:
                            raise
                        continue  # that member failed: it gets the key when it is resynchronised
                    except CKRError as exc:
                        self._undo(source, handles, copies)
                        raise CKRError(
                            exc.ckr,
                            exc.function,
                            f"the new key could not be copied to member {member.serial}, so "
                            f"it was removed from every member" + (f": {exc.detail}" if exc.detail else ""),
                        )
                    copies.append((member, copy))
                    on_member[member.serial] = (member.generation, copy)
                placed.append((ident, on_member))
            if final:  # the generating member's own copy, last (the secret or private key)
                try:
                    remade = self._harden_source(src, handles[-1], placed[-1][0], final)
                except MemberFailed:
                    raise
                except CKRError:  # refused: the key goes from every member, as refused
                    self._undo(source, handles, copies)
                    raise
                placed[-1][1][source.serial] = (source.generation, remade)
                handles = [*handles[:-1], remade]
        except MemberFailed:  # the source failed (a target's failure never gets here)
            self._undo(source, [], copies)  # on the members still there
            raise
        virtual = []
        for ident, on_member in placed:
            obj = self._register(replication.object_key(ident), source, on_member[source.serial][1])
            obj.on_member.update(on_member)
            obj.session_object = not ident.get(CKA_TOKEN, True)
            virtual.append(obj.handle)
        self.group.log.record(
            self.group.serial,
            source.serial,
            "replicated",
            f"{len(handles)} object(s) to {len(self.group.active_members()) - 1} member(s)",
        )
        return virtual

    def _harden_source(self, src, handle: int, ident: dict[int, Any], final: dict[int, Any]) -> int:
        """The generating member's own key made as asked: unextractable (set, a one-way change),
        and, when it must also be not modifiable or not destroyable, made anew as the other
        members' copies are (from the blob kept of it) and the generated one destroyed."""
        if not any(a in final for a in replication.NOT_AT_UNWRAP):
            src.set_attributes(handle, final)
            return handle
        kept = self.group.vault.get(replication.object_key(ident))
        remade = replication.replicate(src, handle, src, kept, final, again=True)
        src.destroy_object(handle)
        return remade

    def _undo(self, source: HAMember, handles: list[int], copies: list[tuple[HAMember, int]]) -> None:
        for member, handle in copies + [(source, h) for h in handles]:
            try:
                self.group.session_for(member).destroy_object(handle)
            except CKRError:
                pass  # best effort: the refusal being reported is what the caller must see

    # ---- virtual object handles ----------------------------------------------------------------
    def _register(self, key: tuple, member: HAMember, member_handle: int) -> VirtualObject:
        if key not in self.group.order:  # new to the group, or destroyed and made again
            self.group.place(key)
        obj = self._by_key.get(key)
        if obj is None:
            obj = VirtualObject(handles.allocate(), key)
            self.objects[obj.handle] = obj
            self._by_key[key] = obj
        known = obj.on_member.get(member.serial)
        if (
            known is not None
            and known != (member.generation, member_handle)
            and known[0] == member.generation
        ):
            # destroyed and made again (by another session): the other members' handles are
            # stale too; each is found again at its next use
            obj.on_member.clear()
        obj.on_member[member.serial] = (member.generation, member_handle)
        return obj

    def _object(self, handle: int, function: str) -> VirtualObject:
        """Only a lookup: the call that follows (run, on_all) does the recovery check."""
        try:
            return self.objects[handle]
        except KeyError:
            raise CKRError(
                CKR_OBJECT_HANDLE_INVALID,
                function,
                f"no object with handle {handle} in session {self.handle}",
            ) from None

    def _on(self, member: HAMember, obj: VirtualObject) -> int:
        """The member's own handle for a virtual object, found again after a recovery."""
        known = obj.on_member.get(member.serial)
        if known and known[0] == member.generation:
            return known[1]
        found = self.group.session_for(member).find_objects(replication.search_template(obj.key))
        if not found:  # another member may have it (one that came back short of objects)
            if self.group.credentials is None:  # else a private object: it takes a login
                raise ObjectMissing(
                    CKR_USER_NOT_LOGGED_IN,
                    "C_FindObjects",
                    f"object {obj.handle} is not seen on member {member.serial} without a login",
                )
            raise ObjectMissing(
                CKR_OBJECT_HANDLE_INVALID,
                "C_FindObjects",
                f"object {obj.handle} is missing on member {member.serial}",
            )
        obj.on_member[member.serial] = (member.generation, found[0])
        return found[0]


def _renamed_key(key: tuple, template: dict[int, Any]) -> tuple:
    """The identity an object has on members after this template is set (as _rekey)."""
    cls, name, label = key
    named_by = CKA_VALUE if cls == CKO_DATA else CKA_ID
    return (cls, bytes(template.get(named_by, name)), _text(template.get(CKA_LABEL, label)))


def _after_unmodifiable(template: dict[int, Any], attribute: int) -> bool:
    """Does CKA_MODIFIABLE FALSE come before `attribute` in the template? SoftHSM2 applies a copy's
    template in its order, and refuses every attribute after it (CKR_ATTRIBUTE_READ_ONLY)."""
    order = list(template)
    return (
        CKA_MODIFIABLE in order
        and template[CKA_MODIFIABLE] is not None
        and not template[CKA_MODIFIABLE]
        and attribute in order
        and order.index(CKA_MODIFIABLE) < order.index(attribute)
    )


def _leaving_nothing(session, object_class: int, template: dict[int, Any], make):
    """make() on a member; SoftHSM2 refuses an unwrap or derivation whose template has
    CKA_MODIFIABLE FALSE before another attribute (CKR_ATTRIBUTE_READ_ONLY) and keeps the key it
    made without the rest: such a refusal destroys what appeared on the member. (Run inside
    the group's state lock, as every change: no other application makes keys meanwhile.)"""
    order = list(template)
    if CKA_MODIFIABLE not in order or template[CKA_MODIFIABLE] or order[-1] == CKA_MODIFIABLE:
        return make()
    before = set(session.find_objects({CKA_CLASS: object_class}))
    try:
        return make()
    except CKRError:
        for handle in set(session.find_objects({CKA_CLASS: object_class})) - before:
            try:
                session.destroy_object(handle)
            except CKRError:
                pass  # gone, or the token keeps it from this process: nothing more to do
        raise


def _destroy_made(session, member: HAMember, handle: int) -> None:
    """Undo of an object made on a member, when another member refused to make it."""
    session.destroy_object(handle)


def _identities(spec: KeySpec) -> list[tuple]:
    """The object_key of each key a generation of this spec makes (replication.object_key)."""
    classes = (CKO_SECRET_KEY,) if spec.kind in ("aes", "generic") else (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY)
    return [(cls, bytes(spec.key_id), spec.label or "") for cls in classes]  # no label: as members read it


def _text(label: Any) -> str:
    """A label as the members' identities hold it."""
    return bytes(label).decode("utf-8", "replace") if isinstance(label, (bytes, bytearray)) else str(label)


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, bool):
        return int(value)
    return int(value) if isinstance(value, int) else value


def _with(spec: KeySpec, **changes) -> KeySpec:
    from dataclasses import replace

    return replace(spec, **changes)
