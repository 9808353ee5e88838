"""A member that comes back is recovered off the application's calls (ckdemo/ha/rejoin.py), on
real SoftHSM2 members in process with a fake clock for X: the call after X only starts the
attempt (reconnecting re-reads the token's object files, a SoftHSM2 search reads every object the
token holds), the member is shown "recovering" and serves nothing until it is caught up, and a
change the application makes meanwhile reaches it before it serves again.

The catch-up is held at a gate (an Event) where a test needs it under way; work is counted in
member calls made by the application's own thread, never timed."""

from __future__ import annotations

import os
import threading
from collections import Counter

import pytest

from ckdemo.ha.recovery import Recovery
from ckdemo.model import (
    CKA_CLASS,
    CKA_LABEL,
    CKA_PRIVATE,
    CKA_TOKEN,
    CKA_VALUE,
    CKO_DATA,
    CKO_SECRET_KEY,
    KeySpec,
)
from ckdemo.screens import recovering_notices
from conftest import requires_softhsm
from test_ha_group import HA, build_ha, heal, settled
from test_ha_journal import Counting, fail, ids_on, on_member

pytestmark = requires_softhsm

HELD = 100  # objects every member holds (300 in all): every search on a member reads them all


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> HA:
    ha = build_ha(tmp_path_factory.mktemp("ha-rejoin"))
    for member in ha.group.members:  # made alike straight on each member token (quicker)
        session = member.slot.open_session(rw=True)
        try:
            for n in range(HELD):
                session.create_object(
                    {
                        CKA_CLASS: CKO_DATA,
                        CKA_TOKEN: True,
                        CKA_PRIVATE: True,
                        CKA_LABEL: f"held-{n}",
                        CKA_VALUE: b"%d" % n,
                    }
                )
        finally:
            session.close()
    ha.session.create_object(
        {
            CKA_CLASS: CKO_DATA,
            CKA_TOKEN: True,
            CKA_PRIVATE: True,
            CKA_LABEL: "marks every member",
            CKA_VALUE: b"m",
        }
    )
    yield ha
    heal(ha)


@pytest.fixture
def ha(big) -> HA:
    assert all(m.active for m in big.group.members), big.group.members
    yield big
    heal(big)


class Gate:
    """Holds the member's catch-up after its first pass until opened (Recovery.bring_up_to_date)."""

    def __init__(self, monkeypatch) -> None:
        self.reached, self.open = threading.Event(), threading.Event()
        original = Recovery.bring_up_to_date

        def held(recovery, source, target, background=False):
            original(recovery, source, target, background)
            if background:
                self.thread = threading.get_ident()  # the attempt's own thread
                self.reached.set()
                assert self.open.wait(20), "the test never opened the gate"

        monkeypatch.setattr(Recovery, "bring_up_to_date", held)


def counting_by_thread(ha: HA, member) -> Counter:
    """Calls on the member's new sessions and the other members' anchor sessions, counted by
    (thread, operation). Undone by heal()/the fixture's restore of anchors."""
    counts: Counter = Counter()

    class ByThread(Counting):
        def __getattr__(self, name):
            attribute = getattr(self._session, name)
            if not callable(attribute):
                return attribute

            def call(*args, **kwargs):
                counts[(threading.get_ident(), name)] += 1
                return attribute(*args, **kwargs)

            return call

    opened = member.slot.open_session
    member.slot.open_session = lambda rw=True: ByThread(opened(rw), counts)
    for other in ha.group.members:
        if other is not member and other.active:
            other.anchor = ByThread(ha.group.session_for(other), counts)
    return counts


def uncount(ha: HA, member) -> None:
    del member.slot.open_session
    for other in ha.group.members:
        if isinstance(other.anchor, Counting):
            other.anchor = other.anchor._session


