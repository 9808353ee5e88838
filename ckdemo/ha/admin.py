"""HA functions of the group (a mixin of HAGroup): HA Init, HA login and logout, HA Status, and
fault injection on members for demos and tests.
"""
from __future__ import annotations

from ..codes import CKR_DEVICE_ERROR, CKR_USER_ALREADY_LOGGED_IN, CKR_USER_NOT_LOGGED_IN, CKRError
from ..model import CKU_SO
from . import replication
from .cleanup import close_quietly, logout_quietly
from .member import HAMember, MemberState

CKF_USER_PIN_INITIALIZED = 0x8


class Administration:
    """HA Init, login, status and fault injection for HAGroup."""

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
                        logout_quietly(session)
                finally:
                    close_quietly(session)
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
            close_quietly(session)

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
                        logout_quietly(other.anchor)
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
                logout_quietly(member.anchor)

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
