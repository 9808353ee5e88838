"""Bringing a member up to date on given objects only: those the journal says were touched
while it was away (journal.py). Each identity is made on the member as it is on the source,
whatever happened to it meanwhile and in whatever order: copied when the member lacks it,
destroyed when the source has it no more, replaced when the member holds another key under
the same name (a fingerprint tells), and its changeable attributes set as the source's. So a
change replayed twice, or one the member took before it failed, changes nothing.

The cost is a few calls per identity touched, whatever the group holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..codes import CKR_ATTRIBUTE_TYPE_INVALID, CKRError
from ..model import (
    CKA_APPLICATION,
    CKA_OBJECT_ID,
    CKA_EXTRACTABLE,
    CKA_ID,
    CKA_TRUSTED,
    CKA_SENSITIVE,
    CKA_TOKEN,
    CKO_DATA,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
)
from . import replication
from .marks import is_mark
from .vault import Vault

# attributes an application may change on an object that exists: set on the member as the
# source has them (one-way ones only in their one way: a token refuses the other)
CHANGEABLE = {cls: tuple(attrs) for cls, attrs in replication.CAPABILITIES.items()}
CHANGEABLE[CKO_DATA] = (CKA_APPLICATION, CKA_OBJECT_ID)
ONE_WAY = {CKA_EXTRACTABLE: False, CKA_SENSITIVE: True}  # the only value each may be set to


@dataclass
class Outcome:
    copied: int = 0
    destroyed: int = 0
    replaced: int = 0  # of the copies: another key under the same name on the member before
    updated: int = 0  # objects whose attributes were set as the source's
    refused: list[str] = field(default_factory=list)  # "name: CKR_..." not copied
    not_copied: set[tuple] = field(default_factory=set)  # their identities

    @property
    def changed(self) -> bool:
        return bool(self.copied or self.destroyed or self.updated or self.refused)


def catch_up(
    src,
    dst,
    keys: Iterable[tuple],
    vault: Vault,
    replace: set[tuple] = frozenset(),
    is_member_failure: Callable[[CKRError], bool] = lambda exc: True,
) -> Outcome:
    """Make every identity in `keys` on `dst` as it is on `src` (member sessions). `replace`:
    identities whose copy on the member is another key whatever a fingerprint says (a key it
    generated and failed before copying)."""
    outcome = Outcome()
    src, dst = _DomainKeysOnce(src), _DomainKeysOnce(dst)
    keys = [k for k in keys if not replication.is_domain_key_id(k[1])]
    pending: dict[tuple, int] = {}  # identity -> source handle: what the member must get
    both: dict[tuple, tuple[int, int]] = {}  # identity -> (source handle, member handle)
    for key in keys:
        theirs, mine = _find(src, key), _find(dst, key)
        if theirs is None:
            if mine is not None:
                dst.destroy_object(mine)
                outcome.destroyed += 1
        elif mine is None:
            pending[key] = theirs
        elif key in replace or _differs(src, theirs, dst, mine, key):
            dst.destroy_object(mine)
            outcome.replaced += 1
            pending[key] = theirs
        else:
            both[key] = (theirs, mine)
    for cls, key_id, label in list(pending):  # an EC private key goes with its public key
        private = (CKO_PRIVATE_KEY, key_id, label)
        if cls == CKO_PUBLIC_KEY and private in both:
            theirs, mine = both.pop(private)
            dst.destroy_object(mine)
            outcome.replaced += 1
            pending[private] = theirs
    for key, (theirs, mine) in both.items():
        if _align(src, theirs, dst, mine, key[0], is_member_failure):
            outcome.updated += 1
    for key, handle in pending.items():
        try:
            # (again: the member was searched above; it lacks the object)
            replication.replicate(src, handle, dst, vault.get(key), again=True)
            outcome.copied += 1
        except CKRError as exc:
            if is_member_failure(exc):
                raise
            outcome.refused.append(f"{key[2] or key[1].hex()}: {exc.name}")
            outcome.not_copied.add(key)
    return outcome


class _DomainKeysOnce:
    """A member session whose domain keys (replication.domain_keys: a search and a read of
    each) are looked up once for a whole catch-up instead of once for every key copied: they
    cannot change meanwhile (the state lock is held, and a domain key is not destroyable)."""

    def __init__(self, session) -> None:
        self._session = session
        self._found: dict[tuple, list[int]] = {}
        self._ids: dict[int, dict] = {}

    def find_objects(self, template: dict[int, Any]) -> list[int]:
        if CKA_TRUSTED not in template:
            return self._session.find_objects(template)
        key = tuple(sorted(template.items()))
        if key not in self._found:
            self._found[key] = self._session.find_objects(template)
        return self._found[key]

    def get_attributes(self, handle: int, attributes: list[int]) -> dict[int, Any]:
        if attributes != [CKA_ID] or not any(handle in found for found in self._found.values()):
            return self._session.get_attributes(handle, attributes)
        if handle not in self._ids:
            self._ids[handle] = self._session.get_attributes(handle, attributes)
        return self._ids[handle]

    def __getattr__(self, name: str):
        return getattr(self._session, name)


def session_objects(session) -> list[tuple]:
    """The identities of the session objects a member session sees (a member that failed lost
    its own with its sessions: they are copied again whatever the journal says)."""
    found = []
    for handle in session.find_objects({CKA_TOKEN: False}):
        ident = replication.identity(session, handle)
        if not is_mark(ident) and not replication.is_domain_key_id(ident.get(replication.CKA_ID)):
            found.append(replication.object_key(ident))
    return found


def _find(session, key: tuple) -> int | None:
    found = _found(session, key)
    return found[0] if found else None


def _found(session, key: tuple) -> list[int]:
    found = session.find_objects(replication.search_template(key))
    if not key[2] and key[0] != CKO_DATA:  # no label searched: objects with one are others
        found = [h for h in found if replication.object_key(replication.identity(session, h)) == key]
    return found


def settle_orphans(src, dst, keys: Iterable[tuple], vault: Vault) -> int:
    """Keys a member generated while it was late (its orphans) may land after the catch-up has
    replaced them: a server stopped in the middle of C_GenerateKey makes the key when it runs
    again, then finds its client gone. Called once such an answer had time to land: a member
    holding an orphan's identity twice keeps the copy alike to the source's (by fingerprint),
    or, when no fingerprint can tell, is given the source's again. Returns the keys destroyed."""
    destroyed = 0
    for key in keys:
        mine = _found(dst, key)
        if len(mine) < 2:
            continue
        theirs = _find(src, key)
        value = (
            None
            if theirs is None
            else replication.fingerprint(src, theirs, replication.identity(src, theirs))
        )
        alike = [
            h
            for h in mine
            if value is not None and replication.fingerprint(dst, h, replication.identity(dst, h)) == value
        ]
        for handle in mine if not alike else [h for h in mine if h != alike[0]]:
            dst.destroy_object(handle)
            destroyed += 1
        if not alike and theirs is not None:
            replication.replicate(src, theirs, dst, vault.get(key), again=True)
    return destroyed


