"""Key replication between members without plaintext: wrap under the group's domain keys.

A domain key is an AES-256 key with CKA_TRUSTED, identical on every member, sensitive and never
extractable. Its value is drawn from member 1's RNG and crosses host memory once, at HA Init, as
a Luna cloning-domain secret does. Application keys are generated with CKA_WRAP_WITH_TRUSTED and
only ever leave a member wrapped under a domain key (CKM_AES_KEY_WRAP_PAD).

A trusted key alone is not enough (tests/test_attacks.py tries it): whoever holds the user PIN could
unwrap a blob again as a non-sensitive key. So every domain key is locked down where the token
enforces it (SoftHSM 2.6.1 does): not modifiable, copyable or destroyable, usable only for
CKM_AES_KEY_WRAP_PAD wrap/unwrap; its CKA_WRAP_TEMPLATE lets it wrap one class and key type only,
and its CKA_UNWRAP_TEMPLATE makes whatever it unwraps that class and type, sensitive, wrappable
by trusted keys only and private. That is why there is one domain key per kind of key carried:
an RSA blob cannot come back as a secret key whose value is the private key's encoding.
SoftHSM lets only the SO create a trusted key and the SO cannot create private objects, so the
domain keys are public objects: their values lie unencrypted in the token files, which the state
folder's 0700 mode protects (docs/SECURITY.md).

Domain keys cannot be destroyed, so re-keying adds a generation beside the old one (CKA_ID
`ckdemo-ha-domain/g<N>/<kind>`); replication uses the newest generation both members hold. The
single public, destroyable key of earlier ckdemo versions (CKA_ID `ckdemo-ha-domain`) is weak:
HA Init destroys it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from .. import codes
from ..codes import CKR_KEY_NOT_WRAPPABLE, CKRError
from ..model import (
    CKA_ALLOWED_MECHANISMS,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_APPLICATION,
    CKA_OBJECT_ID,
    CKA_CLASS,
    CKA_COEFFICIENT,
    CKA_COPYABLE,
    CKA_DECRYPT,
    CKA_DERIVE,
    CKA_DESTROYABLE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_ENCRYPT,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_EXTRACTABLE,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_MODIFIABLE,
    CKA_MODULUS,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_PRIVATE,
    CKA_PRIVATE_EXPONENT,
    CKA_PUBLIC_EXPONENT,
    CKA_SENSITIVE,
    CKA_SIGN,
    CKA_TOKEN,
    CKA_TRUSTED,
    CKA_UNWRAP,
    CKA_UNWRAP_TEMPLATE,
    CKA_VALUE,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_WRAP_TEMPLATE,
    CKA_WRAP_WITH_TRUSTED,
    CKK_AES,
    CKK_EC,
    CKK_GENERIC_SECRET,
    CKK_RSA,
    CKM_AES_KEY_WRAP_PAD,
    CKM_SHA256,
    CKO_DATA,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
)
from .vault import FACTS, Kept

DOMAIN_KEY_LABEL = "ckdemo HA domain key"
DOMAIN_KEY_PREFIX = b"ckdemo-ha-domain"
LEGACY_DOMAIN_KEY_ID = DOMAIN_KEY_PREFIX  # one weak key, before generations existed
DOMAIN_KEY_BYTES = 32
DOMAIN_KEY_MECHANISM = CKM_AES_KEY_WRAP_PAD
_DOMAIN_ID = re.compile(rb"ckdemo-ha-domain/g(\d+)/([a-z]+)\Z")

# the kinds of key a domain key carries: (class, key type) by name
CARRIED = {
    "rsa": (CKO_PRIVATE_KEY, CKK_RSA),
    "ec": (CKO_PRIVATE_KEY, CKK_EC),
    "aes": (CKO_SECRET_KEY, CKK_AES),
    "generic": (CKO_SECRET_KEY, CKK_GENERIC_SECRET),
}
KIND_OF = {pair: kind for kind, pair in CARRIED.items()}
# keys an application made CKA_PRIVATE = FALSE (any session may use them, logged in or not) have
# domain keys of their own: such a domain key wraps only a key that is not private and unwraps
# only into one, and its blobs are nothing a private family's key unwraps, nor the other way
PUBLIC_FAMILY = "pub"
ALL_KINDS = (*CARRIED, *(kind + PUBLIC_FAMILY for kind in CARRIED))
# pinned by every domain key's unwrap template: no user can unwrap a readable copy
UNWRAP_PINNED = {CKA_SENSITIVE: True, CKA_WRAP_WITH_TRUSTED: True, CKA_PRIVATE: True}


def unwrap_pinned(private: bool) -> dict[int, Any]:
    return {**UNWRAP_PINNED, CKA_PRIVATE: bool(private)}


def kind_of(cls: int, key_type: int, private: bool = True) -> str | None:
    """The domain key family that carries a key of this class, type and CKA_PRIVATE."""
    kind = KIND_OF.get((cls, key_type))
    return kind if kind is None or private else kind + PUBLIC_FAMILY


# capability attributes copied to a replica, by object class
CAPABILITIES = {
    # (and whether each use asks for a context-specific login, which a token takes at any time)
    CKO_PRIVATE_KEY: (CKA_SIGN, CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE, CKA_ALWAYS_AUTHENTICATE),
    # (not CKA_VALUE_LEN: SoftHSM 2.6.1 refuses it in an unwrap template and stores 0 on every
    # unwrapped secret key; the key value itself is intact)
    CKO_SECRET_KEY: (CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP, CKA_SIGN, CKA_VERIFY, CKA_DERIVE),
    CKO_PUBLIC_KEY: (CKA_VERIFY, CKA_ENCRYPT, CKA_WRAP),
}
# given at creation only (a token refuses to set them FALSE later): copied to every replica
AT_CREATION = (CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE)
NOT_AT_UNWRAP = (
    CKA_DESTROYABLE,
    CKA_MODIFIABLE,
)  # last in an unwrap template (SoftHSM2 2.6.1), MODIFIABLE last of all
PUBLIC_VALUES = {CKK_RSA: (CKA_MODULUS, CKA_PUBLIC_EXPONENT), CKK_EC: (CKA_EC_PARAMS, CKA_EC_POINT)}
# what a key that is not sensitive is copied by (it is readable anyway, so nothing is wrapped)
CLEAR_VALUES = {
    (CKO_PRIVATE_KEY, CKK_RSA): (
        CKA_MODULUS,
        CKA_PUBLIC_EXPONENT,
        CKA_PRIVATE_EXPONENT,
        CKA_PRIME_1,
        CKA_PRIME_2,
        CKA_EXPONENT_1,
        CKA_EXPONENT_2,
        CKA_COEFFICIENT,
    ),
    (CKO_PRIVATE_KEY, CKK_EC): (CKA_EC_PARAMS, CKA_VALUE),
}
IDENTITY = (CKA_CLASS, CKA_KEY_TYPE, CKA_ID, CKA_LABEL, CKA_TOKEN, CKA_PRIVATE)
# a data object's attributes, copied to a member that lacks it (MODIFIABLE and the rest at creation)
DATA_VALUES = (
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_APPLICATION,
    CKA_OBJECT_ID,
    CKA_VALUE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_MODIFIABLE,
)


def domain_key_id(generation: int, kind: str) -> bytes:
    return b"%s/g%d/%s" % (DOMAIN_KEY_PREFIX, generation, kind.encode())


def is_domain_key_id(key_id: bytes | None) -> bool:
    return bool(key_id) and bytes(key_id).startswith(DOMAIN_KEY_PREFIX)


def domain_key_template(value: bytes, generation: int, kind: str) -> dict[int, Any]:
    private = not kind.endswith(PUBLIC_FAMILY)
    cls, key_type = CARRIED[kind if private else kind[: -len(PUBLIC_FAMILY)]]
    wraps = {CKA_CLASS: cls, CKA_KEY_TYPE: key_type, **({} if private else {CKA_PRIVATE: False})}
    return {
        CKA_CLASS: CKO_SECRET_KEY,
        CKA_KEY_TYPE: CKK_AES,
        CKA_VALUE: value,
        CKA_TOKEN: True,
        CKA_PRIVATE: False,  # SoftHSM: only the SO may set CKA_TRUSTED, and not on private objects
        CKA_SENSITIVE: True,
        CKA_EXTRACTABLE: False,
        CKA_TRUSTED: True,
        CKA_WRAP: True,
        CKA_UNWRAP: True,
        CKA_ENCRYPT: False,
        CKA_DECRYPT: False,
        CKA_SIGN: False,
        CKA_VERIFY: False,
        CKA_DERIVE: False,
        CKA_MODIFIABLE: False,
        CKA_COPYABLE: False,
        CKA_DESTROYABLE: False,
        CKA_ALLOWED_MECHANISMS: [DOMAIN_KEY_MECHANISM],
        # it wraps only its own kind of key, and unwraps only that kind, locked down
        CKA_WRAP_TEMPLATE: wraps,
        CKA_UNWRAP_TEMPLATE: {CKA_CLASS: cls, CKA_KEY_TYPE: key_type, **unwrap_pinned(private)},
        CKA_ID: domain_key_id(generation, kind),
        CKA_LABEL: f"{DOMAIN_KEY_LABEL} g{generation} {kind}",
    }


@dataclass
class DomainKeys:
    """The domain keys one member holds: {generation: {kind: handle}}, and a weak legacy key."""

    generations: dict[int, dict[str, int]] = field(default_factory=dict)
    legacy: list[int] = field(default_factory=list)

    @property
    def complete(self) -> list[int]:
        """Generations with a key for every kind, oldest first."""
        return sorted(g for g, kinds in self.generations.items() if set(kinds) == set(ALL_KINDS))

    @property
    def current(self) -> int | None:
        complete = self.complete
        return complete[-1] if complete else None

    @property
    def newest(self) -> int:
        return max(self.generations, default=0)


def domain_keys(session) -> DomainKeys:
    """Every trusted secret key of ours on the member (public objects: no login needed)."""
    found = DomainKeys()
    for handle in session.find_objects({CKA_CLASS: CKO_SECRET_KEY, CKA_TRUSTED: True}):
        key_id = bytes(session.get_attributes(handle, [CKA_ID]).get(CKA_ID) or b"")
        if key_id == LEGACY_DOMAIN_KEY_ID:
            found.legacy.append(handle)
            continue
        match = _DOMAIN_ID.match(key_id)
        if match and match.group(2).decode() in ALL_KINDS:
            found.generations.setdefault(int(match.group(1)), {})[match.group(2).decode()] = handle
    return found


def identity(session, handle: int) -> dict[int, Any]:
    ident = session.get_attributes(handle, list(IDENTITY))
    if ident.get(CKA_CLASS) == CKO_DATA:  # no CKA_ID: its value tells two of one label apart
        ident.update(session.get_attributes(handle, [CKA_VALUE]))
    return ident


def object_key(ident: dict[int, Any]) -> tuple:
    """How objects are matched across members (never by handle): class, CKA_ID and label; a
    data object, which has no CKA_ID, by class, value and label."""
    named_by = CKA_VALUE if ident[CKA_CLASS] == CKO_DATA else CKA_ID
    return (ident[CKA_CLASS], bytes(ident.get(named_by) or b""), ident.get(CKA_LABEL) or "")


# the mark members' labels carry for an object the application made with the identity of
# another (two keys of one class, CKA_ID and label; a copy of a data object): the record answers
# the application's label (docs/HA.md, "Two objects alike are two objects")
ALIKE_MARK = " #ha-"


def alike_label(label: str) -> str:
    """The label members keep for an object whose identity another object already has."""
    return f"{label}{ALIKE_MARK}{os.urandom(4).hex()}"


# a public value that differs between two keys: two members' objects of the same identity are
# one key only when it matches (an EC private key has none: it goes with its public key)
FINGERPRINT = {
    (CKO_PUBLIC_KEY, CKK_RSA): CKA_MODULUS,
    (CKO_PRIVATE_KEY, CKK_RSA): CKA_MODULUS,
    (CKO_PUBLIC_KEY, CKK_EC): CKA_EC_POINT,
}


def fingerprint(session, handle: int, ident: dict[int, Any]) -> bytes | None:
    """The key's public distinguishing value (KCV, modulus, EC point); None when it has none
    the member will show. `ident`: the object's identity (class and key type) as read."""
    cls, key_type = ident[CKA_CLASS], ident.get(CKA_KEY_TYPE)
    try:
        if cls == CKO_SECRET_KEY:
            # SoftHSM computes CKA_CHECK_VALUE for generated keys only, not for unwrapped
            # copies: the SHA-256 of the key value, computed on the member, is the KCV here
            return session.digest_key(CKM_SHA256, handle)
        attribute = FINGERPRINT.get((cls, key_type))
        if attribute is None:
            return None
        value = session.get_attributes(handle, [attribute])[attribute]
    except CKRError as exc:
        if exc.ckr in UNREADABLE:
            return None
        raise
    return bytes(value) if value else None


