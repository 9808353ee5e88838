"""Command-line entry points: parse options, build objects, hand over. Nothing else."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from urllib.parse import quote

import click

from . import exit_codes
from .commands.common import (
    Fail,
    GlobalOptions,
    InternalError,
    Interrupted,
    home_path,
    os_error,
    settings_for,
    slot_by_uri,
    workspace_for,
)
from .provision import DEFAULT_MEMBERS, DEFAULT_SO_PIN, DEFAULT_USER_PIN, ProvisionError


class SafeGroup(click.Group):
    """The last line of defence: an exception no layer expected is one line on stderr (exit 3),
    its traceback goes to HOME/errors.log (as the menu's internal errors do), never the screen.
    A Ctrl-C that no command turned into figures is one line too (exit 130), not click's
    "Aborted!" with exit 1 (exit_codes.py)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args, set(self.commands)))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (
            click.exceptions.ClickException,
            click.exceptions.Exit,
            click.exceptions.Abort,
            SystemExit,
            EOFError,
        ):
            raise
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None
        except BrokenPipeError:  # the reader went away (`ckdemo hagroup status | head -2`)
            import os
            import sys

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush
            raise SystemExit(exit_codes.BROKEN_PIPE) from None
        except Exception as exc:
            from .menu.loop import report_internal_error

            home = home_path(ctx.obj)
            where = (
                report_internal_error(exc, str(home / "errors.log"))
                if home.is_dir()
                else "nowhere (no state folder)"
            )
            raise InternalError(
                f"internal error: {type(exc).__name__}: {exc} (a ckdemo bug; details in {where})"
            ) from None


GLOBAL_WITH_VALUE = ("--home", "--config", "--module")
GLOBAL_FLAGS = ("--nolb",)


def hoist_global_options(args: list[str], commands: set[str]) -> list[str]:
    """`ckdemo run token-tour --home H` as `ckdemo --home H run token-tour`: the global options
    are taken wherever they come before a `--` (after it they belong to another program, as in
    `ckdemo lab run S -- app --home x`)."""
    front, rest, seen_command = [], [], False
    items = iter(args)
    for arg in items:
        if arg == "--":
            rest.append(arg)
            rest.extend(items)
            break
        name = arg.split("=", 1)[0]
        if seen_command and name in GLOBAL_WITH_VALUE:
            front.append(arg)
            if "=" not in arg:
                value = next(items, None)
                if value is not None:
                    front.append(value)
            continue
        if seen_command and arg in GLOBAL_FLAGS:
            front.append(arg)
            continue
        if not seen_command and arg in commands:
            seen_command = True
        elif not seen_command and name in GLOBAL_WITH_VALUE and "=" not in arg:
            rest.append(arg)  # a global option before the command: its value is no command
            value = next(items, None)
            if value is not None:
                rest.append(value)
            continue
        rest.append(arg)
    return front + rest


@click.group(
    cls=SafeGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Environment: CKDEMO_HOME, CKDEMO_CONFIG, CKDEMO_MODULE (the options above); "
    "CKDEMO_USER_PIN, CKDEMO_SO_PIN (PINs for init and for ${...} in scripts). "
    'Shell completion: eval "$(_CKDEMO_COMPLETE=bash_source ckdemo)" (docs/CONFIGURATION.md). '
    "Global options may also come after the command (ckdemo run SCRIPT --home H).",
)
@click.version_option(
    None, "-V", "--version", package_name="ckdemo", prog_name="ckdemo", message="%(prog)s %(version)s"
)
@click.option(
    "--home",
    envvar="CKDEMO_HOME",
    show_envvar=True,
    type=click.Path(file_okay=False),
    help="State folder (default ./.ckdemo).",
)
@click.option(
    "--config",
    envvar="CKDEMO_CONFIG",
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help="Configuration file in Chrystoki.conf syntax (default HOME/Chrystoki.conf).",
)
@click.option(
    "--module",
    envvar="CKDEMO_MODULE",
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help="Use this PKCS#11 library (e.g. Luna libCryptoki2.so) instead of the members.",
)
@click.option(
    "--nolb", is_flag=True, help="No load balancing: HA calls go to the first active member (CKDemo's nolb)."
)
@click.pass_context
def main(ctx: click.Context, home, config, module, nolb) -> None:
    """CKDemo-like PKCS#11 test harness. Without a command: the interactive menu on a terminal,
    or a replay of the script on standard input."""
    ctx.obj = GlobalOptions(home, config, module, nolb)
    if ctx.invoked_subcommand is None:
        if sys.stdin.isatty():
            ctx.exit(_interactive(ctx))
        ctx.exit(_replay(ctx, "-", None, None, False))


