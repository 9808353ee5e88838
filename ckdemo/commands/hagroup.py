"""`ckdemo hagroup ...`: HA groups and settings in Chrystoki.conf, as lunacm's hagroup commands.

LunaCM users type single-dash options (`hagroup haonly -enable`, `hagroup retry -count 3`,
`hagroup addmember -group L -serial S`): every option here takes that spelling beside its own.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import Fail, settings_for, workspace_for

# what a running process does with a change (config/watch.py: the menu re-reads the file)
APPLIED_LIVE = (
    "A running ckdemo menu applies it before its next choice; a running "
    "`ckdemo serve` keeps the old value until it restarts."
)
AT_RESTART = "A running ckdemo menu or `ckdemo serve` keeps the old value until it restarts."
NOT_LIVE_BECAUSE = {
    "HAOnly": " (HAOnly decides the slot list, and slot numbers must not move under a session)",
    "haLogStatus": " (the HA log is opened at start)",
    "HASynchronize": " (the group is built at start)",
    "members": " (the group is built at start)",
}


@click.group(context_settings={"token_normalize_func": lambda word: word.lower()})
def hagroup() -> None:
    """HA groups and settings in Chrystoki.conf (Luna's lunacm 'hagroup' commands, in any case:
    listGroups, addStandby; lunacm's single-dash options, e.g. -enable, -count, -group, -serial,
    are accepted too)."""


def _edit_conf(ctx: click.Context, change, effect: str | None = None) -> None:
    """Apply `change` to the file and save it; `effect`: what running processes do with it."""
    from ..config.chrystoki import ChrystokiConf

    settings = settings_for(ctx)
    conf = (
        ChrystokiConf.load(settings.config_path)
        if settings.config_path.exists()
        else ChrystokiConf.parse(settings.conf.dumps(), str(settings.config_path))
    )  # settings stay as read
    try:
        said = change(conf)
    except ValueError as exc:  # a value the config cannot hold, or an edit the group refuses
        raise Fail(str(exc)) from None
    try:
        conf.save(settings.config_path)
    except OSError as exc:
        raise Fail(f"cannot write {settings.config_path}: {exc.strerror}") from None
    click.echo(f"Updated {settings.config_path}" + (f": {said}" if said else ""))
    if effect:
        click.echo(effect)


def _group_option(f):
    return click.option(
        "--group",
        "-group",
        "group_ref",
        metavar="LABEL|SERIAL",
        help="The HA group, by label or serial (default: the only group).",
    )(f)


# ---- recovery: retry, interval, recover, recoverymode ------------------------------------------


@hagroup.command()
@click.option(
    "--count",
    "-count",
    required=True,
    type=click.IntRange(min=-1),
    help="Recovery attempts N (-1 unlimited, 0 turns auto-recovery off).",
)
@_group_option
@click.pass_context
def retry(ctx: click.Context, count: int, group_ref: str | None) -> None:
    """Set HAConfiguration reconnAtt (creates the section, as lunacm does). It is one setting for
    every group (HAConfiguration is one section): -group only checks that the group exists."""
    from ..config import ha

    _check_group(ctx, group_ref)
    _edit_conf(ctx, lambda conf: ha.set_retry(conf, count), APPLIED_LIVE)


def _check_group(ctx: click.Context, group_ref: str | None) -> None:
    """-group on a verb whose setting is every group's: the group must exist all the same."""
    if group_ref is None:
        return
    from ..config import ha

    try:
        ha.find_group(settings_for(ctx).conf, group_ref)
    except ValueError as exc:
        raise Fail(str(exc)) from None


@hagroup.command()
@click.option(
    "--seconds",
    "-interval",
    required=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Recovery interval X in seconds (Luna: 60 minimum; shorter allowed for demos).",
)
@_group_option
@click.pass_context
def interval(ctx: click.Context, seconds: float, group_ref: str | None) -> None:
    """Set HAConfiguration AutoReconnectInterval (every group's, as retry)."""
    from ..config import ha

    _check_group(ctx, group_ref)
    _edit_conf(ctx, lambda conf: ha.set_interval(conf, seconds), APPLIED_LIVE)