UNREADABLE = frozenset(
    (
        codes.CKR_ATTRIBUTE_TYPE_INVALID,
        codes.CKR_ATTRIBUTE_SENSITIVE,
        codes.CKR_KEY_INDIGESTIBLE,
        codes.CKR_KEY_FUNCTION_NOT_PERMITTED,
        codes.CKR_MECHANISM_INVALID,
        codes.CKR_FUNCTION_NOT_SUPPORTED,
    )
)


def search_template(key: tuple) -> dict[int, Any]:
    """The search that finds an object of this object_key on a member. A data object has no
    CKA_ID at all (searching CKA_ID = "" would find nothing): its class, value and label name it."""
    cls, name, label = key
    if cls == CKO_DATA:
        return {CKA_CLASS: cls, CKA_VALUE: name, CKA_LABEL: label}
    # the label too when empty: a key with no label and one of the same CKA_ID under a marked
    # label (_alike) are two objects (searching by ID alone found either, and a destroy of the one
    # took the other)
    return {CKA_CLASS: cls, CKA_ID: name, CKA_LABEL: label}


def find_same(session, ident: dict[int, Any]) -> int | None:
    """The member's object with the same class, CKA_ID and label, if it has one."""
    found = session.find_objects(search_template(object_key(ident)))
    return found[0] if found else None


