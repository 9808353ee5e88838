"""A running menu takes `ckdemo hagroup ...` changes made from another terminal.

Before each choice the menu asks `ConfigWatch.poll()`; when Chrystoki.conf has changed (a new
mtime, size or inode: `hagroup` saves by renaming a new file over the old one), it is read again.
Recovery X and N (AutoReconnectInterval, reconnAtt) are handed to each group's policy through
`configure()`, the recovery mode (VirtualTokenActiveRecovery) through `set_recovery_mode()`. What a running process cannot change under its user is named instead, with the
value it keeps until it restarts: HAOnly (the slot list, and the slot numbers scripts and open
sessions use), haLogStatus/haLogPath (the log is opened at start), HASynchronize and the
members of a group (the group is built at start).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from . import ha
from .chrystoki import ChrystokiConf


class Configurable(Protocol):
    def configure(self, interval_s: float | None = None, retries: int | None = None) -> None: ...


class WatchedGroup(Protocol):
    label: str
    policy: Configurable

    def set_recovery_mode(self, mode: str) -> None: ...


@dataclass(frozen=True)
class Snapshot:
    """What the file says, in the terms a running process uses."""

    settings: ha.HASettings
    members: tuple[tuple[str, tuple[str, ...]], ...]  # (group label, member serials)
    synchronize: tuple[tuple[str, bool], ...]  # (group label, HASynchronize)

    @classmethod
    def of(cls, conf: ChrystokiConf) -> "Snapshot":
        groups = ha.groups(conf)
        return cls(
            ha.settings(conf),
            tuple((g.label, tuple(g.members)) for g in groups),
            tuple((g.label, ha.synchronize_on_recovery(conf, g.label)) for g in groups),
        )


def retries_words(retries: int) -> str:
    return (
        "unlimited attempts"
        if retries < 0
        else "auto-recovery off"
        if retries == 0
        else f"{retries} attempts"
    )


class ConfigWatch:
    def __init__(
        self, path: str | os.PathLike, running: ChrystokiConf, groups: Sequence[WatchedGroup]
    ) -> None:
        self.path = Path(path)
        self.groups = groups
        self.running = Snapshot.of(running)  # what this process was built with
        self.seen = self.running  # what the file said when last read
        self._stamp: tuple[int, int, int] | None = None  # unknown: the first poll reads the file

    def _stamp_now(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self) -> list[str]:
        """Notices for the user, one line each; nothing when the file has not changed."""
        stamp = self._stamp_now()
        if stamp is not None and stamp == self._stamp:
            return []
        self._stamp = stamp
        try:
            new = Snapshot.of(ChrystokiConf.load(self.path))
        except (OSError, ValueError) as exc:  # ValueError: syntax, or a value ckdemo cannot use
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return [f"{self.path.name} changed but cannot be used ({reason}): this menu keeps its settings"]
        old, self.seen = self.seen, new
        notices = []
        x, n = new.settings.interval_s, new.settings.reconnect_attempts
        if (x, n) != (old.settings.interval_s, old.settings.reconnect_attempts) and self.groups:
            for group in self.groups:
                group.policy.configure(interval_s=x, retries=n)
            notices.append(
                f"{self.path.name} changed: recovery every {x:g} s, {retries_words(n)}, from this choice on"
            )
        mode = new.settings.recovery_mode
        if mode != old.settings.recovery_mode and self.groups:
            for group in self.groups:
                group.set_recovery_mode(mode)
            notices.append(
                f"{self.path.name} changed: recovery mode {mode} ("
                + ("in the background" if mode == "activeEnhanced" else "inside application calls")
                + "), from this choice on"
            )
        kept = self.running
        for name, before, after, running in (
            ("HAOnly", old.settings.ha_only, new.settings.ha_only, kept.settings.ha_only),
            ("haLogStatus", old.settings.log_enabled, new.settings.log_enabled, kept.settings.log_enabled),
            ("haLogPath", old.settings.log_path, new.settings.log_path, kept.settings.log_path),
            ("HA group members", old.members, new.members, kept.members),
            ("HASynchronize", old.synchronize, new.synchronize, kept.synchronize),
        ):
            if before != after and after != running:
                notices.append(
                    f"{self.path.name} changed {name}: this menu keeps {_words(running)} until it restarts"
                )
        return notices


def _words(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return (
            "; ".join(
                f"{label} = {_words(v) if not isinstance(v, tuple) else ','.join(v)}" for label, v in value
            )
            or "none"
        )
    return str(value)
