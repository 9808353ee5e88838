"""RecoveryPolicy against the pseudocode of Luna's documentation, with a fake clock (no sleeps):

if (disconnected_member > 0 and recover_attempt_count < N
        and time_now - last_recover_attempt > X) then
    perform auto recovery; set last_recover_attempt = time_now
    failure: increment recover_attempt_count; success: reset recover_attempt_count to 0
"""

from __future__ import annotations

import pytest

from ckdemo.ha.policy import (
    DEFAULT_RECOVERY_INTERVAL_S,
    DEFAULT_RECOVERY_RETRIES,
    RecoveryPolicy,
    RecoveryState,
)
from support import FakeClock

X = 60.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def policy(clock: FakeClock, retries: int = -1, interval_s: float = X) -> RecoveryPolicy:
    return RecoveryPolicy(interval_s=interval_s, retries=retries, clock=clock)


def attempts_over(
    p: RecoveryPolicy,
    state: RecoveryState,
    clock: FakeClock,
    calls: int,
    step_s: float,
    succeed: bool = False,
) -> int:
    """Make `calls` calls step_s apart; each call attempts recovery when due. Returns attempts."""
    attempts = 0
    for _ in range(calls):
        clock.advance(step_s)
        if p.due(state):
            p.attempted(state, recovered=succeed)
            attempts += 1
    return attempts


def test_seed_defaults_one_minute_and_unlimited():
    assert DEFAULT_RECOVERY_INTERVAL_S == 60
    assert DEFAULT_RECOVERY_RETRIES == -1
    p = RecoveryPolicy()
    assert (p.interval_s, p.retries) == (60, -1)


def test_disconnected_state_starts_the_interval_now(clock):
    state = policy(clock).disconnected()
    assert state.last_recover_attempt == clock.now
    assert state.recover_attempt_count == 0


@pytest.mark.parametrize("elapsed", [0.0, 1.0, X / 2, X - 0.001, X])
def test_no_attempt_before_x(clock, elapsed):
    p = policy(clock)
    state = p.disconnected()
    clock.advance(elapsed)
    assert not p.due(state)  # Luna's test is strict: time_now - last > X


def test_attempt_due_just_after_x(clock):
    p = policy(clock)
    state = p.disconnected()
    clock.advance(X + 0.001)
    assert p.due(state)


def test_one_attempt_then_not_due_until_x_later(clock):
    p = policy(clock)
    state = p.disconnected()
    clock.advance(X + 1)
    assert p.due(state)
    p.attempted(state, recovered=False)
    assert state.last_recover_attempt == clock.now
    assert state.recover_attempt_count == 1
    assert not p.due(state)  # a second call at the same instant: no second attempt
    clock.advance(X)
    assert not p.due(state)
    clock.advance(0.5)
    assert p.due(state)


def test_many_calls_after_x_give_one_attempt_per_interval(clock):
    p = policy(clock)
    state = p.disconnected()
    # 4 calls a second for 10 minutes: one attempt per X (strictly more), not one per call
    attempts = attempts_over(p, state, clock, calls=2400, step_s=0.25)
    assert attempts == 9  # at 60.25 s, 120.5 s, ..., 542.25 s; the 10th would be at 602.5 s
    assert state.recover_attempt_count == 9


def test_n_failed_attempts_then_no_more(clock):
    p = policy(clock, retries=2)
    state = p.disconnected()
    assert attempts_over(p, state, clock, calls=10, step_s=X + 1) == 2
    assert state.recover_attempt_count == 2
    assert p.exhausted(state)
    clock.advance(100 * X)
    assert not p.due(state)


def test_n_zero_turns_auto_recovery_off(clock):
    p = policy(clock, retries=0)
    state = p.disconnected()
    clock.advance(1000 * X)
    assert not p.due(state)
    assert p.exhausted(state)


def test_n_minus_one_is_unlimited(clock):
    p = policy(clock, retries=-1)
    state = p.disconnected()
    assert attempts_over(p, state, clock, calls=500, step_s=X + 1) == 500
    assert state.recover_attempt_count == 500
    assert not p.exhausted(state)
    clock.advance(X + 1)
    assert p.due(state)


def test_success_resets_the_count(clock):
    p = policy(clock, retries=3)
    state = p.disconnected()
    assert attempts_over(p, state, clock, calls=2, step_s=X + 1) == 2
    assert state.recover_attempt_count == 2
    clock.advance(X + 1)
    assert p.due(state)
    p.attempted(state, recovered=True)
    assert state.recover_attempt_count == 0
    assert state.last_recover_attempt == clock.now
    # the member fails again later: it gets its full N attempts once more
    assert attempts_over(p, state, clock, calls=10, step_s=X + 1) == 3


def test_each_state_keeps_its_own_counters(clock):
    p = policy(clock, retries=2)
    first = p.disconnected()
    clock.advance(X / 2)
    second = p.disconnected()
    clock.advance(X / 2 + 1)  # first is due, second is not yet
    assert p.due(first) and not p.due(second)
    p.attempted(first, recovered=False)
    clock.advance(X / 2)
    assert not p.due(first) and p.due(second)
    p.attempted(second, recovered=True)
    assert (first.recover_attempt_count, second.recover_attempt_count) == (1, 0)
    clock.advance(X + 1)
    p.attempted(first, recovered=False)
    assert p.exhausted(first) and not p.exhausted(second)


def test_interval_comes_from_the_policy_not_a_constant(clock):
    p = policy(clock, interval_s=5)
    state = p.disconnected()
    clock.advance(5)
    assert not p.due(state)
    clock.advance(0.1)
    assert p.due(state)


def test_a_readmitted_member_is_due_at_once_and_then_every_x(clock):
    p = policy(clock)
    state = p.readmitted()
    assert p.due(state)  # HA Init let it back in: the next call tries it
    p.attempted(state, recovered=False)
    assert not p.due(state)
    clock.advance(X + 0.001)
    assert p.due(state)


def test_configure_changes_x_and_n_for_members_already_down(clock):
    p = policy(clock, retries=-1)
    state = p.disconnected()
    clock.advance(10)
    assert not p.due(state)
    p.configure(interval_s=5)
    assert p.due(state)  # the new X applies to a member that failed under the old one
    p.configure(retries=0)
    assert not p.due(state) and p.exhausted(state)
    p.configure()  # nothing given: nothing changes
    assert p.interval_s == 5 and p.retries == 0