def replicate(
    source,
    handle: int,
    target,
    kept: Kept | None = None,
    final: dict[int, Any] | None = None,
    again: bool = False,
) -> int:
    """Copy one key object from the source member session to the target member session; an
    object the target already has (same class, CKA_ID, label) is not copied twice. The copy
    is made as the source's is: sensitive and extractable as it is, so a key the application
    made unextractable stays so on every member. Such a key cannot be wrapped on the source:
    it comes from the blob the vault kept of it (`kept`, vault.py) instead. `final`: values the
    copy takes instead of the source's (a new key copied before its own is made unextractable).
    again: made even where the same key is (the source's own key made anew, as asked)."""
    ident = identity(source, handle)
    existing = None if again else find_same(target, ident)
    if existing is not None:
        return existing
    if ident[CKA_CLASS] == CKO_DATA:  # readable by whoever may see it: made again as it is
        return target.create_object(
            {
                CKA_CLASS: CKO_DATA,
                **source.get_attributes(handle, list(DATA_VALUES)),
                **{a: v for a, v in (final or {}).items() if a in DATA_VALUES},
            }
        )
    cls, key_type = ident[CKA_CLASS], ident[CKA_KEY_TYPE]
    template = {k: v for k, v in ident.items() if k not in (CKA_CLASS, CKA_KEY_TYPE)}
    template.update(source.get_attributes(handle, list(CAPABILITIES.get(cls, ()))))
    template.update(source.get_attributes(handle, list(AT_CREATION)))
    template.update({a: v for a, v in (final or {}).items() if a in AT_CREATION})
    if cls == CKO_PUBLIC_KEY:
        values = source.get_attributes(handle, list(PUBLIC_VALUES[key_type]))
        return target.create_object({CKA_CLASS: cls, CKA_KEY_TYPE: key_type, **template, **values})
    flags = source.get_attributes(handle, [CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_WRAP_WITH_TRUSTED])
    private = bool(ident.get(CKA_PRIVATE, True))
    pinned = unwrap_pinned(private)
    unwrapping = _kept_domain_key(target, cls, key_type, kept, private)
    if not flags[CKA_SENSITIVE] and (flags[CKA_EXTRACTABLE] or unwrapping is None):
        # (a key neither sensitive nor extractable cannot be read: it comes from the blob, and
        # that copy is sensitive, which the vault's record answers for it)
        return _copy_clear(source, handle, target, cls, key_type, {**template, **flags, **(final or {})})
    # SoftHSM2 applies an unwrap template in its order, and nothing after CKA_MODIFIABLE FALSE
    # (CKR_ATTRIBUTE_READ_ONLY): MODIFIABLE and DESTROYABLE FALSE go last, after the pinned ones
    later = {a: template.pop(a) for a in NOT_AT_UNWRAP if a in template}
    later = {a: v for a, v in later.items() if v is False}
    template[CKA_EXTRACTABLE] = bool(flags[CKA_EXTRACTABLE])
    template.update({a: v for a, v in (final or {}).items() if a not in NOT_AT_UNWRAP})
    if unwrapping is not None:  # the blob kept when the key was made
        return target.unwrap_key(
            unwrapping, cls, key_type, kept.blob, DOMAIN_KEY_MECHANISM, {**template, **pinned, **later}
        )
    if flags[CKA_EXTRACTABLE] and not flags[CKA_WRAP_WITH_TRUSTED]:
        # any key of the user's may wrap it: so may a key made for this one copy
        return _transport(
            source,
            handle,
            target,
            cls,
            key_type,
            {**template, CKA_SENSITIVE: True, CKA_WRAP_WITH_TRUSTED: False, **later},
        )
    kind = _kind(cls, key_type, private)
    _, wrapping, unwrapping = _common_domain_key(source, target, kind)
    older = None if flags[CKA_EXTRACTABLE] else _kept_domain_key(source, cls, key_type, kept, private)
    if older is None:
        wrapped = source.wrap_key(wrapping, handle, DOMAIN_KEY_MECHANISM)
    else:  # kept under a generation the target lacks (it was re-initialised): wrapped anew
        wrapped = _rewrapped(source, cls, key_type, kept.blob, older, wrapping, private)
    return target.unwrap_key(
        unwrapping, cls, key_type, wrapped, DOMAIN_KEY_MECHANISM, {**template, **pinned, **later}
    )


