"""The HA group on real SoftHSM2 members, in process, with a fake clock for the recovery timing.

Isolation: python-pkcs11 keeps one loaded library per path and SoftHSM2 reads SOFTHSM2_CONF
only at C_Initialize, so each workspace here loads its own private copy of libsofthsm2.so,
pointed at its own provisioned home. Member failures are simulated at the member boundary
(`HAGroup.fail_member` / `restore_member`); every test leaves all members back in the group.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ckdemo.codes import (
    CKR_DEVICE_ERROR,
    CKR_OBJECT_HANDLE_INVALID,
    CKR_OK,
    CKR_PIN_INCORRECT,
    CKR_TOKEN_NOT_PRESENT,
    CKR_TOKEN_NOT_RECOGNIZED,
    CKRError,
    ckr_name,
)
from ckdemo.model import (
    CKA_CLASS,
    CKA_ID,
    CKA_LABEL,
    CKA_MODULUS,
    CKA_PUBLIC_EXPONENT,
    CKM_ECDSA,
    CKM_SHA256_RSA_PKCS,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
    CKU_USER,
    KeySpec,
)
from conftest import SO_PIN, USER_PIN, requires_softhsm, softhsm_env
from support import FakeClock, private_workspace

pytestmark = requires_softhsm


@dataclass
class HA:
    home: Path
    group: object  # ckdemo.ha.group.HAGroup
    clock: FakeClock
    session: object  # a VirtualSession on the HA slot, logged in through the group

    @property
    def x(self) -> float:
        return self.group.policy.interval_s

    def events(self, serial: str, since: int = 0) -> list[str]:
        return [e.event for e in self.group.log.events[since:] if e.member == serial]

    def status(self) -> dict[str, str]:
        return {member.serial: ckr_name(code) for member, code in self.group.status()}


def build_ha(tmp: Path, members: int = 3) -> HA:
    """A provisioned home, a private copy of SoftHSM2 for it, HA Init and HA Login done."""
    home, workspace, library = private_workspace(tmp, members)
    group = workspace.slots[-1]
    assert group in workspace.groups, workspace.slots
    assert [m.slot.module.path for m in group.members] == [str(library)] * members
    clock = FakeClock()
    group.policy.clock = clock
    group.ha_init(SO_PIN)
    group.login(CKU_USER, USER_PIN)
    return HA(home, group, clock, group.open_session())


def heal(ha: HA) -> None:
    """Restore every member and let one call after X take them all back."""
    ha.group.policy.retries = -1
    for member in ha.group.members:
        ha.group.restore_member(member)
        if member.recovery is not None:
            member.recovery.recover_attempt_count = 0
    ha.clock.advance(ha.x + 1)
    ha.group.status()
    settled(ha)


def settled(ha: HA) -> None:
    """The members a call reconnected are brought up to date off the call (ckdemo/ha/rejoin.py):
    wait (bounded) until they serve again or their attempt has failed."""
    assert ha.group.recovery.settle(), "a member was still being brought up to date"


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> HA:
    ha = build_ha(tmp_path_factory.mktemp("ha-group"))
    yield ha
    heal(ha)


@pytest.fixture
def ha(shared) -> HA:
    assert all(m.active for m in shared.group.members), shared.group.members
    yield shared
    heal(shared)
    assert all(m.active for m in shared.group.members), (
        f"members left out after the test: {shared.group.members}"
    )


@pytest.fixture
def fresh(tmp_path) -> HA:
    """A group of its own, for tests that change login state or re-initialise a token."""
    ha = build_ha(tmp_path)
    yield ha
    for member in ha.group.members:
        ha.group.restore_member(member)


@pytest.fixture(scope="module")
def rsa_key(shared):
    """An RSA-2048 key pair generated on the HA slot: (public handle, private handle, public key)."""
    pub, priv = shared.session.generate(KeySpec("rsa", 2048, "ha-group-sign", b""))
    values = shared.session.get_attributes(pub, [CKA_MODULUS, CKA_PUBLIC_EXPONENT])
    public_key = rsa.RSAPublicNumbers(
        int.from_bytes(values[CKA_PUBLIC_EXPONENT], "big"), int.from_bytes(values[CKA_MODULUS], "big")
    ).public_key()
    return pub, priv, public_key


def sign(ha: HA, priv: int, data: bytes = b"ckdemo HA test") -> bytes:
    return ha.session.sign(priv, CKM_SHA256_RSA_PKCS, data)


def verify(public_key, signature: bytes, data: bytes) -> None:
    public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())  # raises if bad


# ---- detection, as Luna documents it -----------------------------------------------------------
def test_interval_defaults_to_one_minute_and_retries_to_unlimited(ha):
    assert ha.group.policy.interval_s == 60
    assert ha.group.policy.retries == -1


def test_seed_detection_device_error_once_then_token_not_present(ha, rsa_key):
    m1, m2, m3 = ha.group.members
    ha.group.fail_member(m1)
    first = ha.status()
    second = ha.status()
    third = ha.status()
    assert first == {m1.serial: "CKR_DEVICE_ERROR", m2.serial: "CKR_OK", m3.serial: "CKR_OK"}
    assert second == {m1.serial: "CKR_TOKEN_NOT_PRESENT", m2.serial: "CKR_OK", m3.serial: "CKR_OK"}
    assert third == second
    # the survivors keep serving
    served = m1.calls
    for n in range(4):
        verify(rsa_key[2], sign(ha, rsa_key[1], b"%d" % n), b"%d" % n)
    assert m1.calls == served


def test_status_codes_are_the_seed_values(ha):
    m1 = ha.group.members[0]
    ha.group.fail_member(m1)
    codes = [dict((m.serial, c) for m, c in ha.group.status())[m1.serial] for _ in range(2)]
    assert codes == [CKR_DEVICE_ERROR, CKR_TOKEN_NOT_PRESENT]
    heal(ha)
    assert {c for _, c in ha.group.status()} == {CKR_OK}


# ---- auto-recovery inside a call ---------------------------------------------------------------
def test_recovery_happens_inside_a_call_only_after_x(ha, rsa_key):
    m1 = ha.group.members[0]
    mark = len(ha.group.log.events)
    ha.group.fail_member(m1)
    ha.status()  # detected at t0
    # after X, still failed: the call makes one recovery attempt, which fails
    ha.clock.advance(ha.x + 1)
    sign(ha, rsa_key[1])
    sign(ha, rsa_key[1])  # same instant: no second attempt
    assert ha.events(m1.serial, mark) == ["failed", "recovery-attempt"]
    assert m1.recovery.recover_attempt_count == 1
    # restored, but less than X since the last attempt: a call does not take it back
    ha.group.restore_member(m1)
    ha.clock.advance(ha.x - 1)
    sign(ha, rsa_key[1])
    assert not m1.active
    assert ha.status()[m1.serial] == "CKR_TOKEN_NOT_PRESENT"
    # past X: the next call reconnects it before doing its own work; it serves again once
    # brought up to date, off the call
    ha.clock.advance(2)
    verify(rsa_key[2], sign(ha, rsa_key[1]), b"ckdemo HA test")
    settled(ha)
    assert m1.active
    assert set(ha.status().values()) == {"CKR_OK"}
    assert ha.events(m1.serial, mark) == ["failed", "recovery-attempt", "recovered"]
    recovered = [e for e in ha.group.log.events[mark:] if e.event == "recovered"][0]
    assert recovered.group == ha.group.serial and m1.serial in recovered.line()
    # and it is back in the rotation
    before = m1.calls
    for _ in range(3):
        sign(ha, rsa_key[1])
    assert m1.calls > before


def test_idle_group_recovers_nothing(ha):
    m1 = ha.group.members[0]
    ha.group.fail_member(m1)
    ha.status()
    ha.group.restore_member(m1)
    mark = len(ha.group.log.events)
    ha.clock.advance(1000 * ha.x)
    # no call: nothing ran, however long the clock says it has been
    assert not m1.active
    assert ha.group.log.events[mark:] == []
    # the first call after that recovers it
    ha.session.generate_random(16)
    settled(ha)
    assert m1.active
    assert ha.events(m1.serial, mark) == ["recovered"]


def test_failed_members_keep_their_own_timers(ha):
    m1, m2, m3 = ha.group.members
    mark = len(ha.group.log.events)
    ha.group.fail_member(m1)
    ha.status()  # m1 down at t0
    ha.clock.advance(ha.x / 2)
    ha.group.fail_member(m2)
    ha.status()  # m2 down at t0 + X/2
    ha.group.restore_member(m1)
    ha.group.restore_member(m2)
    ha.clock.advance(ha.x / 2 + 1)  # t0 + X + 1: only m1 is due
    ha.session.generate_random(16)
    settled(ha)
    assert (m1.active, m2.active, m3.active) == (True, False, True)
    ha.clock.advance(ha.x / 2)  # t0 + X/2 + X + 1: now m2 is due
    ha.session.generate_random(16)
    settled(ha)
    assert (m1.active, m2.active, m3.active) == (True, True, True)
    assert ha.events(m1.serial, mark) == ["failed", "recovered"]
    assert ha.events(m2.serial, mark) == ["failed", "recovered"]


def test_retry_limit_counts_per_member(ha, rsa_key):
    """reconnAtt N=2: a member still failed gets 2 attempts and no more; another recovers."""
    m1, m2, m3 = ha.group.members
    ha.group.policy.retries = 2
    mark = len(ha.group.log.events)
    ha.group.fail_member(m1)
    ha.group.fail_member(m2)
    ha.status()
    ha.group.restore_member(m2)  # m2 comes back, m1 stays dead
    for _ in range(5):
        ha.clock.advance(ha.x + 1)
        verify(rsa_key[2], sign(ha, rsa_key[1]), b"ckdemo HA test")
        settled(ha)
    assert ha.events(m1.serial, mark) == [
        "failed",
        "recovery-attempt",
        "recovery-attempt",
        "recovery-exhausted",
    ]
    assert ha.events(m2.serial, mark) == ["failed", "recovered"]
    assert m1.recovery.recover_attempt_count == 2 and m2.active
    # m1 comes back now, but its N attempts are used up: it is not taken back
    ha.group.restore_member(m1)
    for _ in range(3):
        ha.clock.advance(ha.x + 1)
        sign(ha, rsa_key[1])
    assert not m1.active
    assert ha.events(m1.serial, mark).count("recovery-attempt") == 2
    assert "recovered" not in ha.events(m1.serial, mark)


def test_retries_zero_turns_auto_recovery_off(ha):
    m3 = ha.group.members[2]
    ha.group.policy.retries = 0
    mark = len(ha.group.log.events)
    ha.group.fail_member(m3)
    ha.status()
    ha.group.restore_member(m3)
    for _ in range(3):
        ha.clock.advance(10 * ha.x)
        ha.session.generate_random(16)
    assert not m3.active
    assert ha.events(m3.serial, mark) == ["failed"]


def test_manual_recovery_when_auto_recovery_is_off(ha):
    """Choice 125 (Luna's `hagroup recover`): tried now, whatever X and N say."""
    m3 = ha.group.members[2]
    ha.group.policy.retries = 0
    mark = len(ha.group.log.events)
    ha.group.fail_member(m3)
    ha.status()
    assert ha.group.recover_now() == [(m3, False)]  # still dead: one failed attempt, logged
    ha.group.restore_member(m3)
    assert ha.group.recover_now() == [(m3, True)]
    assert m3.active
    assert ha.events(m3.serial, mark) == ["failed", "recovery-attempt", "recovered"]
    assert ha.group.recover_now() == []


def test_member_changes_are_slot_events_of_the_virtual_slot(ha):
    """15 Wait for Slot Event on the HA slot: one event per member failure or recovery."""
    from ckdemo.codes import CKR_NO_EVENT, CKRError

    group, m2 = ha.group, ha.group.members[1]

    def event() -> int | None:
        try:
            return group.wait_for_event()
        except CKRError as exc:
            assert exc.ckr == CKR_NO_EVENT
            return None

    while event() is not None:  # what earlier tests left
        pass
    group.fail_member(m2)
    ha.status()
    assert event() == group.slot_id
    assert event() is None
    group.restore_member(m2)
    ha.clock.advance(2 * ha.x)
    ha.session.generate_random(8)  # recovery runs inside a call
    settled(ha)
    assert m2.active
    assert event() == group.slot_id
    assert event() is None


# ---- load balancing and failover ---------------------------------------------------------------
def test_load_balancing_each_member_serves_a_quarter(ha, rsa_key):
    before = {m.serial: m.calls for m in ha.group.members}
    for n in range(300):
        sign(ha, rsa_key[1], b"lb %d" % n)
    served = {m.serial: m.calls - before[m.serial] for m in ha.group.members}
    assert sum(served.values()) == 300
    for serial, count in served.items():
        assert count / 300 >= 0.25, served


def test_failover_mid_loop_1000_signs_no_visible_error(ha, rsa_key):
    m2 = ha.group.members[1]
    errors, signatures = [], []
    for n in range(1000):
        if n == 500:
            ha.group.fail_member(m2)
            calls_at_failure = m2.calls
        data = b"failover %d" % n
        try:
            signatures.append((data, sign(ha, rsa_key[1], data)))
        except CKRError as exc:  # counted, not raised: the figure is the point
            errors.append(f"{n}: {exc}")
    assert errors == []
    assert len(signatures) == 1000
    assert not m2.active, "the failure was never hit: the test proved nothing"
    assert m2.calls == calls_at_failure
    assert "failed" in ha.events(m2.serial)
    for data, signature in signatures:
        verify(rsa_key[2], signature, data)


def test_all_members_failed_is_a_device_error(fresh):
    """(On a group of its own: losing every member loses the sessions, as Luna's does.)"""
    ha = fresh
    _, private = ha.session.generate(KeySpec("rsa", 2048, "all-members-failed", b""))
    for member in ha.group.members:
        ha.group.fail_member(member)
    with pytest.raises(CKRError) as caught:
        sign(ha, private)
    assert caught.value.ckr == CKR_DEVICE_ERROR
    assert "no HA group member is available" in str(caught.value)
    for member in ha.group.members:  # every member's own error is kept in the final one
        assert member.serial in str(caught.value)
        assert not member.active
    # a new session cannot even be opened while no member is left (a CKRError, not a crash)
    with pytest.raises(CKRError) as again:
        ha.group.open_session()
    assert again.value.ckr == CKR_DEVICE_ERROR


def test_losing_every_member_loses_the_sessions_and_the_login_as_luna(fresh):
    """Luna HA: when every member is lost, the login and every session go with them; once members
    are back the application must C_Finalize and C_Initialize (new sessions) and log in again.
    The same session used to keep its login and work again."""
    group, old = fresh.group, fresh.session
    pub, priv = old.generate(KeySpec("ec", "P-256", "before-the-loss", b""))
    for member in group.members:
        group.fail_member(member)
    with pytest.raises(CKRError) as caught:
        old.sign(priv, CKM_ECDSA, b"d" * 32)
    assert caught.value.ckr == CKR_DEVICE_ERROR
    assert "lost" in [e.event for e in group.log.events][-1]
    assert group.credentials is None
    heal(fresh)
    assert all(m.active for m in group.members)
    for call in (
        lambda: old.sign(priv, CKM_ECDSA, b"d" * 32),
        lambda: old.generate_random(8),
        lambda: old.info(),
    ):
        with pytest.raises(CKRError) as stale:
            call()
        assert stale.value.name == "CKR_SESSION_HANDLE_INVALID", stale.value
    old.close()  # closing it is fine: the application tidies up before C_Finalize
    new = group.open_session()
    assert new.info().state in (0, 2)  # CKS_RO_PUBLIC_SESSION / CKS_RW_PUBLIC_SESSION: no login
    assert new.find_objects({CKA_CLASS: CKO_PRIVATE_KEY}) == []  # private objects: not without a login
    with pytest.raises(CKRError) as private:
        new.generate(KeySpec("ec", "P-256", "needs-a-login", b""))
    assert private.value.name == "CKR_USER_NOT_LOGGED_IN"
    group.login(CKU_USER, USER_PIN)
    (key,) = new.find_objects({CKA_CLASS: CKO_PRIVATE_KEY, CKA_ID: old_id(fresh, pub)})
    assert len(new.sign(key, CKM_ECDSA, b"d" * 32)) == 64  # the keys are still there


def old_id(ha: HA, pub: int) -> bytes:
    """The CKA_ID the HA slot gave a key, read on a member (the old session cannot be asked)."""
    member = ha.group.members[0]
    session = ha.group.session_for(member)
    found = session.find_objects({CKA_CLASS: CKO_PUBLIC_KEY, CKA_LABEL: "before-the-loss"})
    return session.get_attributes(found[0], [CKA_ID])[CKA_ID]


# ---- application errors are answers, not failover ----------------------------------------------
def test_wrong_pin_is_not_failover(fresh):
    group = fresh.group
    group.logout()
    mark = len(group.log.events)
    with pytest.raises(CKRError) as caught:
        group.login(CKU_USER, "0000")
    assert caught.value.ckr == CKR_PIN_INCORRECT
    assert all(m.active for m in group.members)
    assert group.credentials is None
    assert [e for e in group.log.events[mark:] if e.event == "failed"] == []
    group.login(CKU_USER, USER_PIN)  # and the right PIN still works on every member
    session = group.open_session()
    pub, priv = session.generate(KeySpec("rsa", 2048, "after-wrong-pin", b""))
    for _ in range(3):
        session.sign(priv, CKM_SHA256_RSA_PKCS, b"x")
    assert all(m.calls > 0 for m in group.members)


def test_bad_object_handle_is_not_failover(ha, rsa_key):
    mark = len(ha.group.log.events)
    with pytest.raises(CKRError) as caught:
        ha.session.sign(987654, CKM_SHA256_RSA_PKCS, b"x")
    assert caught.value.ckr == CKR_OBJECT_HANDLE_INVALID
    assert all(m.active for m in ha.group.members)
    assert [e for e in ha.group.log.events[mark:] if e.event == "failed"] == []
    sign(ha, rsa_key[1])


def test_bad_object_handle_names_the_function_called(ha):
    with pytest.raises(CKRError) as caught:
        ha.session.sign(987654, CKM_SHA256_RSA_PKCS, b"x")
    assert caught.value.function == "C_Sign"


def test_mechanism_that_does_not_fit_the_key_is_not_failover(ha, rsa_key):
    mark = len(ha.group.log.events)
    with pytest.raises(CKRError) as caught:
        ha.session.sign(rsa_key[1], CKM_ECDSA, bytes(32))
    failed = [e.member for e in ha.group.log.events[mark:] if e.event == "failed"]
    assert failed == [], f"an application error took members out: {failed}"
    assert caught.value.ckr != CKR_DEVICE_ERROR
    assert all(m.active for m in ha.group.members)


# ---- resynchronisation and rejection at recovery ------------------------------------------------
def member_objects(member, key_id: bytes) -> set[int]:
    """Object classes with this CKA_ID on the member, read through its own physical session."""
    session = member.slot.open_session(rw=False)
    try:
        return {
            session.get_attributes(h, [CKA_CLASS])[CKA_CLASS] for h in session.find_objects({CKA_ID: key_id})
        }
    finally:
        session.close()


def test_hasynchronize_off_recovers_without_copying(ha):
    """HASynchronize = { <label> = 0; }: the member comes back as it is (Luna leaves copying to a
    manual `hagroup synchronize`); calls for keys it lacks go to the members that have them."""
    m1, m2, m3 = ha.group.members
    ha.group.synchronize_on_recovery = False
    try:
        ha.group.fail_member(m2)
        ha.status()
        key_id = os.urandom(8)
        pub, priv = ha.session.generate(KeySpec("rsa", 2048, "no-resync", key_id))
        ha.group.restore_member(m2)
        mark = len(ha.group.log.events)
        ha.clock.advance(ha.x + 1)
        ha.session.generate_random(16)
        assert m2.active
        assert member_objects(m2, key_id) == set()
        assert [e.event for e in ha.group.log.events[mark:]] == ["recovered"]
        for _ in range(6):  # never lands on m2, which does not hold the key
            sign(ha, priv)
        ha.session.destroy_object(priv)  # from the members that hold it; m2 has nothing to do
        ha.session.destroy_object(pub)
        assert member_objects(m1, key_id) == set()
    finally:
        ha.group.synchronize_on_recovery = True


def test_recovered_member_is_resynchronised(ha):
    m1, m2, m3 = ha.group.members
    gone_id, new_id = os.urandom(8), os.urandom(8)
    gone_pub, gone_priv = ha.session.generate(KeySpec("rsa", 2048, "resync-gone", gone_id))
    assert member_objects(m2, gone_id) == {CKO_PUBLIC_KEY, CKO_PRIVATE_KEY}
    ha.group.fail_member(m2)
    ha.status()
    # while m2 is away: one key appears, one disappears
    new_pub, new_priv = ha.session.generate(KeySpec("rsa", 2048, "resync-new", new_id))
    ha.session.destroy_object(gone_priv)
    ha.session.destroy_object(gone_pub)
    assert member_objects(m1, new_id) == {CKO_PUBLIC_KEY, CKO_PRIVATE_KEY}
    assert member_objects(m1, gone_id) == set()
    ha.group.restore_member(m2)
    # m2 lost its login with its sessions: only public objects are visible on it for now
    assert member_objects(m2, new_id) == set() and member_objects(m2, gone_id) == {CKO_PUBLIC_KEY}
    mark = len(ha.group.log.events)
    ha.clock.advance(ha.x + 1)
    ha.session.generate_random(16)
    settled(ha)
    assert m2.active
    assert member_objects(m2, new_id) == {CKO_PUBLIC_KEY, CKO_PRIVATE_KEY}
    assert member_objects(m2, gone_id) == set()
    resync = [e for e in ha.group.log.events[mark:] if e.event == "resynchronised"]
    assert [e.member for e in resync] == [m2.serial]
    assert "2 object(s) copied" in resync[0].detail and "2 destroyed" in resync[0].detail
    # the copied key works on m2 itself: fail the others so only m2 can serve
    values = ha.session.get_attributes(new_pub, [CKA_MODULUS, CKA_PUBLIC_EXPONENT])
    public_key = rsa.RSAPublicNumbers(
        int.from_bytes(values[CKA_PUBLIC_EXPONENT], "big"), int.from_bytes(values[CKA_MODULUS], "big")
    ).public_key()
    ha.group.fail_member(m1)
    ha.group.fail_member(m3)
    before = m2.calls
    verify(public_key, ha.session.sign(new_priv, CKM_SHA256_RSA_PKCS, b"m2 only"), b"m2 only")
    assert m2.calls == before + 1
    ha.status()  # m1 and m3 seen failed whichever member the sign went to (their sessions are gone)
    assert not m1.active and not m3.active


def _reinit_with_softhsm_util(ha: HA, member) -> None:
    done = subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--serial",
            member.serial,
            "--label",
            member.label,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=softhsm_env(ha.home),
    )
    assert done.returncode == 0, done.stderr


