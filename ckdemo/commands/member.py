"""`ckdemo member ...`: the p11-kit server processes of remote members, and member faults.

fail, restore, stop, and kill, hang, resume, slow and flap while a `ckdemo serve` of the home
runs, go through it (member_served.py): any member, as FaultLab and lab scenarios do. With no
serve running, kill, hang, resume, slow and flap act on a remote member's server directly."""

from __future__ import annotations


import click

from . import member_served
from .common import Fail, settings_for


@click.group()
def member() -> None:
    """Remote members: p11-kit server processes serving one member token each."""


THROUGH_SERVE = "; or start `ckdemo serve`: through it this works on any member"


def _servers(ctx: click.Context, name: str | None, hint: str = ""):
    from ..harness import member_servers
    from ..members.remote import RemoteError

    settings = settings_for(ctx)
    try:
        servers = member_servers(settings)
    except RemoteError as exc:
        raise Fail(str(exc)) from None
    if not servers:
        raise Fail(f"no remote members in {settings.config_path} (ckdemo init --remote){hint}")
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
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON document on stdout (docs/JSON.md), with the ckdemo version, a UTC "
    "timestamp and the PKCS#11 library.",
)
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
    click.echo(
        tabulate(rows, headers=["member", "pid", "socket", "state", "served by"], disable_numparse=True)
    )


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
        raise Fail(
            f"{exc}: start `ckdemo serve` first (in a menu run, choices 120/121 do this; "
            f"remote members also have `member kill` / `member serve`)"
        ) from None
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
        if member_name != "all" and member_served.at_once(ctx, name, member_name):
            return
        for server in _servers(ctx, member_name, THROUGH_SERVE if name == "kill" else ""):
            if not server.managed:
                raise Fail(f"{server.label} is served elsewhere ({server.socket}); ckdemo does not {name} it")
            sent = getattr(server, signal_name)()
            click.echo(f"{server.label}: {done if sent else 'was not running'}")


_signal_command(
    "kill",
    "kill",
    "killed",
    "SIGKILL to NAME's server process group, as a power cut ('all' for every member, "
    "directly). Through a running `ckdemo serve` any member: one served in its process "
    "is failed in its HA group.",
)
_signal_command(
    "hang",
    "hang",
    "stopped",
    "SIGSTOP to NAME's server: it keeps its socket but never answers (a dead network "
    "link). The HA group fails it after MemberTimeout seconds (CKDemo section, "
    "default 20). A running `ckdemo serve` resumes it at `ckdemo fault clear` and at "
    "its stop.",
)
_signal_command("resume", "resume", "running again", "SIGCONT to NAME's server after `member hang`.")


@member.command(name="stop")
@click.argument("name")
@click.pass_context
def stop_lasting(ctx: click.Context, name: str) -> None:
    """End a slow or flap of NAME in the running `ckdemo serve` (NAME is left running and up)."""
    member_served.stop(ctx, name)


def _checked(action: str, given: dict) -> dict:
    from ..lab.member_lab import MemberFaultError, checked

    try:
        return checked(action, {k: v for k, v in given.items() if v is not None})
    except MemberFaultError as exc:
        raise Fail(f"{action}: {exc}") from None


def _one_managed(ctx: click.Context, name: str, verb: str):
    servers = _servers(ctx, name, THROUGH_SERVE if verb == "flap" else "")
    if len(servers) != 1:
        raise Fail(f"{verb} one member at a time (remote members: {', '.join(s.label for s in servers)})")
    server = servers[0]
    if not server.managed:
        raise Fail(f"{server.label} is served elsewhere ({server.socket}); ckdemo does not {verb} it")
    if server.pid() is None:
        raise Fail(f"{server.label}'s server is not running (ckdemo member serve {server.label})")
    return server


def _run_cycle(cycle, label: str, verb: str, for_s: float | None) -> None:
    """In the foreground until --for has passed (the cycle ends), Ctrl-C or SIGTERM; the member
    is back after."""

    def begin() -> None:
        cycle.start(f"member-{verb}-{label}")
        click.echo(
            f"{label}: {verb} " + (f"for {for_s:g} s" if for_s is not None else "until Ctrl-C"), err=True
        )

    try:
        member_served.foreground(lambda: cycle.running, begin=begin)
    finally:
        cycle.stop()


@member.command()
@click.argument("name")
@click.option(
    "--ms",
    type=float,
    required=True,
    help="How long each stop lasts: an answer comes up to this late (at most 60000).",
)
@click.option("--for", "for_s", type=float, help="Seconds (default: until Ctrl-C).")
@click.pass_context
def slow(ctx: click.Context, name: str, ms: float, for_s: float | None) -> None:
    """Make NAME's answers up to MS ms late: its server is stopped (SIGSTOP) MS ms at a time and
    runs 20 ms between stops, its connections open. Runs in the foreground; NAME is running at
    the end. Stops longer than MemberHedgeFloor (default 0.5 s) make the HA group give it up,
    as a hang does. Through a running `ckdemo serve` when one runs."""
    from ..lab.member_faults import slowdown

    _checked("slow", {"ms": ms, "for": for_s})
    if member_served.lasting(ctx, "slow", name, {"ms": ms}, for_s):
        return
    server = _one_managed(ctx, name, "slow")
    errors: list[str] = []
    cycle = slowdown(server, ms, for_s, on_error=lambda error: errors.append(str(error)))
    _run_cycle(cycle, server.label, f"answers up to {ms:g} ms late", for_s)
    click.echo(f"{server.label}: {cycle.cycles} stop(s) of {ms:g} ms; running again")
    if errors:
        raise Fail(f"{server.label}: {errors[0]}")


@member.command()
@click.argument("name")
@click.option(
    "--every", "every_s", type=float, required=True, help="Seconds of one down-and-up (at least 0.2)."
)
@click.option("--down", "down_s", type=float, help="Seconds down in each (default: half of --every).")
@click.option("--for", "for_s", type=float, help="Seconds (default: until Ctrl-C).")
@click.pass_context
def flap(ctx: click.Context, name: str, every_s: float, down_s: float | None, for_s: float | None) -> None:
    """Kill NAME's server (SIGKILL to its process group) and serve it again, every EVERY
    seconds. Runs in the foreground; NAME is served at the end. The HA group takes it back at a
    call after the recovery interval, when it is up then. Through a running `ckdemo serve` when
    one runs: there any member (one served in its process is failed and restored in its HA
    group)."""
    from ..lab.member_faults import server_flapping

    _checked("flap", {"every": every_s, "down": down_s, "for": for_s})
    given = {"every": every_s, **({"down": down_s} if down_s is not None else {})}
    if member_served.lasting(ctx, "flap", name, given, for_s):
        return
    server = _one_managed(ctx, name, "flap")
    errors: list[str] = []
    cycle = server_flapping(server, every_s, down_s, for_s, on_error=lambda error: errors.append(str(error)))
    _run_cycle(cycle, server.label, f"down {down_s or every_s / 2:g} s in every {every_s:g} s", for_s)
    click.echo(f"{server.label}: down {cycle.cycles} time(s); served again (pid {server.pid() or '-'})")
    if errors:
        raise Fail(f"{server.label}: {errors[0]}")