def _kind(cls: int, key_type: int, private: bool = True) -> str:
    kind = kind_of(cls, key_type, private)
    if kind is None:
        raise CKRError(
            CKR_KEY_NOT_WRAPPABLE,
            "C_WrapKey",
            f"no HA domain key carries this kind of key (class {cls:#x}, key type {key_type:#x})",
        )
    return kind


def _kept_domain_key(target, cls: int, key_type: int, kept: Kept | None, private: bool = True) -> int | None:
    """The target's domain key that unwraps the kept blob, if there is a blob and it has it."""
    if kept is None or not kept.blob or kept.generation is None:
        return None
    kind = kind_of(cls, key_type, private)
    return domain_keys(target).generations.get(kept.generation, {}).get(kind) if kind else None


def _rewrapped(
    source, cls: int, key_type: int, blob: bytes, older: int, wrapping: int, private: bool = True
) -> bytes:
    """The kept blob, unwrapped on the source with the older domain key as a session key
    (sensitive, trusted-only: all that key allows) and wrapped under the one the target holds."""
    temporary = source.unwrap_key(
        older,
        cls,
        key_type,
        blob,
        DOMAIN_KEY_MECHANISM,
        {CKA_TOKEN: False, CKA_EXTRACTABLE: True, CKA_ID: TWIN_ID, **unwrap_pinned(private)},
    )
    try:
        return source.wrap_key(wrapping, temporary, DOMAIN_KEY_MECHANISM)
    finally:
        source.destroy_object(temporary)