@hagroup.command()
@_group_option
@click.pass_context
def recover(ctx: click.Context, group_ref: str | None) -> None:
    """Manual recovery now, whatever X and N say (lunacm: hagroup recover -group L; menu choice
    125). Beside a running `ckdemo serve`, its groups recover; otherwise this process tries the
    members it could not reach at start."""
    _check_group(ctx, group_ref)
    _recover(ctx, group_ref)


@hagroup.command()
@click.option(
    "--mode",
    "-mode",
    type=click.Choice(["activeBasic", "activeEnhanced"], case_sensitive=False),
    help="activeBasic: recovery inside application calls (the default); activeEnhanced: "
    "in the background, every X s, with no call needed.",
)
@click.pass_context
def recoverymode(ctx: click.Context, mode: str | None) -> None:
    """Set (or, without -mode, show) Luna's recovery mode: VirtualToken VirtualTokenActiveRecovery."""
    from ..config import ha

    if mode is None:
        settings = settings_for(ctx)
        try:
            now = ha.recovery_mode(settings.conf)
        except ValueError as exc:
            raise Fail(str(exc)) from None
        click.echo(f"Recovery mode: {now} ({_mode_words(now)})")
        return
    chosen = next(m for m in ha.RECOVERY_MODES if m.lower() == mode.lower())
    _edit_conf(ctx, lambda conf: ha.set_recovery_mode(conf, chosen), APPLIED_LIVE)


def _mode_words(mode: str) -> str:
    return (
        "a failed member is tried in the background every X s, no application call needed"
        if mode == "activeEnhanced"
        else "a failed member is tried inside an application call, every X s (as Luna's activeBasic)"
    )


# ---- switches: haonly, log, synchronize -----------------------------------------------------------


def _one_switch(given: dict[str, bool], usage: str) -> str:
    chosen = [name for name, on in given.items() if on]
    if len(chosen) != 1:
        raise Fail(f"give exactly one of {usage}")
    return chosen[0]


@hagroup.command()
@click.argument("state", required=False, type=click.Choice(["on", "off"]))
@click.option("--enable", "-enable", is_flag=True, help="HAOnly on (lunacm: hagroup haonly -enable).")
@click.option("--disable", "-disable", is_flag=True, help="HAOnly off (lunacm: -disable).")
@click.option("--show", "-show", "show_it", is_flag=True, help="Print HAOnly as the file sets it.")
@click.pass_context
def haonly(ctx: click.Context, state: str | None, enable: bool, disable: bool, show_it: bool) -> None:
    """Set HAConfiguration HAOnly: list only the virtual slots, hide the members."""
    from ..config import ha

    choice = _one_switch(
        {"on": state == "on" or enable, "off": state == "off" or disable, "show": show_it},
        "on, off, --enable, --disable, --show",
    )
    if state and (enable or disable or show_it):
        raise Fail("give exactly one of on, off, --enable, --disable, --show")
    if choice == "show":
        on = ha.settings(settings_for(ctx).conf).ha_only
        click.echo(
            f"HAOnly = {int(on)} ({'only the HA virtual slots are listed' if on else 'members and HA virtual slots are listed'})"
        )
        return
    value = "1" if choice == "on" else "0"

    def change(conf) -> str:
        conf.set("HAConfiguration", "HAOnly", value)
        return f"HAOnly = {value}"

    _edit_conf(ctx, change, AT_RESTART[:-1] + NOT_LIVE_BECAUSE["HAOnly"] + ".")


