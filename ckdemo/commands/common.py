"""What every command shares: the one-line failure, exit codes, and the settings and workspace
built from the global options. The commands and the entry point (cli.py) both import this; the
commands never import cli.py, which registers them."""
from __future__ import annotations

from pathlib import Path

import click

from ..provision import ProvisionError
from ..settings import SettingsError, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Fail(click.ClickException):
    """One clear line on stderr and exit code 2, never a traceback."""
    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        click.echo(f"ckdemo: {self.message}", err=True)


def settings_for(ctx: click.Context, auto_provision: bool = True):
    o = ctx.obj
    try:
        return load_settings(o["home"], o["config"], o["module"], auto_provision=auto_provision)
    except (SettingsError, ProvisionError) as exc:
        raise Fail(str(exc)) from None
    except OSError as exc:  # e.g. a home below a regular file, or in a folder one may not write
        raise Fail(os_error("cannot use the state folder", exc)) from None


def os_error(what: str, exc: OSError) -> str:
    """One line for an OSError: what failed, the path and the system's reason."""
    where = f" {exc.filename}" if exc.filename else ""
    return f"{what}{where}: {exc.strerror or exc}"


def home_path(obj: dict) -> Path:
    import os
    from ..settings import DEFAULT_HOME
    return Path(obj.get("home") or os.environ.get("CKDEMO_HOME") or DEFAULT_HOME).expanduser()


def workspace_for(settings):
    from ..harness import build_workspace
    try:
        workspace = build_workspace(settings)
        if click.get_current_context().obj.get("nolb"):
            for group in workspace.groups:
                group.balance = False
        return workspace
    except SettingsError as exc:
        raise Fail(str(exc)) from None