def keep(source, handle: int, cls: int, key_type: int) -> tuple[int, bytes] | None:
    """The key (still extractable) wrapped under the source's newest domain key of its kind:
    (generation, blob) for the vault; None when no domain key carries such a key."""
    kind = kind_of(cls, key_type, bool(source.get_attributes(handle, [CKA_PRIVATE]).get(CKA_PRIVATE, True)))
    if kind is None:
        return None
    held = domain_keys(source).generations
    generations = [g for g, kinds in held.items() if kind in kinds]
    if not generations:
        return None
    generation = max(generations)
    return generation, source.wrap_key(held[generation][kind], handle, DOMAIN_KEY_MECHANISM)


def rekept(
    source, cls: int, key_type: int, blob: bytes, generation: int, was_private: bool
) -> tuple[int, bytes] | None:
    """A kept blob of a key that was not private, wrapped anew under the newest domain key for
    private keys: for a private copy of it (a domain key of the public family unwraps only into
    a key that is not private). (generation, blob), or None when the source cannot do it."""
    if was_private:
        return None
    held = domain_keys(source).generations
    older = held.get(generation, {}).get(kind_of(cls, key_type, False) or "")
    kind = kind_of(cls, key_type, True)
    generations = [g for g, kinds in held.items() if kind in kinds]
    if older is None or not generations:
        return None
    newest = max(generations)
    return newest, _rewrapped(source, cls, key_type, blob, older, held[newest][kind], False)