@hagroup.command()
@click.argument("state", required=False, type=click.Choice(["on", "off"]))
@click.option("--enable", "-enable", is_flag=True, help="haLogStatus enabled (lunacm: -enable).")
@click.option("--disable", "-disable", is_flag=True, help="haLogStatus disabled (lunacm: -disable).")
@click.option(
    "--path", "-path", type=click.Path(), help="haLogPath: a log file, or a folder for haErrorLog.txt."
)
@click.pass_context
def log(ctx: click.Context, state: str | None, enable: bool, disable: bool, path: str | None) -> None:
    """Set HAConfiguration haLogStatus (and haLogPath): on or off, or -enable or -disable."""
    chosen = _one_switch(
        {"on": state == "on" or enable, "off": state == "off" or disable}, "on, off, -enable, -disable"
    )

    def change(conf) -> None:
        conf.set("HAConfiguration", "haLogStatus", "enabled" if chosen == "on" else "disabled")
        if path:
            conf.set("HAConfiguration", "haLogPath", str(Path(path).resolve()))

    _edit_conf(ctx, change, AT_RESTART[:-1] + NOT_LIVE_BECAUSE["haLogStatus"] + ".")


@hagroup.command()
@click.option(
    "--enable",
    "-enable",
    is_flag=True,
    help="HASynchronize on: HA login and a member's recovery copy the objects members lack.",
)
@click.option(
    "--disable",
    "-disable",
    is_flag=True,
    help="HASynchronize off: nothing is copied but by `hagroup synchronize` itself.",
)
@_group_option
@click.option(
    "--pin",
    envvar="CKDEMO_USER_PIN",
    help="User PIN for the copy (default: prompt, or the config's test PIN).",
)
@click.pass_context
def synchronize(
    ctx: click.Context, enable: bool, disable: bool, group_ref: str | None, pin: str | None
) -> None:
    """Without a switch: copy every key object to the members that lack it now (lunacm: hagroup
    synchronize). With --enable/--disable: set the group's HASynchronize switch."""
    if enable and disable:
        raise Fail("give one of --enable, --disable (or neither, to copy now)")
    if enable or disable:
        from ..config import ha

        def change(conf) -> str:
            group = ha.find_group(conf, group_ref)
            ha.set_synchronize(conf, group.label, enable)
            return f"HASynchronize {group.label} = {int(enable)}"

        _edit_conf(ctx, change, AT_RESTART[:-1] + NOT_LIVE_BECAUSE["HASynchronize"] + ".")
        return
    _copy_now(ctx, group_ref, pin)


def _chosen_groups(settings, group_ref: str | None) -> list:
    """The HA groups -group names (label or serial), or every group; Fail when there is none."""
    groups = [g for g in workspace_for(settings).groups if group_ref in (None, g.label, g.serial)]
    if not groups:
        raise Fail(
            f"no HA group {group_ref!r} in {settings.config_path}"
            if group_ref
            else f"no HA group in {settings.config_path}"
        )
    return groups


def _copy_now(ctx: click.Context, group_ref: str | None, pin: str | None) -> None:
    from ..codes import CKRError
    from ..model import CKU_USER

    settings = settings_for(ctx)
    pin = pin or settings.secrets().get("CKDEMO_USER_PIN") or click.prompt("User PIN", hide_input=True)
    for group in _chosen_groups(settings, group_ref):
        try:
            group.login(CKU_USER, pin)  # completes what some members lack, if HASynchronize is on
            copied = group.completed_at_login + group.synchronize()
        except CKRError as exc:
            raise Fail(f"HA group {group.label}: {exc}") from None
        click.echo(f"HA group {group.label}: {copied} object(s) copied.")


# ---- the user PIN lock: unlockpin ----------------------------------------------------------------