def test_member_back_with_reinitialised_token_is_rejected(fresh):
    group = fresh.group
    m1, m2, m3 = group.members
    session = fresh.session
    pub, priv = session.generate(KeySpec("rsa", 2048, "before-reinit", b""))
    group.fail_member(m3)
    fresh.status()
    _reinit_with_softhsm_util(fresh, m3)  # same serial, same PINs, but empty: no domain key
    group.restore_member(m3)
    mark = len(group.log.events)
    fresh.clock.advance(fresh.x + 1)
    session.sign(priv, CKM_SHA256_RSA_PKCS, b"x")  # the call goes on without it
    settled(fresh)  # (its domain keys are looked for off the call)
    assert not m3.active
    assert fresh.status()[m3.serial] == "CKR_TOKEN_NOT_RECOGNIZED"
    assert dict((m.serial, c) for m, c in group.status())[m3.serial] == CKR_TOKEN_NOT_RECOGNIZED
    rejected = [e for e in group.log.events[mark:] if e.event == "rejected"]
    assert [e.member for e in rejected] == [m3.serial]
    assert "domain key" in rejected[0].detail
    # it stays out: no further attempts, no calls served, however many calls come
    calls = m3.calls
    for _ in range(3):
        fresh.clock.advance(fresh.x + 1)
        session.sign(priv, CKM_SHA256_RSA_PKCS, b"x")
    assert not m3.active and m3.calls == calls
    assert "recovered" not in fresh.events(m3.serial, mark)