def _error_log(settings) -> str:
    return str(settings.home / "errors.log")


def _config_watch(settings, workspace):
    """`hagroup retry/interval/...` from another terminal reach a running menu (config/watch.py)."""
    from .config.watch import ConfigWatch

    return ConfigWatch(settings.config_path, settings.conf, workspace.groups).poll


def _write_junit(steps, path: str, name: str, error: str | None) -> None:
    from .replay import junit as junit_xml  # xml.etree: only for --junit

    try:
        junit_xml.write(steps, path, name, error=error)
    except OSError as exc:
        raise Fail(f"cannot write JUnit report {path}: {exc.strerror}") from None


def _interactive(ctx: click.Context) -> int:
    from .menu.context import Context
    from .menu.io import TerminalIO
    from .menu.loop import MenuLoop

    from .interprocess import menu_presence

    workspace_settings = settings_for(ctx)
    workspace = workspace_for(workspace_settings)
    try:
        with menu_presence(workspace_settings.home):  # `hagroup recover` elsewhere can tell
            MenuLoop(
                Context(workspace, TerminalIO()),
                error_log=_error_log(workspace_settings),
                watch=_config_watch(workspace_settings, workspace),
            ).run()
    except KeyboardInterrupt:
        click.echo("\n(interrupted)")
    return exit_codes.OK


def _replay(
    ctx: click.Context,
    script: str,
    transcript: str | None,
    junit: str | None,
    keep_going: bool,
    slot_ref: str | None = None,
) -> int:
    from .menu.context import Context
    from .menu.loop import PROMPT, MenuLoop
    from .replay.runner import Replay, stdout_outputs
    from .replay.script import VARIABLE, ScriptError, defaults, load, parse, require_steps
    from .replay import shipped
    from .replay.variables import TOUR_SLOT, ScriptVariables, check, slot_numbers

    name = "stdin" if script == "-" else Path(script).name
    given, script = script, shipped.resolve(script)
    try:
        lines = parse(sys.stdin.read(), "<stdin>") if script == "-" else load(script)
        require_steps(lines, "<stdin>" if script == "-" else script)
    except ScriptError as exc:
        if script == given != "-" and "/" not in given and not Path(given).exists():
            exc = ScriptError(
                f"{exc} (neither a file here nor a shipped script: `ckdemo scripts` lists them)"
            )
        if junit:
            _write_junit([], junit, name, str(exc))
        raise Fail(str(exc)) from None
    settings = settings_for(ctx)
    workspace = workspace_for(settings, show_menu=False)  # the transcript shows the menu once
    chosen = {}
    if slot_ref is not None:  # --token-label / --slot: the tours' slot, ${TOUR_SLOT}, is that one
        if not any(TOUR_SLOT in VARIABLE.findall(line.text) for line in lines):
            raise Fail(
                f"{name} does not use ${{{TOUR_SLOT}}}, so --token-label and --slot would "
                "choose nothing (the shipped tours do; a script names its slot with it)"
            )
        number, _ = slot_by_uri(workspace, slot_ref)
        chosen[TOUR_SLOT] = str(number)
    variables = ScriptVariables(
        settings.secrets(),
        workspace.last,
        *slot_numbers(workspace.slots, workspace.groups),
        defaults(lines),
        chosen=chosen,
    )
    try:
        check(lines, variables, "<stdin>" if script == "-" else script)
    except ScriptError as exc:  # before anything runs: one line, as a script that cannot be read
        if junit:
            _write_junit([], junit, name, str(exc))
        raise Fail(str(exc)) from None
    try:
        out = open(transcript, "w") if transcript else None
    except OSError as exc:
        raise Fail(f"cannot write transcript {transcript}: {exc.strerror}") from None
    from .replay.control import HAControl

    replay = Replay(
        lines, variables, stdout_outputs(out), keep_going=keep_going, control=HAControl(workspace)
    )
    error, interrupted = None, False
    try:
        MenuLoop(
            Context(workspace, replay),
            observer=replay.observe,
            error_log=_error_log(settings),
            prompt=PROMPT,
            watch=_config_watch(settings, workspace),
        ).run()
    except ScriptError as exc:
        error = str(exc)
        replay.write(f"\nScript error: {error}\n")
    except KeyboardInterrupt:
        interrupted = True
        replay.stopped_early = True
        replay.write("\n(interrupted)\n")
    finally:
        replay.write("\n" + replay.summary() + "\n")
        if out:
            out.close()
    if junit:
        _write_junit(replay.steps, junit, name, error)
    if error:
        return exit_codes.USAGE
    if interrupted:
        return exit_codes.INTERRUPTED
    return exit_codes.FAILED if replay.failed else exit_codes.OK


