"""What every command shares: the one-line failure (with its code from ckdemo/exit_codes.py),
and the settings and workspace built from the global options. The commands and the entry point (cli.py) both import this; the
commands never import cli.py, which registers them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from .. import exit_codes
from ..provision import ProvisionError
from ..settings import SettingsError, load_settings

# the names commands used before exit_codes.py, kept for code written against them
EXIT_OK, EXIT_FAILED, EXIT_USAGE = exit_codes.OK, exit_codes.FAILED, exit_codes.USAGE


class Fail(click.ClickException):
    """One clear line on stderr and exit code 2 (usage or configuration), never a traceback."""

    exit_code = exit_codes.USAGE

    def show(self, file=None) -> None:
        click.echo(f"ckdemo: {self.message}", err=True)


class InternalError(Fail):
    """A ckdemo bug: one line on stderr (the traceback went to HOME/errors.log), exit code 3."""

    exit_code = exit_codes.INTERNAL


class Interrupted(Fail):
    """Ctrl-C: one line on stderr, exit code 130."""

    exit_code = exit_codes.INTERRUPTED


@dataclass(frozen=True)
class GlobalOptions:
    """The global options as given (or their environment variables), read once by the entry
    point and handed to every command as ctx.obj; nothing sets a field afterwards (a command
    that needs another home makes another value with dataclasses.replace)."""

    home: str | None = None
    config: str | None = None
    module: str | None = None
    nolb: bool = False


def settings_for(ctx: click.Context, auto_provision: bool = True):
    o: GlobalOptions = ctx.obj
    try:
        return load_settings(o.home, o.config, o.module, auto_provision=auto_provision, balance=not o.nolb)
    except (SettingsError, ProvisionError) as exc:
        raise Fail(str(exc)) from None
    except OSError as exc:  # e.g. a home below a regular file, or in a folder one may not write
        raise Fail(os_error("cannot use the state folder", exc)) from None


def os_error(what: str, exc: OSError) -> str:
    """One line for an OSError: what failed, the path and the system's reason."""
    where = f" {exc.filename}" if exc.filename else ""
    return f"{what}{where}: {exc.strerror or exc}"


def home_path(options: GlobalOptions | None) -> Path:
    import os
    from ..settings import DEFAULT_HOME

    given = options.home if options is not None else None
    return Path(given or os.environ.get("CKDEMO_HOME") or DEFAULT_HOME).expanduser()


def workspace_for(settings, show_menu: bool = True):
    from ..harness import build_workspace

    try:
        return build_workspace(settings, show_menu=show_menu)
    except SettingsError as exc:
        raise Fail(str(exc)) from None


def slot_by_uri(workspace, text: str):
    """(number, slot) of the one slot a pkcs11 URI (RFC 7512: pkcs11:token=LABEL;serial=...)
    names among the workspace's slots; Fail with one line when none or several match."""
    from ..uri import URIError, matching_slots, parse

    try:
        uri = parse(text)
    except URIError as exc:
        raise Fail(str(exc)) from None
    if not uri.chooses_slot():
        raise Fail(
            f"{text!r} names no token or slot (give token=, serial=, model=, manufacturer= or slot-id=)"
        )
    found = matching_slots(uri, workspace.slots)
    if not found:
        raise Fail(f"no slot matches {text} (ckdemo lists them with menu choice 14; pkcs11-tool -L)")
    if len(found) > 1:
        raise Fail(
            f"{text} matches {len(found)} slots ({', '.join(f'slot#{n}' for n, _ in found)}): "
            "add serial= to choose one"
        )
    return found[0]