# the HA slot's own short-lived session keys: hidden from the application as domain keys are
TRANSPORT_ID = DOMAIN_KEY_PREFIX + b"/transport"
TWIN_ID = DOMAIN_KEY_PREFIX + b"/twin"


def _transport(source, handle: int, target, cls: int, key_type: int, template: dict[int, Any]) -> int:
    """A key its owner may wrap under any key of theirs (extractable, not wrap-with-trusted)
    goes under a session key made for this one copy on both members, then destroyed."""
    value = os.urandom(DOMAIN_KEY_BYTES)
    transport = {
        CKA_CLASS: CKO_SECRET_KEY,
        CKA_KEY_TYPE: CKK_AES,
        CKA_VALUE: value,
        # (as private as the key it carries: a key that is not private is copied with
        # no login, and anyone may wrap it anyway)
        CKA_TOKEN: False,
        CKA_PRIVATE: bool(template.get(CKA_PRIVATE, True)),
        CKA_SENSITIVE: True,
        CKA_EXTRACTABLE: False,
        CKA_WRAP: True,
        CKA_UNWRAP: True,
        CKA_ENCRYPT: False,
        CKA_DECRYPT: False,
        CKA_SIGN: False,
        CKA_VERIFY: False,
        CKA_DERIVE: False,
        CKA_ID: TRANSPORT_ID,
    }
    made: list[tuple[Any, int]] = []
    try:
        wrapping = source.create_object(transport)
        made.append((source, wrapping))
        unwrapping = target.create_object(transport)
        made.append((target, unwrapping))
        wrapped = source.wrap_key(wrapping, handle, DOMAIN_KEY_MECHANISM)
        return target.unwrap_key(unwrapping, cls, key_type, wrapped, DOMAIN_KEY_MECHANISM, template)
    finally:
        for session, key in made:
            try:
                session.destroy_object(key)
            except CKRError:
                pass  # a session key: it goes with the member session anyway


def read_facts(session, handle: int) -> dict[int, Any]:
    """What the member's object answers for vault.FACTS (those it has)."""
    try:
        found = session.get_attributes(handle, list(FACTS))
    except (CKRError, ValueError):
        found = {}
        for attribute in FACTS:
            try:
                found[attribute] = session.read_attribute(handle, attribute)
            except (CKRError, ValueError):
                continue
    return {a: v for a, v in found.items() if v is not None}


def _common_domain_key(source, target, kind: str) -> tuple[int, int, int]:
    mine, theirs = domain_keys(source), domain_keys(target)
    common = [
        g for g in mine.generations if kind in mine.generations[g] and kind in theirs.generations.get(g, {})
    ]
    if not common:
        raise CKRError(
            CKR_KEY_NOT_WRAPPABLE, "C_WrapKey", "the members hold no common HA domain key: run HA Init (50)"
        )
    generation = max(common)
    return generation, mine.generations[generation][kind], theirs.generations[generation][kind]


def _copy_clear(source, handle: int, target, cls: int, key_type: int, template: dict[int, Any]) -> int:
    """A key that is not sensitive is readable by its owner anyway: copied by value."""
    names = CLEAR_VALUES.get((cls, key_type), (CKA_VALUE,))
    values = source.get_attributes(handle, list(names))
    return target.create_object({CKA_CLASS: cls, CKA_KEY_TYPE: key_type, **template, **values})
