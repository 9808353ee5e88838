"""`ckdemo hagroup ...`: HA settings in Chrystoki.conf, as lunacm's hagroup commands."""
from __future__ import annotations

from pathlib import Path

import click

from .common import Fail, settings_for, workspace_for


@click.group()
def hagroup() -> None:
    """HA group settings in Chrystoki.conf (Luna's lunacm 'hagroup' commands)."""


def _edit_conf(ctx: click.Context, change) -> None:
    from ..config.chrystoki import ChrystokiConf
    settings = settings_for(ctx)
    conf = ChrystokiConf.load(settings.config_path) if settings.config_path.exists() else settings.conf
    try:
        change(conf)
    except ValueError as exc:  # a value the config cannot hold (e.g. nan, out of range)
        raise Fail(str(exc)) from None
    try:
        conf.save(settings.config_path)
    except OSError as exc:
        raise Fail(f"cannot write {settings.config_path}: {exc.strerror}") from None
    click.echo(f"Updated {settings.config_path}")


@hagroup.command()
@click.option("--count", required=True, type=click.IntRange(min=-1),
              help="Recovery attempts N (-1 unlimited, 0 turns auto-recovery off).")
@click.pass_context
def retry(ctx: click.Context, count: int) -> None:
    """Set HAConfiguration reconnAtt (creates the section, as lunacm does)."""
    from ..config import ha
    _edit_conf(ctx, lambda conf: ha.set_retry(conf, count))


@hagroup.command()
@click.option("--seconds", required=True, type=click.FloatRange(min=0, min_open=True),
              help="Recovery interval X in seconds (Luna: 60 minimum; shorter allowed for demos).")
@click.pass_context
def interval(ctx: click.Context, seconds: float) -> None:
    """Set HAConfiguration AutoReconnectInterval."""
    from ..config import ha
    _edit_conf(ctx, lambda conf: ha.set_interval(conf, seconds))


@hagroup.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@click.pass_context
def haonly(ctx: click.Context, state: str) -> None:
    """Set HAConfiguration HAOnly: list only the virtual slots, hide the members."""
    _edit_conf(ctx, lambda conf: conf.set("HAConfiguration", "HAOnly", "1" if state == "on" else "0"))


@hagroup.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--path", type=click.Path(), help="haLogPath: a log file, or a folder for haErrorLog.txt.")
@click.pass_context
def log(ctx: click.Context, state: str, path: str | None) -> None:
    """Set HAConfiguration haLogStatus (and haLogPath)."""
    def change(conf) -> None:
        conf.set("HAConfiguration", "haLogStatus", "enabled" if state == "on" else "disabled")
        if path:
            conf.set("HAConfiguration", "haLogPath", str(Path(path).resolve()))
    _edit_conf(ctx, change)


@hagroup.command()
@click.pass_context
def show(ctx: click.Context) -> None:
    """Groups, members (found, state), and the HA settings in force."""
    from tabulate import tabulate
    from ..codes import ckr_name
    from ..config import ha

    settings = settings_for(ctx)
    workspace = workspace_for(settings)
    groups = workspace.groups
    if not groups:
        click.echo(f"No HA group in {settings.config_path}.")
        return
    for group in groups:
        rows = [(n, m.serial, m.label or "-", "yes" if m.slot is not None else "no", ckr_name(code))
                for n, (m, code) in enumerate(group.status(), start=1)]
        click.echo(f"HA group {group.label}  serial {group.serial}")
        click.echo(tabulate(rows, headers=["#", "HSM", "Label", "Found", "Status"],
                            disable_numparse=True))
    cfg = ha.settings(settings.conf)
    click.echo(f"\nreconnAtt = {cfg.reconnect_attempts} ({'unlimited' if cfg.reconnect_attempts < 0 else 'off' if cfg.reconnect_attempts == 0 else 'attempts'}); "
               f"AutoReconnectInterval = {cfg.interval_s:g} s; HAOnly = {int(cfg.ha_only)}; "
               f"haLogStatus = {'enabled' if cfg.log_enabled else 'disabled'}"
               + (f"; haLogPath = {cfg.log_path}" if cfg.log_path else ""))
    click.echo("Per-member call counts belong to a running session: menu choice 122.")


@hagroup.command()
@click.option("--recover", is_flag=True, help="Manual recovery first (Luna: hagroup recover, menu 125).")
@click.pass_context
def status(ctx: click.Context, recover: bool) -> None:
    """Live HA Status from the running `ckdemo serve` (menu choice 52's lines)."""
    from ..serve.control_client import ControlFailed, NoServer, control_path, request
    path = control_path(settings_for(ctx).home)
    try:
        lines = request(path, "recover")["lines"] if recover else []
        lines += request(path, "status")["lines"]
    except NoServer as exc:
        raise Fail(f"{exc}: live HA Status comes from `ckdemo serve`; `hagroup show` reads "
                   f"the configuration") from None
    except ControlFailed as exc:
        raise Fail(f"HA Status: {exc}") from None
    for line in lines:
        click.echo(line)


@hagroup.command()
@click.option("--pin", envvar="CKDEMO_USER_PIN", help="User PIN (default: prompt, or the config's test PIN).")
@click.pass_context
def synchronize(ctx: click.Context, pin: str | None) -> None:
    """Copy every key object to the members that lack it (Luna: hagroup synchronize)."""
    from ..codes import CKRError
    from ..model import CKU_USER

    settings = settings_for(ctx)
    pin = pin or settings.secrets().get("CKDEMO_USER_PIN") or click.prompt("User PIN", hide_input=True)
    workspace = workspace_for(settings)
    groups = workspace.groups
    if not groups:
        raise Fail(f"no HA group in {settings.config_path}")
    for group in groups:
        try:
            group.login(CKU_USER, pin)  # completes what some members lack, as HASynchronize allows
            copied = getattr(group, "completed_at_login", 0) + group.synchronize()
        except CKRError as exc:
            raise Fail(f"HA group {group.label}: {exc}") from None
        click.echo(f"HA group {group.label}: {copied} object(s) copied.")
