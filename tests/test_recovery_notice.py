"""When automatic recovery has used up its N attempts, HA Status (52) and Member stats (122) say
so and name the ways out: 125 Recover now, which takes the member back, and LunaCM's
`ckdemo hagroup recover` for a running `ckdemo serve` (tests/test_hagroup_verbs.py runs it)."""

from __future__ import annotations

from conftest import requires_softhsm

pytestmark = requires_softhsm

# the notice word for word; `hagroup recover` is LunaCM's verb (commands/hagroup.py), not `status --recover`
NOTICE = "recovery attempts exhausted (1 of 1); 125 Recover now or `ckdemo hagroup recover`"


def test_exhausted_recovery_is_shown_where_the_user_looks(menu, home):
    code, out = menu(
        home,
        """\
        @ha-interval 0.05
        @ha-retry 1
        51
        ${HA_SLOT}
        ${CKDEMO_USER_PIN}
        @fail member1
        52
        ${HA_SLOT}
        @sleep 0.2
        52
        ${HA_SLOT}
        @sleep 0.2
        122
        ${HA_SLOT}
        @restore member1
        125
        ${HA_SLOT}
        52
        ${HA_SLOT}
        0
        """,
    )
    assert code == 0, out
    first, second, after = _status_blocks(out)
    assert "CKR_DEVICE_ERROR" in first and NOTICE not in first  # failed: not given up yet
    assert NOTICE in second  # one attempt made and failed: N = 1 is used up
    stats = out[out.index("Enter your choice : 122") : out.index("Enter your choice : 125")]
    assert NOTICE in stats
    assert "exhausted" not in after and after.count("- CKR_OK") == 3  # 125 took it back


def _status_blocks(out: str) -> list[str]:
    """The text of each 52 HA Status, in order."""
    blocks = out.split("Enter your choice : 52")[1:]
    return [b.split("Enter your choice")[0] for b in blocks]