def test_member_back_with_emptied_token_is_rejected(fresh):
    group = fresh.group
    m3 = group.members[2]
    group.fail_member(m3)  # closes every session on the slot, so C_InitToken is allowed
    fresh.status()
    m3.slot.module.raw.init_token(m3.slot.slot_id, SO_PIN, m3.label)  # C_InitToken, in process
    group.restore_member(m3)
    mark = len(group.log.events)
    fresh.clock.advance(fresh.x + 1)
    fresh.session.generate_random(8)
    settled(fresh)
    assert not m3.active
    assert fresh.status()[m3.serial] == "CKR_TOKEN_NOT_RECOGNIZED"
    assert "rejected" in fresh.events(m3.serial, mark)


def test_rejected_member_is_admitted_again_after_ha_init_as_the_log_says(fresh):
    group = fresh.group
    m3 = group.members[2]
    pub, priv = fresh.session.generate(KeySpec("rsa", 2048, "before-reinit", b""))
    group.fail_member(m3)
    fresh.status()
    _reinit_with_softhsm_util(fresh, m3)
    group.restore_member(m3)
    fresh.clock.advance(fresh.x + 1)
    fresh.session.generate_random(8)
    settled(fresh)
    assert "HA Init" in [e for e in group.log.events if e.event == "rejected"][-1].detail
    group.logout()
    report = group.ha_init(SO_PIN)
    # m3 lost generation 1 with its token, and a domain key cannot travel: generation 2 goes on
    # every member, the others keep generation 1 (not destroyable, no longer used)
    assert report.generation == 2 and sorted(report.created_on) == sorted(m.serial for m in group.members)
    assert sorted(serial for serial, older in report.kept if older == [1]) == sorted(
        m.serial for m in group.members if m is not m3
    )
    group.login(CKU_USER, USER_PIN)
    fresh.clock.advance(fresh.x + 1)
    fresh.session.generate_random(8)
    settled(fresh)
    assert m3.active, [e.line() for e in group.log.events[-4:]]
    # the key from before travelled to m3 under generation 2, and a new one does too
    assert member_objects(m3, fresh.session.get_attributes(priv, [CKA_ID])[CKA_ID]) == {
        CKO_PUBLIC_KEY,
        CKO_PRIVATE_KEY,
    }
    new_pub, new_priv = fresh.session.generate(KeySpec("ec", "P-256", "after-rekey", b""))
    assert member_objects(m3, fresh.session.get_attributes(new_priv, [CKA_ID])[CKA_ID]) == {
        CKO_PUBLIC_KEY,
        CKO_PRIVATE_KEY,
    }
    again = group.ha_init(SO_PIN)
    assert again.generation == 2 and not again.created_on and "nothing to do" in again.lines()[0]