def _differs(src, theirs: int, dst, mine: int, key: tuple) -> bool:
    """Another key under the same class, CKA_ID and label (destroyed and made anew meanwhile)."""
    if key[0] == CKO_DATA:
        return False  # its value is its name: found means the same
    ident = replication.identity(src, theirs)
    value = replication.fingerprint(src, theirs, ident)
    return value is not None and value != replication.fingerprint(dst, mine, replication.identity(dst, mine))


def _align(src, theirs: int, dst, mine: int, cls: int, is_member_failure) -> bool:
    """Set the member's changeable attributes as the source's; True when one was set."""
    attributes = CHANGEABLE.get(cls, ())
    wanted, have = _read(src, theirs, attributes), _read(dst, mine, attributes)
    if cls in (CKO_PRIVATE_KEY, CKO_SECRET_KEY):
        flags = list(ONE_WAY)
        wanted.update({a: v for a, v in _read(src, theirs, flags).items() if _plain(v) == _plain(ONE_WAY[a])})
        have.update(_read(dst, mine, flags))
    changed = False
    for attribute, value in wanted.items():
        if attribute in have and _plain(have[attribute]) == _plain(value):
            continue
        try:
            dst.set_attributes(mine, {attribute: value})
            changed = True
        except CKRError as exc:
            if is_member_failure(exc):
                raise
            # a value this copy cannot take (made so from the blob, kept by the record): as is
    return changed


def _read(session, handle: int, attributes) -> dict[int, Any]:
    try:
        return session.get_attributes(handle, list(attributes))
    except CKRError as exc:
        if exc.ckr != CKR_ATTRIBUTE_TYPE_INVALID and exc.ckr not in replication.UNREADABLE:
            raise
    values = {}  # one by one: what this object has
    for attribute in attributes:
        try:
            values[attribute] = session.get_attributes(handle, [attribute])[attribute]
        except CKRError as exc:
            if exc.ckr != CKR_ATTRIBUTE_TYPE_INVALID and exc.ckr not in replication.UNREADABLE:
                raise
    return values


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, bool):
        return int(value)
    return value
