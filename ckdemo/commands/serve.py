"""`ckdemo serve`: the home's HA slot(s) for any PKCS#11 application, through p11-kit-client.so.

Wiring only: build the workspace, choose the slots, hand them to ckdemo.serve.Server, print what
happens (one line per connection and per HA event) until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click

from .common import Fail, settings_for, workspace_for
from ..serve import sdnotify
from ..serve.server import DEFAULT_MAX_CONNECTIONS, DEFAULT_REFUSED_OBJECTS
from ..codes import CKRError
from ..screens import recovery_line

EVENT_POLL_S = 0.2  # how often the HA log is read for new events to print


@dataclass
class Served:
    """A server built from a home, listening, with its control channel (not started)."""

    server: "Server"  # noqa: F821
    groups: list
    path: Path
    control_at: Path
    control: "ControlServer | None"  # noqa: F821
    control_problem: str
    settings: object  # as served: the home's, with --slots all and --isolated/--shared applied
    members: "MemberLab"  # noqa: F821  the lab's member faults (the control channel's, a lab run's)


def build_server(
    settings,
    socket_path: str | None,
    which: str = "ha",
    isolated: bool | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    control: bool = True,
    refused_objects: int = DEFAULT_REFUSED_OBJECTS,
) -> Served:
    """The home's slots behind a listening Server (and its control channel, when `control` and
    the home has none running): what `ckdemo serve` and `ckdemo lab run` both serve."""
    from ..ha.group import HAGroup
    from ..harness import member_servers
    from ..lab.member_lab import MemberLab
    from ..menu.loop import report_internal_error
    from ..serve import Server
    from ..serve.control import ControlServer
    from ..serve.control_client import control_path

    if which == "all":  # in memory only: HAOnly hides the members from the menu, not from here
        settings = settings.overriding("HAConfiguration", "HAOnly", "0")
    if isolated is not None or not settings.isolation():  # serve's own default: a copy each
        settings = settings.isolated_as(isolated is not False)
    workspace = workspace_for(settings)
    groups = [slot for slot in workspace.slots if isinstance(slot, HAGroup)]
    slots = workspace.slots if which == "all" else groups
    if not slots:
        raise Fail(f"no HA group in {settings.config_path} to serve (ckdemo init, or --slots all)")
    path = Path(socket_path).expanduser() if socket_path else settings.home / "run" / "ckdemo.sock"
    errors_log = str(settings.home / "errors.log")

    def on_error(where: str, error: BaseException) -> None:
        where_logged = report_internal_error(error, errors_log)
        _say(f"{where}: internal error {type(error).__name__}: {error} (details in {where_logged})")

    control_at = control_path(settings.home)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        server = Server(
            path,
            slots,
            log=_say,
            on_error=on_error,
            max_connections=max_connections,
            refused_objects=refused_objects,
        )
    except OSError as exc:
        raise Fail(f"cannot listen on {path}: {exc.strerror or exc}") from None
    members = MemberLab(groups, {s.label: s for s in member_servers(settings)}, log=_say)
    channel, problem = None, "not asked for"
    if control:
        try:
            control_at.parent.mkdir(parents=True, exist_ok=True)
            channel = ControlServer(
                control_at, groups, log=_say, on_error=on_error, faults=server.faults, members=members
            )
        except OSError as exc:  # e.g. a first `ckdemo serve` of this home holds it: serve on without
            problem = exc.strerror or str(exc)
    return Served(server, groups, path, control_at, channel, problem, settings, members)


class Stop(Exception):
    """SIGTERM: leave serve_forever as Ctrl-C does."""


def _say(line: str) -> None:
    click.echo(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}")


@click.command()
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False),
    help="Unix socket to listen on (default HOME/run/ckdemo.sock).",
)
@click.option(
    "--slots",
    "which",
    type=click.Choice(["ha", "all"]),
    default="ha",
    show_default=True,
    help="ha: only the HA virtual slots; all: the members' physical slots too.",
)
@click.option(
    "--isolated/--shared",
    default=None,
    help="Each local member through its own copy of the library, so applications sign "
    "on several members at once, or all through one instance (default: the home's "
    "LocalIsolation; isolated when the home does not say).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 10000),
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    help="Applications connected at once; one more is refused (closed, one log line).",
)
@click.option(
    "--refused-objects",
    type=click.IntRange(1, 16384),
    default=DEFAULT_REFUSED_OBJECTS,
    show_default=True,
    help="Objects the token may refuse to make for one application (SoftHSM2 keeps "
    "memory for each until serve stops); beyond, that application gets "
    "CKR_DEVICE_MEMORY.",
)
@click.option(
    "--p11-kit-module",
    "module_name",
    metavar="NAME",
    help="Also register the served slots with p11-kit as module NAME (a module file "
    "with `remote: unix:path=...`, removed at stop; /etc/pkcs11/modules for root, "
    "~/.config/pkcs11/modules otherwise): p11-kit-proxy.so users see them.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    socket_path: str | None,
    which: str,
    isolated: bool | None,
    max_connections: int,
    refused_objects: int,
    module_name: str | None,
) -> None:
    """Serve the slots over the p11-kit RPC protocol, in the foreground, for any PKCS#11
    application loading p11-kit-client.so."""
    # a SIGTERM that comes while the sockets are being set up waits until the server can stop
    # cleanly (the test harness, systemd and friends send it as soon as the socket exists)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    settings = settings_for(ctx)
    served = build_server(
        settings, socket_path, which, isolated, max_connections, refused_objects=refused_objects
    )
    settings = served.settings  # as served (--slots all, --isolated/--shared)
    server, groups, path, control_at = served.server, served.groups, served.path, served.control_at
    control, control_problem = served.control, served.control_problem
    module_file = None
    if module_name:
        from ..serve import module_file as p11kit_module

        try:
            module_file = p11kit_module.write(module_name, path, settings.home)
        except p11kit_module.ModuleFileError as exc:
            if control is not None:
                control.stop()
            server.stop()
            raise Fail(str(exc)) from None
    address = f"unix:path={path.resolve()}"
    click.echo(f"export P11_KIT_SERVER_ADDRESS={address}")
    click.echo(f"pkcs11-tool --module {_p11kit_client()} -L")
    for exposed in server.slots:
        _say(f"serving slot {exposed.slot_id:#x}: {_described(exposed)}")
    for group in groups:
        _say(
            f"HA group {group.serial}: "
            f"{recovery_line(group.recovery_mode, group.policy.interval_s, group.policy.retries)}"
        )
    local = [m for m in settings.member_labels() if m not in settings.remote_members()]
    if local:
        _say(_isolation_line(local, settings.isolated_members()))
    _say(f"listening on {path} (Ctrl-C or SIGTERM stops)")
    if module_file is not None:
        _say(
            f"p11-kit module {module_name}: {module_file} (p11-kit-proxy.so and "
            "`p11-kit list-modules` see the served slots)"
        )
    if control is not None:
        _say(f"control channel on {control_at} (for ckdemo hagroup status, ckdemo member and ckdemo fault)")
        control.start()
    else:
        _say(f"no control channel: {control_problem}")
    _tell_systemd(sdnotify.READY)

    def terminate(signum, frame):
        raise Stop()

    previous = signal.signal(signal.SIGTERM, terminate)
    stop_events = threading.Event()
    watcher = threading.Thread(target=_print_events, args=(groups, stop_events), daemon=True)
    try:
        watcher.start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # one waiting arrives here
        server.serve_forever()
    except (KeyboardInterrupt, Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _tell_systemd(sdnotify.STOPPING)
        if control is not None:
            control.stop()
        for going in served.members.clear():  # no member left hung, slowed or flapping
            _say(f"member {going.label}: {going.action} ended: running")
        if module_file is not None:
            from ..serve import module_file as p11kit_module

            p11kit_module.remove(module_file)
        server.stop()
        stop_events.set()
        watcher.join(1)
        _print_new_events(groups)
        signal.signal(signal.SIGTERM, previous)
        removed = [str(path)]
        if control is not None:
            removed.append(control_at.name)
        if module_file is not None:
            removed.append(f"p11-kit module file {module_file}")
        _say(f"stopped: sessions closed, {_listed(removed)} removed")


def _listed(words: list[str]) -> str:
    """a; a and b; a, b and c"""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _tell_systemd(state: str) -> None:
    """Type=notify units (docs/systemd/ckdemo-serve.service): READY=1 once applications can
    connect, STOPPING=1 at the stop; a notification that cannot be sent is one log line."""
    try:
        if sdnotify.notify(state):
            _say(f"told systemd {state} (NOTIFY_SOCKET)")
    except sdnotify.NotifyError as exc:
        _say(str(exc))


def _isolation_line(local: list[str], isolated: list[str]) -> str:
    if isolated:
        return (
            f"local members {', '.join(local)}: each through its own copy of the library "
            "(calls of several applications run at once; --shared for one instance)"
        )
    return (
        f"local members {', '.join(local)}: all through one instance of the library "
        "(one call at a time; --isolated for a copy each)"
    )


def _described(exposed) -> str:
    try:
        return exposed.description()
    except CKRError as error:  # a member that is down still gets served (and recovered)
        return f"({type(error).__name__}: {error})"


def _print_events(groups: list, stop: threading.Event) -> None:
    while not stop.wait(EVENT_POLL_S):
        _print_new_events(groups)


def _print_new_events(groups: list) -> None:
    logs = {id(group.log): group.log for group in groups}
    for log in logs.values():
        for event in log.unseen():
            _say(event.message())


def _p11kit_client() -> str:
    """The client module an application loads, or where it is missing, what to install."""
    from .. import libraries

    try:
        return libraries.find(libraries.P11KIT_CLIENT)
    except libraries.LibraryNotFound:
        return "p11-kit-client.so  # not installed here: apt-get install p11-kit-modules"