def _key_ids_on(ha: HA, member) -> list[bytes]:
    """CKA_IDs of the secret keys a member holds, read on the member's own session."""
    session = ha.group.session_for(member)
    return [
        session.get_attributes(h, [CKA_ID])[CKA_ID] for h in session.find_objects({CKA_CLASS: CKO_SECRET_KEY})
    ]


def test_a_source_failing_in_the_middle_of_a_copy_is_blamed_alone(ha, monkeypatch):
    """The member a new key is being copied from fails after one copy is made (the soak saw a
    killed source blamed on the members the copy was going to, and every member left out).
    Now: only the source is failed, the copy made is removed, the key is generated again on
    another member and reaches the rest; the source's own copy goes when it comes back."""
    from ckdemo.ha import replication

    original, calls, sources = replication.replicate, [], []

    def replicate(source, handle, target, *kept_and_final):
        calls.append(target.member)
        if len(calls) == 2:  # one copy made, the source dies before the second
            sources.append(source.member)
            ha.group.fail_member(source.member)
        return original(source, handle, target, *kept_and_final)

    monkeypatch.setattr(replication, "replicate", replicate)
    key_id = os.urandom(6)
    (handle,) = ha.session.generate(KeySpec("aes", 32, "blame-source", key_id))
    monkeypatch.setattr(replication, "replicate", original)
    (first,) = sources
    assert [m for m in ha.group.members if not m.active] == [first]
    others = [m for m in ha.group.members if m is not first]
    assert all(_key_ids_on(ha, m).count(key_id) == 1 for m in others)  # once: the first copy went
    assert ha.session.encrypt(handle, 0x1082, b"0" * 16, b"\0" * 16)  # CKM_AES_CBC on a live member
    heal(ha)  # the source comes back: resynchronised, its orphan destroyed or kept as the one copy
    assert all(m.active for m in ha.group.members)
    assert all(_key_ids_on(ha, m).count(key_id) == 1 for m in ha.group.members)
    # and it is one key: the same block encrypts alike on every member's own copy
    ciphertexts = set()
    for member in ha.group.members:
        session = ha.group.session_for(member)
        (own,) = session.find_objects({CKA_CLASS: CKO_SECRET_KEY, CKA_ID: key_id})
        ciphertexts.add(session.encrypt(own, 0x1081, b"1" * 16))  # CKM_AES_ECB
    assert len(ciphertexts) == 1


