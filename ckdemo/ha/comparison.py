"""The full comparison of a member that comes back with a serving member: every key and data
object on both, a few calls each (what recovery did before the journal, and still does when the
journal cannot prove where the member stands: recovery.py, journal.py).

It runs off the application's calls with no lock held, as any catch-up of a member that comes
back (rejoin.py): the changes made during it are then caught up from the journal, and only
then does the member serve again.
"""

from __future__ import annotations


from ..codes import CKR_DEVICE_ERROR, CKRError
from ..model import CKA_CLASS, CKA_ID, CKO_DATA, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY
from . import replication
from .marks import is_mark
from .member import HAMember


KEY_CLASSES = (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY)


def replicated_objects(session) -> list[int]:
    """What every member holds alike: the keys (each has a CKA_ID: the HA slot gives one to a
    key made without) and the data objects (the group's mark among them: callers leave it out)."""
    handles = []
    for cls in KEY_CLASSES:
        handles.extend(session.find_objects({CKA_CLASS: cls}))
    keys = [h for h in handles if session.get_attributes(h, [CKA_ID]).get(CKA_ID)]
    return keys + list(session.find_objects({CKA_CLASS: CKO_DATA}))


def compare_in_full(group, source: HAMember, target: HAMember, why: str) -> None:
    """Every key and data object on the source and on the member, compared (a few calls
    each): copied when the member lacks it, destroyed when the source has it no more, replaced
    when the member holds another key under the same name."""
    src, dst = group.session_for(source), target.anchor
    theirs = _identities(src)
    mine = _identities(dst)
    have = {replication.object_key(ident): h for h, ident in theirs.items()}
    held = {replication.object_key(ident): h for h, ident in mine.items()}
    # keys it generated and failed before copying them: another member made the application's
    # (a fingerprint cannot tell an unextractable secret key from another: this can)
    orphans = group.orphans.get(target.serial, set())
    orphaned = {key for key in orphans if key in held and key in have}
    replaced = _diverged(src, have, theirs, dst, held, mine) | orphaned
    for key in replaced:
        dst.destroy_object(held.pop(key))  # another key under the same name: copied anew
    copied = [k for k in have if k not in held and not replication.is_domain_key_id(k[1])]
    removed = [k for k in held if k not in have and not replication.is_domain_key_id(k[1])]
    refused = []
    for key in copied:
        try:
            replication.replicate(src, have[key], dst, group.vault.get(key))
        except CKRError as exc:
            if group.is_member_failure(exc):
                raise
            refused.append(f"{key[2] or key[1].hex()}: {exc.name}")
    for key in removed:
        dst.destroy_object(held[key])
    if replaced or removed:  # handles of this member kept by sessions name objects gone now
        target.generation += 1
    if copied or removed:
        group.log.record(
            group.serial,
            target.serial,
            "resynchronised",
            f"{len(copied) - len(refused)} object(s) copied, {len(removed)} destroyed"
            + (
                f" ({len(replaced)} of the copies replace another key under the same class, CKA_ID and label)"
                if replaced
                else ""
            )
            + (f"; not copied: {', '.join(refused)}" if refused else "")
            + f" (full comparison: {why})",
        )
    if refused:  # never in service without an object the others have: held out, said why
        raise held_out(refused)


def held_out(refused: list[str]) -> CKRError:
    """A member that could not be given every object the others have: the attempt fails."""
    return CKRError(
        CKR_DEVICE_ERROR,
        "C_UnwrapKey",
        f"held out of service: {len(refused)} object(s) the other members have could not be "
        f"copied to it ({', '.join(refused)})",
    )


def _identities(session) -> dict[int, dict]:
    """Handle -> identity of every key and data object the member session sees but the group's
    own mark."""
    found = {}
    for handle in replicated_objects(session):
        ident = replication.identity(session, handle)
        if not is_mark(ident):
            found[handle] = ident
    return found


def _diverged(src, have: dict, theirs: dict, dst, held: dict, mine: dict) -> set[tuple]:
    """Objects with the same class, CKA_ID and label but another key: what a member keeps
    of a key generation that failed over while it went down (it generated, then died
    before its key was copied; another member generated the key the application got)."""
    diverged = set()
    for key in have.keys() & held.keys():
        if replication.is_domain_key_id(key[1]):
            continue
        value = replication.fingerprint(src, have[key], theirs[have[key]])
        if value is not None and value != replication.fingerprint(dst, held[key], mine[held[key]]):
            diverged.add(key)
    for cls, key_id, label in list(diverged):  # an EC private key goes with its public key
        if cls == CKO_PUBLIC_KEY and (CKO_PRIVATE_KEY, key_id, label) in held:
            diverged.add((CKO_PRIVATE_KEY, key_id, label))
    return diverged