def test_the_call_that_makes_the_attempt_does_not_wait_for_the_catch_up(ha, monkeypatch):
    """Member3 comes back to a group whose members hold 100 objects each: the application call after X
    starts the attempt and returns while the catch-up is held at the gate; its thread made no
    member call but its own. Meanwhile the member is "recovering" in HA Status and serves nothing;
    once the gate opens it serves again, holding what was made while it was away."""
    member = ha.group.members[2]
    gate = Gate(monkeypatch)
    fail(ha, member)
    for n in range(3):
        ha.session.create_object(
            {CKA_CLASS: CKO_DATA, CKA_TOKEN: True, CKA_PRIVATE: True, CKA_LABEL: f"away-{n}", CKA_VALUE: b"a"}
        )
    ha.group.restore_member(member)
    ha.clock.advance(ha.x + 1)
    counts = counting_by_thread(ha, member)
    try:
        done = threading.Event()
        app = threading.Thread(target=lambda: (ha.session.generate_random(8), done.set()))
        app.start()
        app.join(10)
        assert done.is_set(), "the call carrying the recovery waited for the catch-up"
        assert gate.reached.wait(10), "the catch-up did not start"
        mine = {name: n for (thread, name), n in counts.items() if thread == app.ident}
        assert mine == {"generate_random": 1}, mine  # no search, no login: only its own call
        assert counts[(gate.thread, "login")] == 1 and counts[(gate.thread, "find_objects")] > 0
        assert not member.active and member.recovering
        assert [line.split(":")[1].strip() for line in recovering_notices(ha.group.status())] == [
            "recovering"
        ]
        served = member.calls
        for _ in range(6):
            ha.session.generate_random(8)
        assert member.calls == served  # out of service while it is brought up to date
    finally:
        gate.open.set()
        uncount(ha, member)
    settled(ha)
    assert member.active and not member.recovering
    assert recovering_notices(ha.group.status()) == []
    for n in range(3):
        assert len(on_member(member, {CKA_CLASS: CKO_DATA, CKA_LABEL: f"away-{n}"})) == 1
    assert [e.event for e in ha.group.log.events if e.member == member.serial][-1] == "recovered"


def test_a_change_made_during_the_catch_up_reaches_the_member_before_it_serves(ha, monkeypatch):
    member = ha.group.members[2]
    (doomed,) = ha.session.generate(KeySpec("aes", 32, "rejoin-doomed", os.urandom(8)))
    doomed_id = ha.session.get_attributes(doomed, [0x102])[0x102]  # CKA_ID
    gate = Gate(monkeypatch)
    fail(ha, member)
    ha.group.restore_member(member)
    ha.clock.advance(ha.x + 1)
    ha.session.generate_random(8)  # the attempt: the catch-up starts, and stops at the gate
    assert gate.reached.wait(10)
    during_id = os.urandom(8)
    try:
        ha.session.generate(KeySpec("aes", 32, "rejoin-during", during_id))  # on the others only
        ha.session.destroy_object(doomed)
        ha.session.create_object(
            {
                CKA_CLASS: CKO_DATA,
                CKA_TOKEN: True,
                CKA_PRIVATE: True,
                CKA_LABEL: "rejoin-during-data",
                CKA_VALUE: b"d",
            }
        )
        assert not member.active
        assert during_id not in ids_on(member, CKO_SECRET_KEY)
    finally:
        gate.open.set()
    settled(ha)
    assert member.active
    ids = ids_on(member, CKO_SECRET_KEY)
    assert during_id in ids and doomed_id not in ids
    assert len(on_member(member, {CKA_CLASS: CKO_DATA, CKA_LABEL: "rejoin-during-data"})) == 1
    # marked as the group is now: its next recovery has nothing to replay
    fail(ha, member)
    ha.group.restore_member(member)
    ha.clock.advance(ha.x + 1)
    replays = ha.group.recovery.replays
    ha.session.generate_random(8)
    settled(ha)
    assert member.active and ha.group.recovery.replays == replays + 1


def test_a_failure_during_the_catch_up_is_a_failed_attempt_counted_as_the_seed_counts(ha, monkeypatch):
    """The member fails again while it is brought up to date: one failed attempt (Luna's
    counter and HA log line), tried again after X, and back after that."""
    member = ha.group.members[1]
    gate = Gate(monkeypatch)
    fail(ha, member)
    ha.group.restore_member(member)
    ha.clock.advance(ha.x + 1)
    mark = len(ha.group.log.events)
    ha.session.generate_random(8)
    assert gate.reached.wait(10)
    ha.group.fail_member(member)  # dies under its catch-up
    gate.open.set()
    settled(ha)
    assert not member.active and member.recovery.recover_attempt_count == 1
    assert [e.event for e in ha.group.log.events[mark:] if e.member == member.serial] == ["recovery-attempt"]
    ha.group.restore_member(member)
    ha.session.generate_random(8)  # less than X since that attempt: nothing
    settled(ha)
    assert not member.active
    ha.clock.advance(ha.x + 1)
    ha.session.generate_random(8)
    settled(ha)
    assert member.active and member.recovery is None