@hagroup.command()
@_group_option
@click.option("--so-pin", envvar="CKDEMO_SO_PIN", help="SO PIN (default: prompt, or the config's test PIN).")
@click.pass_context
def unlockpin(ctx: click.Context, group_ref: str | None, so_pin: str | None) -> None:
    """Unlock the HA slot's user PIN after too many wrong PINs (FailedLoginLimit), as the SO:
    the SO logs in to the group, the count goes back to 0, the SO logs out. The user PIN
    itself is unchanged (C_InitPIN on the HA slot sets a new one and unlocks too)."""
    from ..codes import CKRError
    from ..model import CKU_SO

    settings = settings_for(ctx)
    so_pin = so_pin or settings.secrets().get("CKDEMO_SO_PIN") or click.prompt("SO PIN", hide_input=True)
    for group in _chosen_groups(settings, group_ref):
        try:
            group.login(CKU_SO, so_pin)  # the members check the SO PIN
        except CKRError as exc:
            raise Fail(f"HA group {group.label}: SO login: {exc}") from None
        try:
            was = group.pin_unlocked()
        finally:
            try:
                group.logout()
            except CKRError:
                pass  # the members forgot the SO login already: the state we wanted
        click.echo(
            f"HA group {group.label}: user PIN unlocked "
            + (f"(it had {was} wrong PIN(s) in a row)." if was else "(it was not locked).")
        )


# ---- groups: creategroup, deletegroup --------------------------------------------------------------


@hagroup.command()
@click.option("--label", "-label", "group_label", required=True, help="The new group's label.")
@click.option("--serial", "-serial", metavar="SERIAL", help="Its first member's token serial.")
@click.option(
    "--member-label",
    "-memberlabel",
    "token_label",
    metavar="LABEL",
    help="... or its first member's token label.",
)
@click.option(
    "--password",
    "-password",
    hidden=True,
    help="Accepted as lunacm takes it; not needed (ckdemo asks for PINs at HA login), never stored.",
)
@click.pass_context
def creategroup(
    ctx: click.Context, group_label: str, serial: str | None, token_label: str | None, password: str | None
) -> None:
    """Create an HA group with one member (lunacm: hagroup creategroup -label L -serial S); add
    the others with addmember. Only a token ckdemo can see is taken."""
    from ..config import ha

    settings = settings_for(ctx)
    serial = _resolve_member(settings, serial, token_label, must_exist=True)
    _edit_conf(
        ctx,
        lambda conf: (
            f"HA group {ha.create_group(conf, group_label, serial).label} created with member {serial}"
        ),
        AT_RESTART,
    )


@hagroup.command()
@click.option(
    "--label",
    "-label",
    "--group",
    "-group",
    "group_ref",
    required=True,
    metavar="LABEL|SERIAL",
    help="The group to delete (-group is accepted too, as the other verbs take it).",
)
@click.pass_context
def deletegroup(ctx: click.Context, group_ref: str) -> None:
    """Delete an HA group from the configuration (lunacm: hagroup deletegroup -label L); its
    members' tokens and keys stay as they are."""
    from ..config import ha

    def change(conf) -> str:
        group = ha.find_group(conf, group_ref)
        ha.delete_group(conf, group)
        return f"HA group {group.label} deleted (its members' tokens are untouched)"

    _edit_conf(ctx, change, AT_RESTART)


# ---- members: addmember, removemember, addstandby, removestandby ------------------------------------------------------------


def _member_options(f):
    f = click.option(
        "--label",
        "-label",
        "token_label",
        metavar="LABEL",
        help="The member's token label (resolved to its serial).",
    )(f)
    f = click.option("--serial", "-serial", metavar="SERIAL", help="The member's token serial.")(f)
    return _group_option(f)


@hagroup.command()
@_member_options
@click.pass_context
def addmember(ctx: click.Context, group_ref: str | None, serial: str | None, token_label: str | None) -> None:
    """Add a token to the group's members (lunacm: hagroup addmember -group L -serial S).
    Only a token ckdemo can see (a loaded library, or the home's provisioned members) is added."""
    from ..config import ha

    settings = settings_for(ctx)
    serial = _resolve_member(settings, serial, token_label, must_exist=True)
    _edit_conf(
        ctx,
        lambda conf: _members_said(ha.add_member(conf, ha.find_group(conf, group_ref), serial)),
        AT_RESTART[:-1] + NOT_LIVE_BECAUSE["members"] + ".",
    )


