"""One member of an HA group: a physical slot known by its token serial, and its health."""

from __future__ import annotations

import enum
from typing import Any

from ..codes import CKR_DEVICE_ERROR, CKR_OK, CKR_TOKEN_NOT_PRESENT, CKR_TOKEN_NOT_RECOGNIZED, CKRError
from .policy import RecoveryState


class MemberState(enum.Enum):
    ACTIVE = "active"
    FAILED = "failed"  # failure seen, not yet reported: HA status shows CKR_DEVICE_ERROR once
    DOWN = "down"  # reported: HA status shows CKR_TOKEN_NOT_PRESENT until it is back
    REJECTED = "rejected"  # came back with another or an empty token: kept out until HA Init


STATUS_CODE = {
    MemberState.ACTIVE: CKR_OK,
    MemberState.FAILED: CKR_DEVICE_ERROR,
    MemberState.DOWN: CKR_TOKEN_NOT_PRESENT,
    MemberState.REJECTED: CKR_TOKEN_NOT_RECOGNIZED,
}


class MemberRejected(Exception):
    """A member came back but must not rejoin silently (another token, or an emptied one)."""


class HAMember:
    def __init__(self, serial: str, slot: Any | None, label: str = "", standby: bool = False) -> None:
        self.serial = serial
        # a standby member (lunacm: hagroup addstandby) is logged in and kept current, and serves
        # no call while an active member that is not standby does (failover.Failover._pick)
        self.standby = standby
        self.slot = slot  # a physical slot, or None while it cannot be found
        self.label = label
        self.state = MemberState.ACTIVE if slot is not None else MemberState.DOWN
        self.recovery: RecoveryState | None = None
        self.calls = 0  # calls served (load-balancing share)
        self.outstanding = 0  # calls in flight now (least-busy balancing)
        # its recent answer time per function, smoothed (failover.Failover: a member far slower
        # than the others at a call is passed over for it, asked now and then to see it recover)
        self.latency: dict[str, float] = {}
        self.passed_over = 0
        self.index = 0  # position in the group (set by the group)
        self.refused: set[int] = set()  # mechanisms this member cannot do (e.g. over p11-kit RPC)
        self.generation = 0  # bumped at each recovery: older sessions and handles are void
        self.anchor = None  # the member session that holds the login (one per token and module instance)
        # recovered while no user was logged in: brought up to date in its public objects only
        # (the private ones are invisible); made as its source is at the next user login
        self.private_unsynced = False
        self.last_error: CKRError | None = None
        # reconnected and logged in, brought up to date off the application's calls (rejoin.py):
        # out of service meanwhile, shown so in HA Status, and not tried again
        self.recovering = False

    @property
    def active(self) -> bool:
        return self.state is MemberState.ACTIVE

    @property
    def down(self) -> bool:
        """Failed or reported down: automatic recovery looks at it."""
        return self.state in (MemberState.FAILED, MemberState.DOWN)

    # ---- the member's state machine: every change of state is one of these -------------------
    def fail(self, recovery: RecoveryState) -> None:
        """A member-fatal result: out of service; its sessions and handles are void (a module
        initialised again reuses their numbers)."""
        self.state = MemberState.FAILED
        self.recovery = recovery
        self.generation += 1
        self.anchor = None
        self.latency.clear()  # it comes back as a new member: its times are learnt anew

    def reported(self) -> None:
        """HA Status has shown the failure (CKR_DEVICE_ERROR) once: CKR_TOKEN_NOT_PRESENT now."""
        if self.state is MemberState.FAILED:
            self.state = MemberState.DOWN

    def rejoin(self) -> None:
        """Recovered: back in service."""
        self.state = MemberState.ACTIVE
        self.recovery = None

    def reject(self) -> None:
        """Came back as another or an emptied token: kept out until HA Init."""
        self.state = MemberState.REJECTED

    def readmit(self, recovery: RecoveryState) -> None:
        """HA Init let a rejected member back: the next recovery takes it in."""
        if self.state is MemberState.REJECTED:
            self.state = MemberState.DOWN
            self.recovery = recovery

    def status_code(self) -> int:
        return STATUS_CODE[self.state]

    def __repr__(self) -> str:
        return f"HAMember({self.serial}, {self.state.value})"
