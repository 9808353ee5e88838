"""HA functions of the group (an object the group owns): HA Init, HA login and logout, HA Status,
and fault injection on members for demos and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..codes import (
    CKR_DEVICE_ERROR,
    CKR_PIN_INCORRECT,
    CKR_USER_ALREADY_LOGGED_IN,
    CKR_USER_NOT_LOGGED_IN,
    CKRError,
)
from ..model import CKU_SO, CKU_USER
from . import replication
from .cleanup import close_quietly, logout_quietly
from .failover import MemberFailed
from .member import HAMember, MemberState

CKF_USER_PIN_INITIALIZED = 0x8


class Administration:
    """HA Init, login, status and fault injection of one HAGroup (which hands these on)."""

    def __init__(self, group) -> None:
        self.group = group

    def ha_init(self, so_pin: str) -> "HAInitReport":
        """Put the group's domain keys on every reachable member (one SO login each) and admit
        members that were rejected. When every member holds the same complete generation there
        is nothing to do; otherwise a new generation goes on every member (a domain key cannot
        be destroyed, nor its value leave its member, so re-keying adds keys beside the old
        ones, which keep their unwrap template and stay harmless). Keys already on the members
        are stored by them, not wrapped, so nothing depends on an older generation. The weak
        key of earlier versions (public, destroyable, no unwrap template) is destroyed."""
        self.group.before_call()
        targets = [m for m in self.group.members if m.active or m.state is MemberState.REJECTED]
        if not targets:
            raise CKRError(CKR_DEVICE_ERROR, "HA Init", "no HA group member is available")
        held = {m.serial: self._domain_keys(m) for m in targets}
        currents = {keys.current for keys in held.values()}
        report = HAInitReport(generation=currents.pop() if len(currents) == 1 else None)
        rekey = report.generation is None
        if rekey:
            report.generation = max(keys.newest for keys in held.values()) + 1
        weak = [m for m in targets if held[m.serial].legacy]
        if rekey or weak:
            self._put_domain_keys(so_pin, targets, held, report, rekey)
        for member in targets:
            if member.state is MemberState.REJECTED:  # taken back by the next call's recovery
                member.readmit(self.group.policy.readmitted())
                report.readmitted.append(member.serial)
                self.group.log.record(self.group.serial, member.serial, "readmitted", "by HA Init")
        if report.weak_removed:
            self.group.log.record(
                self.group.serial,
                ",".join(report.weak_removed),
                "domain-key",
                "weak key of an earlier version destroyed",
            )
        if report.created_on:
            self.group.log.record(
                self.group.serial,
                ",".join(report.created_on),
                "domain-key",
                f"generation {report.generation} created",
            )
        return report

    def _put_domain_keys(
        self, so_pin: str, targets: list[HAMember], held: dict, report: "HAInitReport", rekey: bool
    ) -> None:
        credentials = self.group.credentials
        if credentials:  # an SO login needs the user logged out of the token (PKCS#11)
            self.logout()
        values: dict[str, bytes] = {}
        try:
            for member in targets:
                session = member.slot.open_session(rw=True)
                try:
                    session.login(CKU_SO, so_pin)
                    try:
                        # found again here: handles die with the last session of the slot
                        for handle in replication.domain_keys(session).legacy:
                            session.destroy_object(handle)
                            report.weak_removed.append(member.serial)
                        if rekey:
                            for kind in replication.ALL_KINDS:
                                if kind not in values:
                                    values[kind] = session.generate_random(replication.DOMAIN_KEY_BYTES)
                                session.create_object(
                                    replication.domain_key_template(values[kind], report.generation, kind)
                                )
                            report.created_on.append(member.serial)
                            older = [g for g in held[member.serial].generations if g < report.generation]
                            if older:
                                report.kept.append((member.serial, sorted(older)))
                        if credentials and not member.slot.token_info().flags & CKF_USER_PIN_INITIALIZED:
                            session.init_pin(credentials[1])  # an emptied token gets the HA PIN
                    finally:
                        logout_quietly(session)
                finally:
                    close_quietly(session)
        finally:
            values.clear()
            if credentials:
                self.login(*credentials)

    def _domain_keys(self, member: HAMember) -> replication.DomainKeys:
        session = member.slot.open_session(rw=False)
        try:
            return replication.domain_keys(session)
        finally:
            close_quietly(session)

    def login(self, user_type: int, pin: str) -> None:
        """Log in on every active member with one PIN (HA Login / C_Login on the HA slot).
        Under the state lock: two ckdemo processes logging in to SoftHSM members at the same
        moment once gave CKR_USER_PIN_NOT_INITIALIZED (a token file read while rewritten)."""
        with self.group.state_lock():
            if user_type != CKU_USER:
                self._login(user_type, pin)
                return
            self.group.pin_lock.check()
            try:
                self._login(user_type, pin)
            except CKRError as exc:
                if exc.ckr == CKR_PIN_INCORRECT:
                    raise self.pin_failed() from exc
                raise
            self.group.pin_lock.succeeded()

    def pin_failed(self) -> CKRError:
        """Count a wrong user PIN (the token's answer, or a server's check of a PIN it kept):
        the error to answer with; the lock is written to the HA log when it happens."""
        error = self.group.pin_lock.failed()
        if self.group.pin_lock.locked:
            self.group.log.record(
                self.group.serial,
                "-",
                "user PIN locked",
                f"after {self.group.pin_lock.failures} wrong PIN(s) in a row",
            )
        return error

    def pin_unlocked(self) -> int:
        """The SO set the user PIN (C_InitPIN on the HA slot): the failed-login count starts
        again; returns how many wrong PINs it held."""
        was = self.group.pin_lock.unlock()
        if was:
            self.group.log.record(
                self.group.serial,
                "-",
                "user PIN unlocked",
                f"after {was} wrong PIN(s) in a row (the SO's C_InitPIN)",
            )
        return was

    def _login(self, user_type: int, pin: str) -> None:
        def login(session, member: HAMember) -> None:
            try:
                session.login(user_type, pin)
            except CKRError as exc:
                if exc.ckr != CKR_USER_ALREADY_LOGGED_IN or self.group.credentials is not None:
                    raise
                # else: already logged in by a physical-slot session of ours: the same state

        self.group.failover.every(
            "C_Login", login, undo=lambda session, member, _: logout_quietly(session), counted=False
        )
        self.group.credentials = (user_type, pin)
        if user_type == CKU_USER:  # only the user sees every key object
            self.group.recovery.resynchronise_private()
            self.group.completed_at_login = self.group.complete_objects()

    def logout(self) -> None:
        self.group.before_call()
        if self.group.credentials is None:
            raise CKRError(CKR_USER_NOT_LOGGED_IN, "C_Logout")
        self.group.credentials = None
        for member in self.group.active_members():
            member.generation += 1  # handles of private objects are void after a logout (SoftHSM)
            if member.anchor is not None:
                logout_quietly(member.anchor)

    def status(self) -> list[tuple[HAMember, int]]:
        """As Luna documents it: a failed member shows CKR_DEVICE_ERROR once, then CKR_TOKEN_NOT_PRESENT."""
        self.group.before_call()
        report = []
        for member in self.group.members:
            if member.active:
                try:
                    self.group.failover.pinned(member, member.slot.token_info)
                except MemberFailed:
                    pass  # shown as CKR_DEVICE_ERROR below
                except CKRError:
                    pass  # an answer, not a failure: the member is up
            report.append((member, member.status_code()))
            member.reported()
        return report

    def recovery_exhausted(self) -> list[tuple[HAMember, int]]:
        """Down members automatic recovery has given up on (N attempts made, or N = 0): with
        the attempts made, for the notice where the user looks (52, 122)."""
        return [
            (m, m.recovery.recover_attempt_count)
            for m in self.group.members
            if not m.active and m.recovery is not None and self.group.policy.exhausted(m.recovery)
        ]

    def member(self, ref: str) -> HAMember:
        """A member by number in the group (1-based), token label or serial."""
        for number, member in enumerate(self.group.members, start=1):
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


@dataclass
class HAInitReport:
    """What HA Init did, for the menu and the HA log."""

    generation: int | None = None
    created_on: list[str] = field(default_factory=list)
    weak_removed: list[str] = field(default_factory=list)
    kept: list[tuple[str, list[int]]] = field(default_factory=list)  # (member, older generations)
    readmitted: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        said = []
        if self.weak_removed:
            said.append(
                f"weak HA domain key of an earlier version (public, destroyable, no unwrap "
                f"template) destroyed on {len(self.weak_removed)} member(s): "
                f"{', '.join(self.weak_removed)}"
            )
        if self.created_on:
            said.append(
                f"HA domain keys generation {self.generation} ({', '.join(replication.CARRIED)}; for private keys and for keys that are not) "
                f"created on {len(self.created_on)} member(s): {', '.join(self.created_on)}"
            )
        for serial, older in self.kept:
            said.append(
                f"member {serial} keeps generation(s) {', '.join(map(str, older))}: domain keys "
                "cannot be destroyed (only re-initialising the token removes them); they "
                "unwrap only sensitive, trusted-only keys and are no longer used"
            )
        if not said:
            said.append(
                f"every active member already holds HA domain keys generation "
                f"{self.generation}; nothing to do"
            )
        return said