@hagroup.command()
@_member_options
@click.pass_context
def removemember(
    ctx: click.Context, group_ref: str | None, serial: str | None, token_label: str | None
) -> None:
    """Remove a member from the group (never the last one); the group serial stays."""
    from ..config import ha

    settings = settings_for(ctx)
    serial = _resolve_member(settings, serial, token_label, must_exist=False)
    _edit_conf(
        ctx,
        lambda conf: _members_said(ha.remove_member(conf, ha.find_group(conf, group_ref), serial)),
        AT_RESTART[:-1] + NOT_LIVE_BECAUSE["members"] + ".",
    )


def _members_said(group) -> str:
    return f"HA group {group.label} members = {','.join(group.members)}" + (
        f"; standby = {','.join(group.standby)}" if group.standby else ""
    )


@hagroup.command()
@_member_options
@click.pass_context
def addstandby(
    ctx: click.Context, group_ref: str | None, serial: str | None, token_label: str | None
) -> None:
    """Make a member standby (lunacm: hagroup addstandby -group L -serial S): logged in and kept
    current with every key, it serves no call while another member can."""
    _standby(ctx, group_ref, serial, token_label, True)


@hagroup.command()
@_member_options
@click.pass_context
def removestandby(
    ctx: click.Context, group_ref: str | None, serial: str | None, token_label: str | None
) -> None:
    """Make a standby member active again (lunacm: hagroup removestandby); it stays a member."""
    _standby(ctx, group_ref, serial, token_label, False)


def _standby(
    ctx: click.Context, group_ref: str | None, serial: str | None, token_label: str | None, on: bool
) -> None:
    from ..config import ha

    settings = settings_for(ctx)
    serial = _resolve_member(settings, serial, token_label, must_exist=serial is None)
    _edit_conf(
        ctx,
        lambda conf: _members_said(ha.set_standby(conf, ha.find_group(conf, group_ref), serial, on)),
        AT_RESTART[:-1] + NOT_LIVE_BECAUSE["members"] + ".",
    )


def _resolve_member(settings, serial: str | None, token_label: str | None, must_exist: bool) -> str:
    if (serial is None) == (token_label is None):
        raise Fail("name the member with one of --serial, --label")
    if serial is not None and not must_exist:
        return serial  # removing: the group's own list decides
    tokens, why = visible_tokens(settings)
    unseen = f" ({why})" if why else ""
    if serial is not None:
        if serial not in tokens:
            raise Fail(f"no token with serial {serial} that ckdemo can see{unseen}: not added")
        return serial
    serials = [s for s, label in tokens.items() if label == token_label]
    if not serials:
        raise Fail(f"no token labelled {token_label!r} that ckdemo can see{unseen}")
    if len(serials) > 1:
        raise Fail(f"{len(serials)} tokens are labelled {token_label!r} ({', '.join(serials)}): use --serial")
    return serials[0]


def visible_tokens(settings) -> tuple[dict[str, str], str | None]:
    """serial -> token label of every token ckdemo can see: the home's provisioned members
    (MemberSerials, reachable even while down) and the tokens of the configured libraries;
    and why some library could not be asked, if so."""
    from ..codes import CKRError
    from ..members.module import module_for
    from ..members.slot import PhysicalSlot

    tokens = {serial: label for label, serial in settings.member_serials().items()}
    why = None
    settings.apply_environment()
    for path in settings.libraries():
        try:
            module = module_for(path).load()
            for slot_id in module.slot_ids(token_present=True):
                info = PhysicalSlot(module, slot_id).token_info()
                tokens[info.serial_number] = info.label
        except CKRError as exc:
            why = f"cannot use PKCS#11 library {path}: {exc}"
    return tokens, why


# ---- views: show, listgroups, status -------------------------------------------------------------


def _json_option(f):
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="One JSON document on stdout (docs/JSON.md), with the ckdemo version, "
        "a UTC timestamp and the PKCS#11 library.",
    )(f)


@hagroup.command()
@_json_option
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Groups, members (found, state), and the HA settings in force. Read from the file; the
    members' live state only when the PKCS#11 library loads on this machine."""
    from .hagroup_view import live_reports, render_show

    settings = settings_for(ctx)
    reports, why = live_reports(settings, workspace_for)
    if as_json:
        from . import state_json

        state_json.echo(state_json.groups_document(settings, reports, why))
        return
    for line in render_show(settings, reports, why):
        click.echo(line)


