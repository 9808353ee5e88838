"""The HA virtual slot: load balancing, failover, detection and auto-recovery over members.

It offers the operations of a physical slot, so a handler cannot tell the two apart. Nothing
here knows the menu or python-pkcs11: members are physical slots from ckdemo.members.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

from ..codes import (CREDENTIALS_REJECTED, CKR_DEVICE_ERROR, CKR_MECHANISM_INVALID, CKR_FUNCTION_NOT_SUPPORTED, CKR_NO_EVENT, CKR_OK,
                     CKR_USER_ALREADY_LOGGED_IN, CKR_USER_NOT_LOGGED_IN, SESSION_LOST, CKRError,
                     is_member_fatal)
from ..model import (CKA_CLASS, CKA_ID, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY, CKU_SO,
                     LibraryInfo, MechanismInfo, SlotInfo, TokenInfo)
from . import replication
from .events import HALog
from .member import HAMember, MemberState
from .policy import RecoveryPolicy

T = TypeVar("T")
HA_SLOT_DESCRIPTION = "HA Virtual Card Slot"  # seed: "slot#3 - HA Virtual Card Slot"
KEY_CLASSES = (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY)
CKF_USER_PIN_INITIALIZED = 0x8


class HAGroup:
    is_virtual = True
    fallback_description = HA_SLOT_DESCRIPTION

    def __init__(self, label: str, serial: str, members: list[HAMember], policy: RecoveryPolicy,
                 log: HALog | None = None, slot_id: int = 0, balance: bool = True) -> None:
        self.label = label
        self.serial = serial
        self.members = members
        self.policy = policy
        self.log = log or HALog()
        self.slot_id = slot_id
        self.balance = balance  # False: every call goes to the first active member (CKDemo nolb)
        self.credentials: tuple[int, str] | None = None  # HA login, kept in memory only
        self.sessions: dict[int, Any] = {}
        self._next_session = 1
        self._next_object = 1
        self._next_member = 0
        self._lock = threading.RLock()  # member state, round robin and anchors across threads
        for index, member in enumerate(members):
            member.index = index
            if not member.active:
                self._disconnect(member, "not found at start")

    # ---- the seed: detection and recovery inside every call ---------------------------------
    def before_call(self) -> None:
        if all(m.active for m in self.members):
            return  # the common case costs one pass and no lock
        with self._lock:
            self._recover_due()

    def _recover_due(self) -> None:
        for member in self.members:
            if member.state in (MemberState.FAILED, MemberState.DOWN) and member.recovery \
                    and self.policy.due(member.recovery):
                self._attempt_recovery(member)

    def member_failed(self, member: HAMember, error: CKRError) -> None:
        with self._lock:
            if not member.active:
                return
            member.last_error = error
            self._disconnect(member, f"{error.function} returned {error.name}"
                             + (f": {error.detail}" if error.detail else ""))

    def _disconnect(self, member: HAMember, why: str) -> None:
        member.state = MemberState.FAILED
        member.recovery = self.policy.disconnected()
        member.generation += 1  # sessions and handles from before are void (FACTS 3)
        member.anchor = None
        self.log.record(self.serial, member.serial, "failed", why)

    def _attempt_recovery(self, member: HAMember) -> None:
        assert member.recovery is not None
        attempt = member.recovery.recover_attempt_count + 1
        try:
            self._on_member(member, lambda: self._reconnect(member))
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
            if source is not None and replication.find_domain_key(self._session(source)) is not None \
                    and replication.find_domain_key(anchor) is None:
                raise MemberRejected("came back without the HA domain key (token re-initialised?): "
                                     "run HA Init (50) to admit it again")
            if self.credentials:
                try:
                    anchor.login(*self.credentials)
                except CKRError as exc:
                    if exc.ckr in CREDENTIALS_REJECTED:
                        raise MemberRejected(f"the HA login is refused there ({exc.name})") from None
                    if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                        raise
            member.anchor = anchor
            if source is not None:
                self._resynchronise(source, member)
        except BaseException:
            member.anchor = None
            _close_quietly(anchor)
            raise

    def _resynchronise(self, source: HAMember, target: HAMember) -> None:
        """Copy objects created while the member was away; destroy those destroyed meanwhile."""
        src, dst = self._session(source), target.anchor
        have = {replication.object_key(replication.identity(src, h)): h for h in _keys(src)}
        held = {replication.object_key(replication.identity(dst, h)): h for h in _keys(dst)}
        copied = [k for k in have if k not in held and k[1] != replication.DOMAIN_KEY_ID]
        removed = [k for k in held if k not in have and k[1] != replication.DOMAIN_KEY_ID]
        refused = []
        for key in copied:
            try:
                replication.replicate(src, have[key], dst)
            except CKRError as exc:
                if self._is_member_failure(exc):
                    raise
                refused.append(f"{key[2] or key[1].hex()}: {exc.name}")
        for key in removed:
            dst.destroy_object(held[key])
        if copied or removed:
            self.log.record(self.serial, target.serial, "resynchronised",
                            f"{len(copied) - len(refused)} object(s) copied, {len(removed)} destroyed"
                            + (f"; not copied (calls needing them go to other members): "
                               f"{', '.join(refused)}" if refused else ""))

    def synchronize(self) -> int:
        """Every key object on any active member is copied to the members that lack it."""
        self.before_call()
        inventory = {}
        for member in self.active_members():
            session = self._session(member)
            inventory[member.serial] = {
                replication.object_key(replication.identity(session, h)): h for h in _keys(session)}
        copied = 0
        for target in self.active_members():
            have = inventory[target.serial]
            for source in self.active_members():
                for key, handle in inventory[source.serial].items():
                    if key not in have and key[1] != replication.DOMAIN_KEY_ID:
                        have[key] = replication.replicate(self._session(source), handle,
                                                          self._session(target))
                        copied += 1
        if copied:
            self.log.record(self.serial, "*", "synchronised", f"{copied} object(s) copied")
        return copied

    # ---- choosing members and running calls with failover -----------------------------------
    def active_members(self) -> list[HAMember]:
        return [m for m in self.members if m.active]

    def primary(self) -> HAMember:
        self.before_call()
        active = self.active_members()
        if not active:
            raise CKRError(CKR_DEVICE_ERROR, "HA", "no HA group member is available")
        return active[0]

    def _source_member(self, exclude: HAMember) -> HAMember | None:
        for member in self.active_members():
            if member is not exclude:
                return member
        return None

    def _pick(self, candidates: list[HAMember]) -> HAMember:
        """Least-busy round robin (as Luna HA): the member with the fewest calls in flight, ties
        broken in turn. One caller thread gets plain round robin; several spread out."""
        if not self.balance or len(candidates) == 1:
            chosen = candidates[0]
            with self._lock:
                chosen.outstanding += 1
            return chosen
        with self._lock:
            count = len(self.members)
            chosen = min(candidates, key=lambda m: (m.outstanding,
                                                    (m.index - self._next_member) % count))
            self._next_member = (chosen.index + 1) % count
            chosen.outstanding += 1
        return chosen

    def _done(self, member: HAMember) -> None:
        with self._lock:
            member.outstanding -= 1

    def run(self, function: str, op: Callable[[HAMember], T], mechanism: int | None = None,
            exclude: list[HAMember] = ()) -> T:
        """A single-part call on one member, repeated on another when the member fails.

        A member that refuses the mechanism (a remote member's transport cannot carry its
        parameters) is not failed: the call goes to a member that can, and that member is
        skipped for the mechanism from then on."""
        self.before_call()
        errors: list[str] = []
        refused: list[HAMember] = []
        missing: list[HAMember] = []
        while True:
            active = [m for m in self.active_members() if m not in exclude]
            candidates = [m for m in active if m not in refused and m not in missing
                          and mechanism not in m.refused]
            if not candidates and mechanism is not None and not refused:
                candidates = active  # every member refused it before: ask again, things change
            if not candidates:
                if refused:
                    raise refused_error
                detail = "no HA group member is available" + (f" ({'; '.join(errors)})" if errors else "")
                raise CKRError(CKR_DEVICE_ERROR, function, detail)
            member = self._pick(candidates)
            try:
                result = self._on_member(member, lambda: op(member))
            except CKRError as exc:
                if self._is_member_failure(exc):
                    self.member_failed(member, exc)
                    errors.append(f"{member.serial}: {exc.name}")
                    continue
                if exc.ckr == CKR_MECHANISM_INVALID and mechanism is not None:
                    refused.append(member)
                    refused_error = exc
                    continue
                if isinstance(exc, ObjectMissing):
                    missing.append(member)
                    if len(missing) < len(active):
                        continue
                raise
            finally:
                self._done(member)
            member.calls += 1
            if refused:
                for other in refused:
                    other.refused.add(mechanism)
            return result

    def on_all(self, function: str, op: Callable[[HAMember], T]) -> list[tuple[HAMember, T]]:
        """A key-management call on every active member; a member failure fails only the member."""
        self.before_call()
        done = []
        for member in self.active_members():
            try:
                done.append((member, self._on_member(member, lambda: op(member))))
            except CKRError as exc:
                if not self._is_member_failure(exc):
                    raise
                self.member_failed(member, exc)
            member.calls += 1
        if not done:
            raise CKRError(CKR_DEVICE_ERROR, function, "no HA group member is available")
        return done

    @staticmethod
    def _on_member(member: HAMember, fn: Callable[[], T]) -> T:
        """The call on the member's watchdog worker when it has one (remote members)."""
        if member.worker is None:
            return fn()
        return member.worker.call(member.serial, fn)

    def _is_member_failure(self, exc: CKRError) -> bool:
        if is_member_fatal(exc.ckr):
            return True
        # a member that forgot our sessions or login was restarted behind our back
        return exc.ckr in SESSION_LOST and (exc.ckr != CKR_USER_NOT_LOGGED_IN or bool(self.credentials))

    def _session(self, member: HAMember):
        """The member's anchor session (opened on demand; it carries the login)."""
        anchor = member.anchor
        if anchor is not None:
            return anchor
        with self._lock:
            if member.anchor is not None:
                return member.anchor
            member.anchor = member.slot.open_session(rw=True)
            if self.credentials:
                try:
                    member.anchor.login(*self.credentials)
                except CKRError as exc:
                    if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                        raise
        return member.anchor

    # ---- HA functions (menu 50-52, fault injection) --------------------------------------------
    def ha_init(self, so_pin: str) -> list[str]:
        """Put the domain key on every reachable member (one SO login each) and admit members
        that were rejected. When some member lacks the key while others hold it, a new key
        replaces it everywhere: the old value cannot leave its members, and keys already on the
        members are stored by them, not wrapped, so nothing depends on the old one."""
        self.before_call()
        targets = [m for m in self.members if m.active or m.state is MemberState.REJECTED]
        if not targets:
            raise CKRError(CKR_DEVICE_ERROR, "HA Init", "no HA group member is available")
        credentials = self.credentials
        if credentials:  # an SO login needs the user logged out of the token (PKCS#11)
            self.logout()
        try:
            present = {m.serial: self._has_domain_key(m) for m in targets}
            rotate = any(present.values()) and not all(present.values())
            value = None
            changed = []
            for member in targets:
                if present[member.serial] and not rotate:
                    continue
                session = member.slot.open_session(rw=True)
                try:
                    session.login(CKU_SO, so_pin)
                    try:
                        value = value or session.generate_random(replication.DOMAIN_KEY_BYTES)
                        old = replication.find_domain_key(session)
                        if old is not None:
                            session.destroy_object(old)
                        session.create_object(replication.domain_key_template(value))
                        if credentials and not member.slot.token_info().flags & CKF_USER_PIN_INITIALIZED:
                            session.init_pin(credentials[1])  # an emptied token gets the HA PIN
                        changed.append(member.serial)
                    finally:
                        _logout_quietly(session)
                finally:
                    _close_quietly(session)
            value = None
        finally:
            if credentials:
                self.login(*credentials)
        for member in targets:
            if member.state is MemberState.REJECTED:  # taken back by the next call's recovery
                member.state = MemberState.DOWN
                member.recovery = self.policy.disconnected()
                member.recovery.last_recover_attempt -= self.policy.interval_s + 1
                self.log.record(self.serial, member.serial, "readmitted", "by HA Init")
        if changed:
            self.log.record(self.serial, ",".join(changed), "domain-key",
                            "replaced on every member" if rotate else "created")
        return changed

    def _has_domain_key(self, member: HAMember) -> bool:
        session = member.slot.open_session(rw=False)
        try:
            return replication.find_domain_key(session) is not None
        finally:
            _close_quietly(session)

    def login(self, user_type: int, pin: str) -> None:
        """Log in on every active member with one PIN (HA Login / C_Login on the HA slot)."""
        self.before_call()
        done = []
        for member in self.active_members():
            try:
                self._on_member(member, lambda: self._session(member).login(user_type, pin))
            except CKRError as exc:
                if exc.ckr == CKR_USER_ALREADY_LOGGED_IN and self.credentials is None:
                    pass  # already logged in by a physical-slot session of ours: same state
                elif self._is_member_failure(exc):
                    self.member_failed(member, exc)
                    continue
                else:
                    for other in done:
                        _logout_quietly(other.anchor)
                    raise
            done.append(member)
        if not done:
            raise CKRError(CKR_DEVICE_ERROR, "C_Login", "no HA group member is available")
        self.credentials = (user_type, pin)

    def logout(self) -> None:
        self.before_call()
        if self.credentials is None:
            raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_Logout")
        self.credentials = None
        for member in self.active_members():
            if member.anchor is not None:
                _logout_quietly(member.anchor)

    def status(self) -> list[tuple[HAMember, int]]:
        """Seed: a failed member shows CKR_DEVICE_ERROR once, then CKR_TOKEN_NOT_PRESENT."""
        self.before_call()
        report = []
        for member in self.members:
            if member.active:
                try:
                    self._on_member(member, member.slot.token_info)
                except CKRError as exc:
                    if self._is_member_failure(exc):
                        self.member_failed(member, exc)
            report.append((member, member.status_code()))
            if member.state is MemberState.FAILED:
                member.state = MemberState.DOWN
        return report

    def member(self, ref: str) -> HAMember:
        """A member by number in the group (1-based), token label or serial."""
        for number, member in enumerate(self.members, start=1):
            if ref in (str(number), member.serial, member.label):
                return member
        raise KeyError(ref)

    def fail_member(self, member: HAMember) -> str:
        """Fault injection: how the member was failed, in words."""
        return member.slot.fail()

    def restore_member(self, member: HAMember) -> str:
        return member.slot.restore()

    def hang_member(self, member: HAMember) -> str:
        return member.slot.hang()

    def resume_member(self, member: HAMember) -> str:
        return member.slot.resume()

    # ---- the slot interface --------------------------------------------------------------------
    def description(self) -> str:
        return HA_SLOT_DESCRIPTION

    def slot_info(self) -> SlotInfo:
        self.before_call()
        return SlotInfo(self.slot_id, HA_SLOT_DESCRIPTION, "ckdemo HA", 0x1, ("CKF_TOKEN_PRESENT",),
                        (1, 0), (1, 0))

    def token_info(self) -> TokenInfo:
        info = self.run("C_GetTokenInfo", lambda m: m.slot.token_info())
        rw = sum(1 for s in self.sessions.values() if s.rw)
        return TokenInfo(self.label, "ckdemo HA", "HA virtual token", self.serial, info.flags,
                         info.flag_names, info.max_session_count, len(self.sessions),
                         info.max_rw_session_count, rw, info.max_pin_len, info.min_pin_len,
                         info.total_public_memory, info.free_public_memory,
                         info.total_private_memory, info.free_private_memory,
                         info.hardware_version, info.firmware_version, info.utc_time)

    def mechanisms(self) -> list[tuple[int, str]]:
        return self.run("C_GetMechanismList", lambda m: m.slot.mechanisms())

    def mechanism_info(self, mechanism: int) -> MechanismInfo:
        return self.run("C_GetMechanismInfo", lambda m: m.slot.mechanism_info(mechanism))

    def library_info(self) -> LibraryInfo:
        info = self.run("C_GetInfo", lambda m: m.slot.library_info())
        return LibraryInfo(info.cryptoki_version, "ckdemo HA",
                           f"HA group {self.label} over {len(self.members)} members",
                           (1, 0), info.path)

    def init_token(self, so_pin: str, label: str) -> None:
        raise CKRError(CKR_FUNCTION_NOT_SUPPORTED, "C_InitToken",
                       "the HA virtual slot cannot be initialised; initialise each member's slot")

    def wait_for_event(self) -> int:
        self.before_call()
        raise CKRError(CKR_NO_EVENT, "C_WaitForSlotEvent")

    def open_session(self, rw: bool = True):
        from .session import VirtualSession
        self.primary()  # fails like a device when no member is left
        session = VirtualSession(self, self._next_session, rw)
        self.sessions[session.handle] = session
        self._next_session += 1
        return session

    def allocate_object_handle(self) -> int:
        handle, self._next_object = self._next_object, self._next_object + 1
        return handle

    def exports(self, symbol: str) -> list[str]:
        """Libraries behind any member that export `symbol` (vendor extension detection)."""
        paths: list[str] = []
        for member in self.members:
            if member.slot is not None:
                paths += [p for p in member.slot.exports(symbol) if p not in paths]
        return paths

    def __repr__(self) -> str:
        return f"HAGroup({self.label}, {self.serial}, {self.members})"


class ObjectMissing(CKRError):
    """The object is not on this member (it could not be copied there): ask another member."""


class MemberRejected(Exception):
    """A member came back but must not rejoin silently (another token, or an emptied one)."""


def _keys(session) -> list[int]:
    handles = []
    for cls in KEY_CLASSES:
        handles.extend(session.find_objects({CKA_CLASS: cls}))
    return [h for h in handles if session.get_attributes(h, [CKA_ID]).get(CKA_ID)]


def _close_quietly(session) -> None:
    try:
        session.close()
    except CKRError:
        pass  # the member is being given up on: its session goes with it


def _logout_quietly(session) -> None:
    try:
        session.logout()
    except CKRError:
        pass  # already logged out, or the member is gone: the goal state holds