def _complete_script(ctx, param, incomplete: str) -> list:
    """Shell completion for SCRIPT: the shipped names, then files as the shell completes them."""
    from click.shell_completion import CompletionItem
    from .replay import shipped

    return [CompletionItem(n) for n in shipped.names() if n.startswith(incomplete)] + [
        CompletionItem(incomplete, type="file")
    ]


@main.command()
@click.argument("script", type=click.Path(dir_okay=False, allow_dash=True), shell_complete=_complete_script)
@click.option("--transcript", type=click.Path(dir_okay=False), help="Also write the transcript here.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write a JUnit XML report here.")
@click.option("--keep-going", is_flag=True, help="Go on after a step that failed its expectation.")
@click.option(
    "--token-label",
    metavar="LABEL",
    help="The slot whose token has this label (as pkcs11-tool takes it) is ${TOUR_SLOT}, "
    "the slot the shipped tours run on (over the environment and @default).",
)
@click.option(
    "--slot",
    "slot_uri",
    metavar="URI",
    help="The same by a pkcs11 URI (RFC 7512): pkcs11:token=member2, pkcs11:serial=...",
)
@click.pass_context
def run(ctx: click.Context, script, transcript, junit, keep_going, token_label, slot_uri) -> None:
    """Replay SCRIPT (a file, the name of a shipped script such as token-tour, or - for standard
    input) through the menu; exit 1 if a step fails."""
    if token_label is not None and slot_uri is not None:
        raise Fail("--token-label and --slot both choose the slot: give one")
    if slot_uri is not None and not slot_uri.lower().startswith("pkcs11:"):
        raise Fail(f"--slot takes a pkcs11 URI (pkcs11:token=LABEL), got {slot_uri!r}")
    slot_ref = f"pkcs11:token={quote(token_label, safe='')}" if token_label is not None else slot_uri
    ctx.exit(_replay(ctx, script, transcript, junit, keep_going, slot_ref))


@main.command("scripts")
@click.argument("name", required=False)
def scripts_command(name) -> None:
    """List the shipped scripts with what each shows, or print the script NAME (to copy and edit)."""
    from .replay import shipped

    if name is not None:
        path = shipped.find(name)
        if path is None:
            raise Fail(f"no shipped script {name!r} (shipped: {', '.join(shipped.names())})")
        click.echo(path.read_text(), nl=False)
        return
    names = shipped.names()
    width = max(len(n) for n in names)
    for script in names:
        click.echo(f"{script:<{width}}  {shipped.summary(shipped.FOLDER / script)}")
    click.echo(f"\nckdemo run NAME replays one; ckdemo scripts NAME prints it ({shipped.FOLDER}).")