@hagroup.command()
@_group_option
@_json_option
@click.pass_context
def listgroups(ctx: click.Context, group_ref: str | None, as_json: bool) -> None:
    """The configured HA groups as lunacm lists them (-group: one of them): label, group number
    (serial), members and standby members with serials, HASynchronize, and the HA settings;
    live member state when the library loads."""
    from .hagroup_view import live_reports, render_listgroups

    _check_group(ctx, group_ref)
    settings = settings_for(ctx)
    reports, why = live_reports(settings, workspace_for)
    if as_json:
        from . import state_json

        state_json.echo(state_json.groups_document(settings, reports, why, only=group_ref))
        return
    for line in render_listgroups(settings, reports, why, only=group_ref):
        click.echo(line)


@hagroup.command()
@click.option("--recover", is_flag=True, help="Manual recovery first (Luna: hagroup recover, menu 125).")
@_json_option
@click.pass_context
def status(ctx: click.Context, recover: bool, as_json: bool) -> None:
    """Live HA Status from the running `ckdemo serve` (menu choice 52's lines)."""
    from ..serve.control_client import NoServer

    try:
        recovered, reply = _from_server(ctx, recover)
    except NoServer as exc:
        raise Fail(
            f"{exc}: live HA Status comes from `ckdemo serve`; `hagroup show` reads the configuration"
        ) from None
    if as_json:
        from . import state_json

        state_json.echo(state_json.status_document(settings_for(ctx), reply, recovered if recover else None))
        return
    for line in recovered + reply["lines"]:
        click.echo(line)


def _from_server(ctx: click.Context, recover: bool, group_ref: str | None = None) -> tuple[list[str], dict]:
    """Manual recovery (if asked: its lines; of the named group only, if one is) and HA Status
    (the reply) through the running server's control socket."""
    from ..serve.control_client import ControlFailed, control_path, request

    path = control_path(settings_for(ctx).home)
    named = {} if group_ref is None else {"group": group_ref}
    try:
        recovered = request(path, "recover", **named)["lines"] if recover else []
        return recovered, request(path, "status")
    except ControlFailed as exc:
        raise Fail(f"HA Status: {exc}") from None


def _recover(ctx: click.Context, group_ref: str | None = None) -> None:
    from ..screens import ha_status_row
    from ..serve.control_client import NoServer

    try:
        recovered, reply = _from_server(ctx, recover=True, group_ref=group_ref)
        lines = recovered + reply["lines"]
    except NoServer:
        lines = None
    if lines is not None:
        for line in lines:
            click.echo(line)
        return
    # no server: a new process connects to every member it can reach at start; the others
    # are tried now, as choice 125 tries them in a menu
    settings = settings_for(ctx)
    groups = [g for g in workspace_for(settings).groups if group_ref in (None, g.label, g.serial)]
    if not groups:
        raise Fail(f"no HA group in {settings.config_path}")
    from ..interprocess import menu_running

    menu = menu_running(settings.home)
    click.echo(
        "No ckdemo serve runs for this home: recovering in this process"
        + (
            ". A ckdemo menu runs on this home: the members it shows down are its own to "
            "recover (its choice 125: a failure it simulated lives in it only)."
            if menu
            else " (a running menu recovers with choice 125)."
        )
    )
    for group in groups:
        tried = group.recover_now()
        for member, back in tried:
            click.echo(
                f"HSM {member.serial} ({member.label or '-'}): {'recovered' if back else 'still down'}"
            )
        if not tried:
            click.echo(
                "Every member this process reaches is in service: nothing to recover here."
                + (
                    ""
                    if menu
                    else " A member a running menu shows down is that menu's to recover (its "
                    "choice 125); a failure simulated there (120) lives in that process only."
                )
            )
        click.echo(f"HA group {group.serial} status:")
        for member, code in group.status():
            click.echo(ha_status_row(member.serial, code))
