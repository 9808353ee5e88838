"""Synchronisation of an HA group's members: every key object on every active member (Luna's
`hagroup synchronize`), torn objects a killed writer left removed, and the completion at HA login
of keys that reached only some members."""

from __future__ import annotations

from ..codes import CKRError
from . import replication
from .failover import MemberFailed
from .comparison import replicated_objects
from .marks import is_mark_key
from .recovery import GroupView


class Synchronizer:
    """Synchronisation for one HA group, under the state lock shared with other processes."""

    def __init__(self, group: GroupView) -> None:
        self.group = group

    def synchronize(self, why: str = "synchronised") -> int:
        """Every key object on any active member is copied to the members that lack it (class,
        CKA_ID and label tell objects apart); serialised with every other process's changes,
        so running it beside a key generation never makes a duplicate."""
        refused: list[str] = []
        # the copies are a change: a member away now may lack them too (its recovery looks)
        with self.group.change() as touched:
            self.group.before_call()
            torn = self._remove_torn()
            inventory = self._inventory()
            copied = 0
            lacking: set = set()
            for target in self.group.active_members():
                have = inventory[target.serial]
                for source in self.group.active_members():
                    for key, handle in inventory[source.serial].items():
                        if key in have or not (source.active and target.active):
                            continue
                        try:
                            have[key] = replication.replicate(
                                self.group.failover.on(source),
                                handle,
                                self.group.failover.on(target),
                                self.group.vault.get(key),
                            )
                            copied += 1
                            touched.append(key)
                        except MemberFailed:
                            continue
                        except CKRError as exc:
                            refused.append(f"{key[2] or key[1].hex()} to {target.serial}: {exc.name}")
                            lacking.add(target)
            # every member serving now holds the union, or is known to lack something (journal.py)
            self.group.vouch([m for m in self.group.active_members() if m.serial in inventory], lacking)
        if copied or refused or torn:
            self.group.log.record(
                self.group.serial,
                "*",
                why,
                f"{copied} object(s) copied"
                + (
                    f"; {torn} torn object(s) removed (written by a process killed in the middle)"
                    if torn
                    else ""
                )
                + (f"; not copied: {', '.join(refused)}" if refused else ""),
            )
        return copied

    def _remove_torn(self) -> int:
        """Key objects without their key material, as SoftHSM leaves them when the process
        writing them is killed: unusable, and no member could ever copy them."""

        def remove(session, member) -> int:
            torn = session.torn_objects()  # (members/torn.py)
            for handle in torn:
                session.destroy_object(handle)
            return len(torn)

        return sum(
            removed for _, removed in self.group.failover.every("C_DestroyObject", remove, counted=False)
        )

    def incomplete(self) -> int:
        """How many key objects some active members hold and others lack."""
        with self.group.state_lock():
            inventory = self._inventory()
        everything = set().union(*inventory.values()) if inventory else set()
        return sum(1 for key in everything if any(key not in held for held in inventory.values()))

    def complete_objects(self) -> int:
        """At HA login: a key that reached only some members (a ckdemo process killed in the
        middle of a replication) is completed from a member that has it, as HASynchronize
        allows; otherwise the HA log says how many objects are incomplete."""
        try:
            if self.group.synchronize_on_recovery:
                return self.synchronize(why="completed at HA login")
            missing = self.incomplete()
            if missing:
                self.group.log.record(
                    self.group.serial,
                    "*",
                    "incomplete",
                    f"{missing} object(s) on some members only (HASynchronize off: "
                    "`ckdemo hagroup synchronize` copies them)",
                )
        except CKRError as exc:
            self.group.log.record(self.group.serial, "*", "incomplete", f"could not complete objects: {exc}")
        return 0

    def _inventory(self) -> dict[str, dict[tuple, int]]:
        def held(session, member) -> dict[tuple, int]:
            return {
                key: h
                for key, h in (
                    (replication.object_key(replication.identity(session, h)), h)
                    for h in replicated_objects(session)
                )
                if not replication.is_domain_key_id(key[1]) and not is_mark_key(key)
            }

        return {
            member.serial: found
            for member, found in self.group.failover.every("C_FindObjects", held, counted=False)
        }
