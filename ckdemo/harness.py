"""Builds the workspace the menu drives: loads the configured libraries and lists their slots."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from . import interprocess
from .codes import CKRError
from .config import ha as ha_config
from .settings import Settings, SettingsError
from .workspace import Options, Workspace


def build_workspace(settings: Settings, start_servers: bool = True, show_menu: bool = True) -> Workspace:
    """The slots the settings give (members, remote members' servers started when asked, HA
    groups); show_menu: the menu is shown before every prompt (CKDemo's default; a replay's
    transcript shows it once)."""
    from .members.module import module_for  # python-pkcs11 is imported only when needed
    from .members.slot import PhysicalSlot

    settings.apply_environment()
    libraries = settings.libraries()
    if not libraries:
        raise SettingsError(
            f"no PKCS#11 library configured in {settings.config_path} (use --module PATH or ckdemo init)"
        )
    slots = []
    for path in libraries:
        try:
            module = module_for(path).load()
            slot_ids = module.slot_ids()
        except CKRError as exc:
            raise SettingsError(f"cannot use PKCS#11 library {path}: {exc}") from None
        slots.extend(PhysicalSlot(module, slot_id) for slot_id in slot_ids)
    remote = settings.remote_members()
    if remote:  # those tokens are reached through their servers, not loaded here as well
        slots = [s for s in slots if _label(s) not in remote] + _remote_slots(settings, start_servers)
    isolated = [m for m in settings.isolated_members() if m not in remote]
    if isolated:  # each through its own instance of the library, not the shared one
        slots = [s for s in slots if _label(s) not in isolated] + _isolated_slots(settings, isolated)
    slots = _in_member_order(slots, settings.member_labels())
    groups = build_groups(settings, slots)
    ha = ha_config.settings(settings.conf)
    if ha.ha_only and groups:  # Luna's HAOnly: physical slots hidden, only virtual slots listed
        slots = []
    return Workspace(slots + groups, groups=groups, options=Options(show_menu=show_menu))


def build_groups(settings: Settings, slots: list) -> list:
    from .ha.build import GroupConfig, build_group
    from .ha.events import HALog
    from .ha.pin_lock import PinLock
    from .ha.journal import FileSequence, Journal
    from .ha.vault import Vault

    try:
        ha = ha_config.settings(settings.conf)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    by_serial = {}
    serials = settings.member_serials()
    for slot in slots:
        label = slot.member_label
        if label and label in serials:  # a remote member: known even while its server is down
            by_serial[serials[label]] = (slot, label)
        try:
            if slot.slot_info().token_present:
                info = slot.token_info()
                by_serial.setdefault(info.serial_number, (slot, info.label))
        except CKRError:
            continue  # a slot that cannot answer cannot be a member now; recovery looks again
    groups = []
    log = HALog(_log_path(settings, ha)) if ha.log_enabled else HALog()
    for number, group in enumerate(ha_config.groups(settings.conf)):
        config = GroupConfig(
            group.label,
            group.serial,
            ha.interval_s,
            ha.reconnect_attempts,
            HA_SLOT_ID_BASE + number,
            synchronize_on_recovery=ha_config.synchronize_on_recovery(settings.conf, group.label),
            recovery_mode=ha.recovery_mode,
            standby=frozenset(group.standby),
            balance=settings.balance,
        )
        members = [(serial, *by_serial.get(serial, (None, ""))) for serial in group.members]
        groups.append(
            build_group(
                config,
                members,
                log=log,
                pin_lock=PinLock(settings.pin_lock_path(group.serial), settings.failed_login_limit()),
                vault=Vault(settings.vault_dir(group.serial)),
                journal=Journal(FileSequence(settings.journal_path(group.serial))),
                state_lock=partial(interprocess.state_lock, settings.home),
            )
        )
    return groups


def _log_path(settings: Settings, ha) -> Path:
    if not ha.log_path:
        return settings.home / "ha.log"
    path = Path(ha.log_path)
    return path / "haErrorLog.txt" if path.is_dir() else path


HA_SLOT_ID_BASE = 0x5000  # virtual slot ids: clear of SoftHSM's small free-slot ids


def _label(slot) -> str | None:
    try:
        return slot.token_info().label if slot.slot_info().token_present else None
    except CKRError:
        return slot.member_label


def _in_member_order(slots: list, labels: list[str]) -> list:
    """Members first in the configured order, so slot#1 is member1 whatever ids SoftHSM drew."""

    def key(slot) -> tuple[int, int]:
        label = slot.member_label or _label(slot)
        return (labels.index(label) if label in labels else len(labels), slot.slot_id or 0)

    return sorted(slots, key=key)


def _isolated_slots(settings: Settings, labels: list[str]) -> list:
    """Local members each through a private copy of the library: an independent instance (own
    lock, own sessions, own C_Finalize/C_Initialize), so members run calls in parallel
    and a member is re-initialised alone. Same SOFTHSM2_CONF, each copy uses its own token."""
    import shutil
    from .members.module import module_for
    from .members.slot import PhysicalSlot

    source = settings.libraries()[0]
    lib_dir = settings.home / "lib"
    lib_dir.mkdir(parents=True, exist_ok=True)
    slots = []
    for label in labels:
        copy = lib_dir / f"{Path(source).stem}-{label}.so"
        if not copy.exists() or copy.stat().st_size != Path(source).stat().st_size:
            shutil.copyfile(source, copy.with_suffix(".tmp"))
            copy.with_suffix(".tmp").replace(copy)
        try:
            module = module_for(str(copy), dedicated=True).load()
            found = [PhysicalSlot(module, i, member_label=label) for i in module.slot_ids(token_present=True)]
        except CKRError as exc:
            raise SettingsError(f"cannot load the private copy {copy}: {exc}") from None
        slots += [slot for slot in found if _label(slot) == label][:1]
    return slots


def member_servers(settings: Settings, shared_by_runs: bool = False) -> list:
    """The p11-kit servers of the remote members, in member order. `shared_by_runs`: for a run,
    whose servers end with the last ckdemo process using them (not for `ckdemo member ...`)."""
    from .members.remote import MemberServer
    from .provision import softhsm_library

    servers = []
    for label in settings.remote_members():
        socket, managed = settings.member_socket(label)
        servers.append(
            MemberServer(
                label,
                socket,
                settings.home / "run",
                softhsm_library(),
                settings.softhsm_conf(),
                managed,
                shared_by_runs=shared_by_runs,
            )
        )
    return servers


def _remote_slots(settings: Settings, start_servers: bool) -> list:
    """One RemoteSlot per remote member: ckdemo speaks p11-kit RPC to the member's server
    socket itself (members/rpcclient.py), each member on its own connection, every call with
    the MemberTimeout deadline of its socket."""
    import atexit
    from .members.remote import RemoteError
    from .members.rpcslot import RemoteSlot

    slots, servers = [], member_servers(settings, shared_by_runs=True)
    # every server this process uses holds a lease until it exits; a server a run started (at
    # start, or on a restore) is stopped by the last process using it, whichever that is; those
    # started by `ckdemo member serve` keep running
    atexit.register(_detach, servers)
    try:
        for server in servers:
            server.attach(start=start_servers)
            slots.append(RemoteSlot(server, settings.member_timeout(), settings.member_hedge_floor()))
    except RemoteError as exc:
        raise SettingsError(str(exc)) from None
    return slots


def _detach(servers: list) -> None:
    for server in servers:
        server.detach()
