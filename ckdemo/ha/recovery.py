"""The seed's detection and auto-recovery, inside every call on the HA slot (a mixin of HAGroup):
a member that fails is disconnected; at the start of a later call, once the policy says so, it is
reconnected, checked to be the same token, logged in again and brought up to date.
"""
from __future__ import annotations

from ..codes import CREDENTIALS_REJECTED, CKR_DEVICE_ERROR, CKR_USER_ALREADY_LOGGED_IN, CKRError
from ..model import CKA_CLASS, CKA_ID, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY
from . import replication
from .cleanup import close_quietly
from .failover import MemberFailed
from .member import HAMember, MemberState

KEY_CLASSES = (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY)


class MemberRejected(Exception):
    """A member came back but must not rejoin silently (another token, or an emptied one)."""


class Recovery:
    """Detection and recovery for HAGroup (uses its members, policy, log and sessions)."""

    def before_call(self) -> None:
        if all(m.active for m in self.members):
            return  # the common case costs one pass and no lock
        if not any(self._due(m) for m in self.members):
            return
        with self.state_lock(), self._lock:
            self._recover_due()

    def _due(self, member: HAMember) -> bool:
        recovery = member.recovery
        return member.state in (MemberState.FAILED, MemberState.DOWN) and recovery is not None \
            and self.policy.due(recovery)

    def _recover_due(self) -> None:
        for member in self.members:
            if self._due(member):
                self._attempt_recovery(member)

    def recover_now(self) -> list[tuple[HAMember, bool]]:
        """Manual recovery (Luna: `hagroup recover`): every member that is down is tried now,
        whatever X and N say; a success resets its counters as an automatic one does."""
        tried = []
        with self.state_lock(), self._lock:
            for member in self.members:
                if member.state in (MemberState.FAILED, MemberState.DOWN) and member.recovery:
                    self._attempt_recovery(member)
                    tried.append((member, member.active))
        return tried

    def member_failed(self, member: HAMember, error: CKRError) -> None:
        with self._lock:
            if not member.active:
                return
            member.last_error = error
            self._disconnect(member, f"{error.function} returned {error.name}"
                             + (f": {error.detail}" if error.detail else ""))

    def _disconnect(self, member: HAMember, why: str) -> None:
        self.slot_events += 1
        member.state = MemberState.FAILED
        member.recovery = self.policy.disconnected()
        member.generation += 1  # sessions and handles from before are void (FACTS 3)
        member.anchor = None
        self.log.record(self.serial, member.serial, "failed", why)

    def _attempt_recovery(self, member: HAMember) -> None:
        assert member.recovery is not None
        attempt = member.recovery.recover_attempt_count + 1
        try:
            self._reconnect(member)
        except CKRError as exc:
            self.policy.attempted(member.recovery, recovered=False)
            self.log.record(self.serial, member.serial, "recovery-attempt",
                            f"#{attempt} failed: {exc}")
            return
        except MemberRejected as exc:
            self.policy.attempted(member.recovery, recovered=False)
            member.state = MemberState.REJECTED
            self.log.record(self.serial, member.serial, "rejected", str(exc))
            return
        self.policy.attempted(member.recovery, recovered=True)
        member.state = MemberState.ACTIVE
        member.recovery = None
        self.log.record(self.serial, member.serial, "recovered", f"after {attempt} attempt(s)")
        self.slot_events += 1

    def _reconnect(self, member: HAMember) -> None:
        if member.slot is None:
            raise CKRError(CKR_DEVICE_ERROR, "C_GetSlotList", "member slot not found")
        member.slot.reconnect(member.serial)  # re-initialises a member's own module only
        info = member.slot.token_info()
        if info.serial_number != member.serial:
            raise MemberRejected(f"slot now holds token {info.serial_number}, not {member.serial}")
        anchor = member.slot.open_session(rw=True)
        try:
            # the domain key is a public object: checked before any login, so an emptied token
            # (no user PIN) is recognised as such and not retried forever
            source = self._source_member(exclude=member)
            wanted = replication.domain_keys(self._session(source)).current if source else None
            if wanted is not None and wanted not in replication.domain_keys(anchor).complete:
                raise MemberRejected(f"came back without the HA domain keys (generation {wanted}; "
                                     "token re-initialised?): run HA Init (50) to admit it again")
            if self.credentials:
                try:
                    anchor.login(*self.credentials)
                except CKRError as exc:
                    if exc.ckr in CREDENTIALS_REJECTED:
                        raise MemberRejected(f"the HA login is refused there ({exc.name})") from None
                    if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                        raise
            member.anchor = anchor
            if source is not None and self.synchronize_on_recovery:
                self._resynchronise(source, member)
        except BaseException:
            member.anchor = None
            close_quietly(anchor)
            raise

    def _resynchronise(self, source: HAMember, target: HAMember) -> None:
        """Copy objects created while the member was away; destroy those destroyed meanwhile."""
        src, dst = self._session(source), target.anchor
        have = {replication.object_key(replication.identity(src, h)): h for h in _keys(src)}
        held = {replication.object_key(replication.identity(dst, h)): h for h in _keys(dst)}
        copied = [k for k in have if k not in held and not replication.is_domain_key_id(k[1])]
        removed = [k for k in held if k not in have and not replication.is_domain_key_id(k[1])]
        refused = []
        for key in copied:
            try:
                replication.replicate(src, have[key], dst)
            except CKRError as exc:
                if self.is_member_failure(exc):
                    raise
                refused.append(f"{key[2] or key[1].hex()}: {exc.name}")
        for key in removed:
            dst.destroy_object(held[key])
        if copied or removed:
            self.log.record(self.serial, target.serial, "resynchronised",
                            f"{len(copied) - len(refused)} object(s) copied, {len(removed)} destroyed"
                            + (f"; not copied (calls needing them go to other members): "
                               f"{', '.join(refused)}" if refused else ""))

    def synchronize(self, why: str = "synchronised") -> int:
        """Every key object on any active member is copied to the members that lack it (class,
        CKA_ID and label tell objects apart); serialised with every other process's changes,
        so running it beside a key generation never makes a duplicate."""
        refused: list[str] = []
        with self.state_lock():
            self.before_call()
            torn = self._remove_torn()
            inventory = self._inventory()
            copied = 0
            for target in self.active_members():
                have = inventory[target.serial]
                for source in self.active_members():
                    for key, handle in inventory[source.serial].items():
                        if key in have or not (source.active and target.active):
                            continue
                        try:
                            have[key] = self.call_member(target, lambda: replication.replicate(
                                self._session(source), handle, self._session(target)))
                            copied += 1
                        except MemberFailed:
                            continue
                        except CKRError as exc:
                            refused.append(f"{key[2] or key[1].hex()} to {target.serial}: {exc.name}")
        if copied or refused or torn:
            self.log.record(self.serial, "*", why, f"{copied} object(s) copied"
                            + (f"; {torn} torn object(s) removed (written by a process killed "
                               "in the middle)" if torn else "")
                            + (f"; not copied: {', '.join(refused)}" if refused else ""))
        return copied

    def _remove_torn(self) -> int:
        """Key objects without their key material, as SoftHSM leaves them when the process
        writing them is killed: unusable, and no member could ever copy them."""
        removed = 0
        for member in self.active_members():
            session = self._session(member)
            for handle in replication.torn_objects(session):
                session.destroy_object(handle)
                removed += 1
        return removed

    def incomplete(self) -> int:
        """How many key objects some active members hold and others lack."""
        with self.state_lock():
            inventory = self._inventory()
        everything = set().union(*inventory.values()) if inventory else set()
        return sum(1 for key in everything if any(key not in held for held in inventory.values()))

    def complete_objects(self) -> int:
        """At HA login: a key that reached only some members (a ckdemo process killed in the
        middle of a replication) is completed from a member that has it, as HASynchronize
        allows; otherwise the HA log says how many objects are incomplete."""
        try:
            if self.synchronize_on_recovery:
                return self.synchronize(why="completed at HA login")
            missing = self.incomplete()
            if missing:
                self.log.record(self.serial, "*", "incomplete",
                                f"{missing} object(s) on some members only (HASynchronize off: "
                                "`ckdemo hagroup synchronize` copies them)")
        except CKRError as exc:
            self.log.record(self.serial, "*", "incomplete", f"could not complete objects: {exc}")
        return 0

    def _inventory(self) -> dict[str, dict[tuple, int]]:
        inventory = {}
        for member in self.active_members():
            session = self._session(member)
            inventory[member.serial] = {
                key: h for key, h in ((replication.object_key(replication.identity(session, h)), h)
                                      for h in _keys(session))
                if not replication.is_domain_key_id(key[1])}
        return inventory


def _keys(session) -> list[int]:
    handles = []
    for cls in KEY_CLASSES:
        handles.extend(session.find_objects({CKA_CLASS: cls}))
    return [h for h in handles if session.get_attributes(h, [CKA_ID]).get(CKA_ID)]
