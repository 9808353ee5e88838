"""`ckdemo lab run SCENARIO -- COMMAND ...`: the fault lab, end to end.

Wiring only: the scenario (ckdemo.lab.scenario), a server on the home (the one --home or
CKDEMO_HOME names, else a fresh temporary one made and removed here), the application's
environment, and ckdemo.lab.runner to play it; the report's text on the terminal.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import click

from .. import exit_codes
from .common import Fail, settings_for


@click.group()
def lab() -> None:
    """The fault lab: run an application under a scenario of faults and report how it coped."""


@lab.command(context_settings={"ignore_unknown_options": True})
@click.argument("scenario_file", metavar="SCENARIO", type=click.Path(dir_okay=False))
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--seed", type=int, help="Seed of the faults' random choices (default: the scenario's).")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False),
    default="lab-report",
    show_default=True,
    help="Folder for report.json, report.xml (JUnit), report.html, report.txt and app.log.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    help="Seconds the application may run (default: the scenario's, else 300).",
)
@click.pass_context
def run(
    ctx: click.Context,
    scenario_file: str,
    command: tuple[str, ...],
    seed: int | None,
    report_dir: str,
    timeout: float | None,
) -> None:
    """Serve the HA slot, run COMMAND (after --) with P11_KIT_SERVER_ADDRESS, CKDEMO_P11_MODULE,
    CKDEMO_TOKEN_LABEL and CKDEMO_USER_PIN in its environment, play SCENARIO's faults, stop
    everything and write the report. Exit 0 only when every expectation holds.

    \b
    ckdemo lab run faults.toml --seed 7 --report out -- python3 my_app.py
    """
    from ..lab.runner import LabError, run as run_lab
    from ..lab.scenario import ScenarioError, load
    from .. import libraries
    from .serve import build_server

    try:
        scenario = load(scenario_file, seed)
    except ScenarioError as error:
        raise Fail(str(error)) from None
    if timeout is not None:
        scenario = replace(scenario, timeout_s=timeout)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise Fail("which application? give its command after --")
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        raise Fail(f"cannot run {command[0]!r}: no such program")
    try:
        client = libraries.find(libraries.P11KIT_CLIENT)
    except libraries.LibraryNotFound as error:
        raise Fail(str(error)) from None
    temporary = None
    if not (ctx.obj.home or os.environ.get("CKDEMO_HOME")):
        temporary = Path(tempfile.mkdtemp(prefix="ckdemo-lab-"))
        ctx.obj = replace(ctx.obj, home=str(temporary / "home"))
        click.echo(f"lab: a fresh home in {temporary / 'home'} (removed after the run)", err=True)
    try:
        settings = settings_for(ctx)
        socket_path = settings.home / "run" / f"lab-{os.getpid()}.sock"
        served = build_server(settings, str(socket_path), control=True)
        settings = served.settings
        if served.control is not None:
            served.control.start()
        groups = served.groups
        env = dict(os.environ)
        env.update(
            {
                "P11_KIT_SERVER_ADDRESS": f"unix:path={served.path.resolve()}",
                "CKDEMO_P11_MODULE": client,
                "CKDEMO_TOKEN_LABEL": groups[0].token_info().label.strip() if groups else "",
            }
        )
        pin = settings.secrets().get("CKDEMO_USER_PIN")
        if pin:
            env["CKDEMO_USER_PIN"] = pin
        extra = {
            "home": str(settings.home),
            "temporary_home": temporary is not None,
            "module": client,
            "server_address": env["P11_KIT_SERVER_ADDRESS"],
        }
        try:
            from ..provenance import ckdemo_version

            done = run_lab(
                scenario,
                served.server,
                groups,
                list(command),
                env,
                Path(report_dir),
                ckdemo_version(),
                extra,
                log=lambda line: click.echo(line, err=True),
                members=served.members,
            )
        except LabError as error:
            raise Fail(str(error)) from None
        finally:
            if served.control is not None:
                served.control.stop()
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    from ..lab.report import text

    for line in text(done.result):
        click.echo(line)
    click.echo(f"report: {', '.join(str(p) for p in done.written)}; the application's output: {done.app_log}")
    if not done.result.held:
        ctx.exit(exit_codes.FAILED)