def test_a_source_failing_before_its_own_copy_is_made_unextractable_leaves_one_key(ha, monkeypatch):
    """An unextractable key is copied to the other members first and made unextractable on its
    own member last: a source that fails at that last step must take the copies with it (they
    stayed, the key was generated again on another member, which then kept the first copy under
    the same name: two keys for one; found by the soak with real kills)."""
    from ckdemo.ha import replication

    original, calls, sources = replication.replicate, [], []
    copies = len(ha.group.members) - 1

    def replicate(source, handle, target, *kept_and_final):
        made = original(source, handle, target, *kept_and_final)
        calls.append(target.member)
        if len(calls) == copies:  # every copy made: the source dies before hardening its own
            sources.append(source.member)
            ha.group.fail_member(source.member)
        return made

    monkeypatch.setattr(replication, "replicate", replicate)
    key_id = os.urandom(6)
    (handle,) = ha.session.generate(KeySpec("aes", 32, "harden-source", key_id))
    monkeypatch.setattr(replication, "replicate", original)
    (first,) = sources
    heal(ha)
    ciphertexts = set()
    for member in ha.group.members:
        session = ha.group.session_for(member)
        found = session.find_objects({CKA_CLASS: CKO_SECRET_KEY, CKA_ID: key_id})
        assert len(found) == 1, (member.serial, found)
        ciphertexts.add(session.encrypt(found[0], 0x1081, b"1" * 16))  # CKM_AES_ECB
    assert len(ciphertexts) == 1  # one key on every member, the first source's included
    assert first.active


