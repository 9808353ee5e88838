"""One way to build an HA group, for every part that needs one (the harness, measurements over
the first N members, token initialisation): the group's settings read once into a frozen value,
its members as (serial, slot, label), and the clock its recovery policy runs on."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .events import HALog
from .group import HAGroup
from .journal import Journal
from .member import HAMember
from .pin_lock import PinLock
from .policy import DEFAULT_RECOVERY_INTERVAL_S, DEFAULT_RECOVERY_RETRIES, RecoveryPolicy
from .vault import Vault


@dataclass(frozen=True)
class GroupConfig:
    """What the configuration says of one group."""

    label: str
    serial: str
    interval_s: float = DEFAULT_RECOVERY_INTERVAL_S  # Luna's X
    retries: int = DEFAULT_RECOVERY_RETRIES  # Luna's N
    slot_id: int = 0
    balance: bool = True
    synchronize_on_recovery: bool = True
    recovery_mode: str = "activeBasic"  # lunacm: hagroup recoverymode (activeEnhanced: background)
    standby: frozenset[str] = frozenset()  # serials of standby members (lunacm: hagroup addstandby)


def build_group(
    config: GroupConfig,
    members: Sequence[tuple[str, Any, str]],
    clock: Callable[[], float] = time.monotonic,
    *,
    log: HALog | None = None,
    pin_lock: PinLock | None = None,
    vault: Vault | None = None,
    state_lock: Callable[[], AbstractContextManager] = nullcontext,
    journal: Journal | None = None,
) -> HAGroup:
    """members: (token serial, its slot or None while it cannot be found, token label)."""
    return HAGroup(
        config.label,
        config.serial,
        [HAMember(*member, standby=member[0] in config.standby) for member in members],
        RecoveryPolicy(config.interval_s, config.retries, clock),
        log,
        slot_id=config.slot_id,
        balance=config.balance,
        state_lock=state_lock,
        synchronize_on_recovery=config.synchronize_on_recovery,
        pin_lock=pin_lock,
        vault=vault,
        recovery_mode=config.recovery_mode,
        journal=journal,
    )
