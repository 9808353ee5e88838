"""`ckdemo member ...`: the p11-kit server processes of remote members."""
from __future__ import annotations


import click

from .common import Fail, settings_for


@click.group()
def member() -> None:
    """Remote members: p11-kit server processes serving one member token each."""


def _servers(ctx: click.Context, name: str | None):
    from ..harness import member_servers
    from ..members.remote import RemoteError
    settings = settings_for(ctx)
    try:
        servers = member_servers(settings)
    except RemoteError as exc:
        raise Fail(str(exc)) from None
    if not servers:
        raise Fail(f"no remote members in {settings.config_path} (ckdemo init --remote)")
    if name in (None, "all"):
        return servers
    chosen = [s for s in servers if s.label == name]
    if not chosen:
        raise Fail(f"no remote member {name!r} (remote members: {', '.join(s.label for s in servers)})")
    return chosen


@member.command()
@click.argument("name", required=False)
@click.pass_context
def serve(ctx: click.Context, name: str | None) -> None:
    """Start the server of NAME (default: all); it keeps running after ckdemo exits."""
    from ..members.remote import RemoteError
    for server in _servers(ctx, name):
        try:
            click.echo(f"{server.label}: serving on {server.socket} (pid {server.serve()})")
        except RemoteError as exc:
            raise Fail(str(exc)) from None


@member.command()
@click.argument("name")
@click.pass_context
def restart(ctx: click.Context, name: str) -> None:
    """Kill NAME's server and serve it again (the HA group recovers it on a later call)."""
    from ..members.remote import RemoteError
    for server in _servers(ctx, name):
        try:
            click.echo(f"{server.label}: restarted (pid {server.restart()})")
        except RemoteError as exc:
            raise Fail(str(exc)) from None


@member.command(name="list")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document on stdout (docs/JSON.md), with the ckdemo version, a UTC "
                   "timestamp and the PKCS#11 library.")
@click.pass_context
def list_members(ctx: click.Context, as_json: bool) -> None:
    """Remote members with pid, socket and state."""
    from tabulate import tabulate
    servers = _servers(ctx, None)
    if as_json:
        from . import state_json
        state_json.echo(state_json.members_document(settings_for(ctx), servers))
        return
    rows = [(s.label, s.pid() or "-", s.socket, s.state(), _served_by(s)) for s in servers]
    click.echo(tabulate(rows, headers=["member", "pid", "socket", "state", "served by"],
                        disable_numparse=True))


def _served_by(server) -> str:
    if not server.managed:
        return "elsewhere"
    if server.pid() is None:
        return "-"
    return "a ckdemo run (stops with the last)" if server.started_by_run() else "ckdemo member serve"


def _through_serve(ctx: click.Context, command: str, name: str) -> None:
    """fail and restore: the running `ckdemo serve` holds the members, so ask it (control channel)."""
    from ..serve.control_client import ControlFailed, NoServer, control_path, request
    try:
        reply = request(control_path(settings_for(ctx).home), command, member=name)
    except NoServer as exc:
        raise Fail(f"{exc}: start `ckdemo serve` first (in a menu run, choices 120/121 do this; "
                   f"remote members also have `member kill` / `member serve`)") from None
    except ControlFailed as exc:
        raise Fail(f"{command} {name}: {exc}") from None
    for line in reply["lines"]:
        click.echo(line)


@member.command()
@click.argument("name")
@click.pass_context
def fail(ctx: click.Context, name: str) -> None:
    """Fail NAME (label, serial or number) in the running `ckdemo serve`, as menu choice 120:
    a local member becomes a dead device, a remote member's server is killed."""
    _through_serve(ctx, "fail", name)


@member.command()
@click.argument("name")
@click.pass_context
def restore(ctx: click.Context, name: str) -> None:
    """Bring NAME back in the running `ckdemo serve`, as menu choice 121; the HA group takes it
    back on a call after the recovery interval X."""
    _through_serve(ctx, "restore", name)


def _signal_command(name: str, signal_name: str, done: str, help_text: str) -> None:
    """kill, hang and resume: one signal to the server's process group of each member named."""
    @member.command(name=name, help=help_text)
    @click.argument("member_name", metavar="NAME")
    @click.pass_context
    def command(ctx: click.Context, member_name: str) -> None:
        for server in _servers(ctx, member_name):
            if not server.managed:
                raise Fail(f"{server.label} is served elsewhere ({server.socket}); "
                           f"ckdemo does not {name} it")
            sent = getattr(server, signal_name)()
            click.echo(f"{server.label}: {done if sent else 'was not running'}")


_signal_command("kill", "kill", "killed",
                "SIGKILL to NAME's server process group, as a power cut ('all' for every member).")
_signal_command("hang", "hang", "stopped",
                "SIGSTOP to NAME's server: it keeps its socket but never answers (a dead network "
                "link). The HA group fails it after MemberTimeout seconds (CKDemo section, "
                "default 20).")
_signal_command("resume", "resume", "running again", "SIGCONT to NAME's server after `member hang`.")