def test_a_key_destroyed_while_a_member_was_down_does_not_come_back_when_it_recovers_before_a_login(fresh):
    """A member recovered while no user is logged in can be brought up to date in its public
    objects only; at the next login the HA slot completed objects as a union, so a key the
    application destroyed while the member was down came back to every member (extractable
    keys) or was logged "not copied" for ever (found by the differential test). At the login
    that member is now made as its source is: the destroyed key goes from it."""
    group, session = fresh.group, fresh.session
    (key,) = session.generate(
        KeySpec("aes", 32, "destroyed-while-down", b"", sensitive=True, extractable=True)
    )
    key_id = session.get_attributes(key, [CKA_ID])[CKA_ID]
    down = group.members[2]
    group.fail_member(down)
    fresh.clock.advance(fresh.x + 1)
    session.generate_random(8)  # the failure is seen
    assert not down.active
    session.destroy_object(key)
    group.logout()
    group.restore_member(down)
    fresh.clock.advance(fresh.x + 1)
    session.generate_random(8)  # recovered with no login: the private key is invisible to it
    settled(fresh)
    assert down.active
    group.login(CKU_USER, USER_PIN)
    for member in group.members:
        assert _key_ids_on(fresh, member).count(key_id) == 0, member.serial
    assert session.find_objects({CKA_CLASS: CKO_SECRET_KEY, CKA_ID: key_id}) == []


def test_every_session_lists_objects_in_the_order_the_group_made_them(fresh):
    """One token lists its objects in the order it made them, in every session; the HA slot
    did so only per session (the order each session first saw them from whichever member served
    its first search), so two connections enumerating by index saw different keys at one index."""
    from ckdemo.model import CKA_TOKEN, CKA_VALUE, CKO_DATA

    made = []
    for number in (3, 1, 2, 0):  # labels out of order: the order is the making, not the name
        made.append(
            fresh.session.create_object(
                {
                    CKA_CLASS: CKO_DATA,
                    CKA_TOKEN: True,
                    CKA_LABEL: f"order-{number}",
                    CKA_VALUE: b"v%d" % number,
                }
            )
        )
    wanted = {CKA_CLASS: CKO_DATA}

    def labels(session) -> list[str]:
        return [session.get_attributes(h, [CKA_LABEL])[CKA_LABEL] for h in session.find_objects(wanted)]

    first = labels(fresh.session)
    assert first == ["order-3", "order-1", "order-2", "order-0"]
    other = fresh.group.open_session()
    served_by = set()
    for _ in range(2 * len(fresh.group.members)):  # every member serves some of the searches
        before = {m.serial: m.calls for m in fresh.group.members}
        assert labels(other) == first
        served_by |= {m.serial for m in fresh.group.members if m.calls != before[m.serial]}
    assert len(served_by) == len(fresh.group.members)
    fresh.session.destroy_object(made[1])  # made again: listed last, as a token lists it
    fresh.session.create_object(
        {CKA_CLASS: CKO_DATA, CKA_TOKEN: True, CKA_LABEL: "order-1", CKA_VALUE: b"v1"}
    )
    assert labels(other) == ["order-3", "order-2", "order-0", "order-1"]


def test_a_change_one_member_refuses_is_undone_on_the_members_that_made_it(fresh):
    """The failover engine's every-member entry point is all or nothing: a member's answer that
    refuses the change (here CKR_TEMPLATE_INCONSISTENT from the second member only) undoes it
    on the members that had made it, and the refusal reaches the caller."""
    from ckdemo.codes import CKR_TEMPLATE_INCONSISTENT
    from ckdemo.model import CKA_TOKEN, CKA_VALUE, CKO_DATA

    template = {CKA_CLASS: CKO_DATA, CKA_TOKEN: True, CKA_LABEL: "all-or-nothing", CKA_VALUE: b"x"}
    second = fresh.group.members[1]

    def create(session, member):
        if member is second:
            raise CKRError(CKR_TEMPLATE_INCONSISTENT, "C_CreateObject")
        return session.create_object(template)

    with pytest.raises(CKRError) as refused:
        fresh.group.failover.every("C_CreateObject", create, undo=lambda s, m, h: s.destroy_object(h))
    assert refused.value.ckr == CKR_TEMPLATE_INCONSISTENT
    for member in fresh.group.members:  # read back on each member's own session
        assert fresh.group.session_for(member).find_objects({CKA_LABEL: "all-or-nothing"}) == [], member
    assert all(m.active for m in fresh.group.members)  # an answer, not a member failure