@main.command()
@click.option(
    "--members",
    type=click.IntRange(1, 16),
    help=f"Number of SoftHSM2 member tokens (default: keep; {DEFAULT_MEMBERS} at first).",
)
@click.option(
    "--force", is_flag=True, help="Delete the member tokens ckdemo made and make new ones (other files stay)."
)
@click.option(
    "--user-pin",
    envvar="CKDEMO_USER_PIN",
    show_envvar=True,
    help=f"User PIN of new tokens (env CKDEMO_USER_PIN, better than argv; default: keep; "
    f"{DEFAULT_USER_PIN} at first).",
)
@click.option(
    "--so-pin",
    envvar="CKDEMO_SO_PIN",
    show_envvar=True,
    help=f"SO PIN of new tokens (env CKDEMO_SO_PIN; default: keep; {DEFAULT_SO_PIN} at first).",
)
@click.option(
    "--store-pins/--no-store-pins",
    default=None,
    help="Keep the PINs in Chrystoki.conf for scripts (default: only the public defaults "
    "are kept; other PINs come from CKDEMO_USER_PIN / CKDEMO_SO_PIN).",
)
@click.option("--label-prefix", help="Member token labels PREFIX1, PREFIX2, ... (default: member).")
@click.option(
    "--remote/--local",
    default=None,
    help="Serve members from p11-kit server processes (real process kills) or load them "
    "in-process (default: keep the current choice; local at first).",
)
@click.option(
    "--isolated/--shared",
    default=None,
    help="Load each local member through its own copy of the library (parallel calls, "
    "re-initialised alone) or all through one instance (default: keep; at first the menu "
    "shares one instance and ckdemo serve gives each member a copy).",
)
@click.pass_context
def init(
    ctx: click.Context, members, force, user_pin, so_pin, store_pins, label_prefix, remote, isolated
) -> None:
    """Provision the state folder: a private SoftHSM2 config and member tokens."""
    from .provision import provision

    if ctx.obj.module:
        raise Fail(
            f"init makes SoftHSM2 member tokens; --module {ctx.obj.module} (a library "
            "used instead of the members) does not apply to it: leave it out, or run the "
            "menu with --module and no init"
        )
    home = home_path(ctx.obj)
    try:
        done = provision(
            home,
            members=members,
            force=force,
            user_pin=user_pin or None,
            so_pin=so_pin or None,
            remote=remote,
            isolated=isolated,
            store_pins=store_pins,
            label_prefix=label_prefix,
        )
    except ProvisionError as exc:
        raise Fail(str(exc)) from None
    except OSError as exc:
        raise Fail(os_error("cannot provision the state folder", exc)) from None
    click.echo(
        f"Provisioned {done.home}: {len(done.labels)} SoftHSM2 member tokens "
        f"({', '.join(done.labels)}); config {done.config_path}"
    )
    for line in done.ha_init:
        click.echo(f"HA group: {line}.")


class LazyCommands(dict):
    """The subcommands by name; one given as "module:attribute" (under ckdemo.commands) is imported
    when first looked up: by its own invocation, by completion or by --help, which lists them all,
    never by the menu, which needs none of them (docs/PERFORMANCE.md, Start-up)."""

    def __getitem__(self, name: str) -> click.Command:
        command = super().__getitem__(name)
        if isinstance(command, str):
            module, attribute = command.split(":")
            command = getattr(importlib.import_module(f"ckdemo.commands.{module}"), attribute)
            super().__setitem__(name, command)
        return command

    def get(self, name: str, default=None):
        return self[name] if name in self else default

    def values(self):
        return [self[name] for name in self]

    def items(self):
        return [(name, self[name]) for name in self]


main.commands = LazyCommands(main.commands)
main.commands.update(
    {
        "hagroup": "hagroup:hagroup",
        "member": "member:member",
        "bench": "measure:bench_command",
        "soak": "measure:soak",
        "serve": "serve:serve",
        "bench-serve": "bench_serve:bench_serve",
        "fault": "fault:fault",
        "lab": "lab:lab",
    }
)

__all__ = ["main"]