@pytest.mark.parametrize("sensitive", [True, False], ids=["sensitive", "not-sensitive"])
def test_a_key_asked_unextractable_and_not_modifiable_is_both_on_every_member(fresh, sensitive):
    """It was generated extractable (so members could copy it) and could not be made
    unextractable afterwards (not modifiable): every member's copy stayed extractable by trusted
    keys (differential test: CKA_EXTRACTABLE 0 vs 1, C_WrapKey CKR_OK where one token refuses).
    Now each copy, its own member's included, is made as asked."""
    from ckdemo.model import CKA_EXTRACTABLE, CKA_LOCAL, CKA_MODIFIABLE, CKA_NEVER_EXTRACTABLE
    from ckdemo.codes import CKR_ATTRIBUTE_READ_ONLY

    (key,) = fresh.session.generate(
        KeySpec(
            "aes",
            32,
            f"locked-{sensitive}",
            b"",
            token=True,
            sensitive=sensitive,
            extractable=False,
            extra=((CKA_MODIFIABLE, False),),
        )
    )
    for _ in range(len(fresh.group.members)):  # whichever member answers
        found = fresh.session.get_attributes(
            key, [CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE, CKA_LOCAL, CKA_MODIFIABLE]
        )
        assert found == {
            CKA_EXTRACTABLE: False,
            CKA_NEVER_EXTRACTABLE: True,
            CKA_LOCAL: True,
            CKA_MODIFIABLE: False,
        }, found
    label = f"locked-{sensitive}"
    for member in fresh.group.members:  # each member's own copy, read on its own session
        session = fresh.group.session_for(member)
        (copy,) = session.find_objects({CKA_CLASS: CKO_SECRET_KEY, CKA_LABEL: label})
        assert session.get_attributes(copy, [CKA_EXTRACTABLE, CKA_MODIFIABLE]) == {
            CKA_EXTRACTABLE: False,
            CKA_MODIFIABLE: False,
        }, member
        with pytest.raises(CKRError) as refused:
            session.set_attributes(copy, {CKA_LABEL: "changed"})
        assert refused.value.ckr in (CKR_ATTRIBUTE_READ_ONLY, 0x1B)  # CKR_ACTION_PROHIBITED
    assert all(m.active for m in fresh.group.members)


def test_an_object_another_session_destroyed_and_this_one_made_again_is_listed_last(fresh):
    """Session B destroys an object session A had seen; A makes it again: A's search lists it last
    (an internal error before: the object had no place in the group's order any more; found by
    the typed-template fuzz of test_hostile_serve)."""
    from ckdemo.model import CKA_TOKEN, CKA_VALUE, CKO_DATA

    a, b = fresh.session, fresh.group.open_session()

    def make(label: str) -> int:
        return a.create_object({CKA_CLASS: CKO_DATA, CKA_TOKEN: False, CKA_LABEL: label, CKA_VALUE: b"v"})

    make("again-1"), make("again-2")
    wanted = {CKA_CLASS: CKO_DATA, CKA_VALUE: b"v"}
    assert len(b.find_objects(wanted)) == 2
    (first,) = [h for h in b.find_objects(wanted) if b.get_attributes(h, [CKA_LABEL])[CKA_LABEL] == "again-1"]
    b.destroy_object(first)
    make("again-1")
    assert [a.get_attributes(h, [CKA_LABEL])[CKA_LABEL] for h in a.find_objects(wanted)] == [
        "again-2",
        "again-1",
    ]


def wait_for(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def looked(ha: HA, times: int) -> None:
    """Until the background recovery thread has looked `times` times more."""
    start = ha.group.background.passes
    wait_for(lambda: ha.group.background.passes >= start + times, "the background thread stopped")


def test_active_enhanced_recovers_in_the_background_with_no_call_and_obeys_x_and_n(ha):
    """Luna's activeEnhanced: the group's own thread tries a failed member every X s (the
    policy's clock, here the test's), N times at most, and takes it back without any
    application call; activeBasic (Luna's documented rule) again afterwards."""
    m1 = ha.group.members[0]
    ha.group.policy.retries = 2
    ha.group.set_recovery_mode("activeEnhanced")
    try:
        assert ha.group.background.running and not ha.group.recovery.in_calls
        ha.group.background.poll_s = 0.01  # the policy's clock is the test's: look often
        mark = len(ha.group.log.events)
        ha.group.fail_member(m1)
        ha.status()
        ha.clock.advance(ha.x + 1)  # X has passed: one attempt (the member is still dead)
        wait_for(lambda: m1.recovery.recover_attempt_count == 1, "no background attempt after X")
        ha.clock.advance(ha.x / 2)
        looked(ha, 3)  # the thread looks three times more: not due before X
        assert m1.recovery.recover_attempt_count == 1
        ha.clock.advance(ha.x)
        wait_for(lambda: m1.recovery.recover_attempt_count == 2, "no second attempt")
        ha.group.restore_member(m1)
        ha.clock.advance(ha.x + 1)
        looked(ha, 3)  # N = 2 attempts spent: the restored member stays out
        assert not m1.active and ha.group.recovery_exhausted()
        ha.group.policy.retries = -1  # hagroup retry -count -1: attempts again
        wait_for(lambda: m1.active, "the background thread did not take the member back")
        assert ha.events(m1.serial, mark) == [
            "failed",
            "recovery-attempt",
            "recovery-attempt",
            "recovery-exhausted",
            "recovered",
        ]
    finally:
        ha.group.set_recovery_mode("activeBasic")
    assert ha.group.background is None and ha.group.recovery.in_calls


def test_a_standby_member_is_kept_current_serves_only_when_every_active_member_failed(ha, rsa_key):
    """Luna's standby member (hagroup addstandby): logged in and given every key, idle while an
    active member serves (one active member lost changes nothing for it), serving when every
    active member has failed, idle again once one is recovered."""
    m1, m2, m3 = ha.group.members
    m3.standby = True
    try:
        calls = {m.serial: m.calls for m in ha.group.members}
        for _ in range(12):
            sign(ha, rsa_key[1])
        assert m3.calls == calls[m3.serial]  # idle
        assert m1.calls > calls[m1.serial] and m2.calls > calls[m2.serial]
        assert states(ha.group) == ["active", "active", "standby"]  # Member stats (122)
        (key,) = ha.session.generate(KeySpec("aes", 32, "made-beside-a-standby", b"\x5b"))
        on_standby = ha.group.session_for(m3).find_objects({CKA_LABEL: "made-beside-a-standby"})
        assert len(on_standby) == 1  # kept current with key material
        ha.group.fail_member(m1)
        for _ in range(6):
            sign(ha, rsa_key[1])
        assert m3.calls == calls[m3.serial] and not m1.active  # one active member still serves
        assert states(ha.group)[1:] == ["active", "standby"]
        ha.group.fail_member(m2)
        before = m3.calls
        verify(rsa_key[2], sign(ha, rsa_key[1]), b"ckdemo HA test")  # promoted: it serves
        assert m3.calls > before and not m2.active
        assert any("serving: every active member has failed" in line for line in standby_lines(ha.group))
        assert states(ha.group)[2] == "standby (serving)"
        ha.group.restore_member(m1)
        ha.group.restore_member(m2)
        ha.clock.advance(ha.x + 1)
        sign(ha, rsa_key[1])  # the call after X recovers them
        settled(ha)
        assert m1.active and m2.active
        before = m3.calls
        for _ in range(6):
            sign(ha, rsa_key[1])
        assert m3.calls == before  # the load is back on the active members
        assert any("idle while an active member serves" in line for line in standby_lines(ha.group))
        assert states(ha.group) == ["active", "active", "standby"]
        ha.group.fail_member(m3)
        ha.status()  # HA Status finds it failed (a standby serves no call that would)
        assert states(ha.group)[2] in ("failed (standby)", "down (standby)")  # its own state first
        ha.group.restore_member(m3)
        ha.clock.advance(ha.x + 1)
        sign(ha, rsa_key[1])
        settled(ha)
        assert m3.active
        ha.session.destroy_object(key)
    finally:
        m3.standby = False


def states(group) -> list[str]:
    """Each member's State as Member stats (122) shows it."""
    from ckdemo.screens import member_state

    return [member_state(m, group.members) for m in group.members]


def standby_lines(group) -> list[str]:
    from ckdemo.screens import standby_notices

    return standby_notices(group.status())


def test_spent_recovery_attempts_are_logged_once_and_restore_says_who_takes_it_back(ha):
    from ckdemo.screens import restored_line

    m1 = ha.group.members[0]
    ha.group.policy.retries = 1
    mark = len(ha.group.log.events)
    ha.group.fail_member(m1)
    ha.status()
    ha.clock.advance(ha.x + 1)
    ha.session.generate_random(16)  # the one attempt, failed
    ha.clock.advance(ha.x + 1)
    ha.session.generate_random(16)  # none more
    assert ha.events(m1.serial, mark) == ["failed", "recovery-attempt", "recovery-exhausted"]
    how = ha.group.restore_member(m1)
    spent = any(m is m1 for m, _ in ha.group.recovery_exhausted())
    line = restored_line(m1, how, ha.x, spent, "125 Recover now")
    assert "its automatic recovery attempts are spent: 125 Recover now takes it back" in line
    # the member stays down until then: the line does not say it is back in service
    assert f"HSM {m1.serial} ({m1.label}): its token is reachable again (" in line
    assert "it stays out of service" in line and "back in service" not in line
    assert not m1.active
    assert ha.group.recover_now() == [(m1, True)]


def test_a_member_that_fails_right_after_a_change_does_not_fail_the_call(ha, monkeypatch):
    """A member made the object and fails at once (killed, or a fault in the middle of the call)
    before the group reads back what it made: the change holds on the others, so the call
    succeeds and the member is failed (it answered CKR_DEVICE_ERROR for a copy made on two
    members: differential test with remote members, seed 2400045). The failure is injected on
    the first read of the new object, on real tokens."""
    from ckdemo.ha import session as ha_session

    first = ha.group.members[0]
    read = ha_session.replication.identity
    died = []

    def identity(session, handle):
        if not died and getattr(session, "slot", None) is first.slot:
            died.append(ha.group.fail_member(first))  # it dies with the object made
        return read(session, handle)

    monkeypatch.setattr(ha_session.replication, "identity", identity)
    handle = ha.session.create_object(
        {CKA_CLASS: 0, 0x1: False, CKA_LABEL: "made-then-died", 0x11: b"v"}  # TOKEN, VALUE
    )
    monkeypatch.undo()
    assert died, "the injected failure never came: the test does not test"
    assert ha.session.get_attributes(handle, [CKA_LABEL])[CKA_LABEL] == "made-then-died"
    assert ha.status()[first.serial] == "CKR_DEVICE_ERROR"
    ha.session.destroy_object(handle)


@requires_softhsm
def test_a_member_far_slower_than_the_others_is_passed_over_until_it_fails_and_comes_back(tmp_path):
    """The balancing passes a member over for a call it answers far slower than the others
    (ckdemo/ha/failover.py; on real slowed servers: tests/test_remote_rpc.py); a member that
    fails forgets those times and serves its share again once recovered."""
    ha = build_ha(tmp_path)
    slow = ha.group.members[1]
    for member in ha.group.members:
        member.latency["C_GenerateRandom"] = 0.001
    slow.latency["C_GenerateRandom"] = 0.5
    served = slow.calls
    for _ in range(12):
        ha.session.generate_random(8)
    assert slow.calls == served  # passed over (a probe comes every 16th time)
    ha.group.fail_member(slow)
    ha.status()
    assert slow.latency == {}
    heal(ha)
    assert slow.active
    served = slow.calls
    for _ in range(12):
        ha.session.generate_random(8)
    assert slow.calls - served >= 3
