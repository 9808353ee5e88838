"""`ckdemo bench-serve`: ckdemo serve (HA slot) against p11-kit server (one SoftHSM2 token), both
measured by clients of p11-kit-client.so in one run (ckdemo.bench_serve does the work)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from .. import exit_codes
from .common import Fail, Interrupted, settings_for
from .progress import ProgressLine, bar, minutes


@click.command(name="bench-serve")
@click.option(
    "--seconds",
    default=12.0,
    show_default=True,
    type=click.FloatRange(min=0.6),
    help="Time per measurement (each operation on each server, and each pair), spread over the rounds.",
)
@click.option(
    "--rounds",
    default=6,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Rounds: each measures both servers, one after the other, the first one changing every round.",
)
@click.option("--pin", envvar="CKDEMO_USER_PIN", help="User PIN (default: the config's test PIN).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_context
def bench_serve(ctx: click.Context, seconds: float, rounds: int, pin: str | None, as_json: bool) -> None:
    """An application of p11-kit-client.so against `ckdemo serve` (the HA slot) and against the C
    `p11-kit server` serving the first member's token: RSA-2048 sign, 32-byte random, and RSA
    sign by two clients at once; rounds alternate in one run. Exit 1 when calls failed; Ctrl-C
    stops the run with the figures so far (exit 130)."""
    from tabulate import tabulate
    from . import state_json
    from .. import bench_serve as measure, libraries
    from ..interruption import StopRequest, first_ctrl_c_stops

    settings = settings_for(ctx)
    if not shutil.which("p11-kit"):
        raise Fail("bench-serve needs the p11-kit command; on Debian or Ubuntu: apt-get install p11-kit")
    try:
        libraries.find(libraries.P11KIT_CLIENT)  # the clients load it (scripts/bench-serve-client)
    except libraries.LibraryNotFound as missing:
        raise Fail(f"bench-serve: {missing}") from None
    members = [m.strip() for m in (settings.conf.get("CKDemo", "Members") or "").split(",") if m.strip()]
    softhsm_conf = settings.conf.get("CKDemo", "SoftHSM2Conf")
    library = settings.conf.get("CKDemo", "Library00")
    if not (members and softhsm_conf and library):
        raise Fail(f"{settings.config_path} names no SoftHSM2 members (ckdemo init)")
    pin = pin or settings.secrets().get("CKDEMO_USER_PIN") or click.prompt("User PIN", hide_input=True)
    stop, progress = StopRequest(), measure.Progress(seconds, rounds)
    try:
        with first_ctrl_c_stops(stop), ProgressLine(lambda: _progress_line(progress, stop)):
            report = measure.run(
                settings.home,
                Path(softhsm_conf),
                library,
                members[0],
                pin,
                seconds,
                rounds,
                progress=progress,
                stop=stop,
            )
    except measure.BenchError as exc:
        if stop.is_set():  # a client or server stopped by the same Ctrl-C: nothing measured
            raise Interrupted(f"interrupted: {exc}") from None
        raise Fail(str(exc)) from None
    errors = sum(b[s]["errors"] for b in report["operations"].values() for s in ("ckdemo", "p11-kit")) + sum(
        p["errors"] for p in report["two_clients"].values()
    )
    code = exit_codes.INTERRUPTED if report["interrupted"] else exit_codes.FAILED if errors else exit_codes.OK
    if as_json:
        state_json.echo(state_json.envelope(settings, **report))
        ctx.exit(code)
    rows = []
    for op, both in report["operations"].items():
        for side in ("ckdemo", "p11-kit"):
            f = both[side]
            rows.append(
                (
                    op,
                    "ckdemo serve (HA slot)" if side == "ckdemo" else f"p11-kit server ({members[0]})",
                    f["ops"],
                    f["ops_per_s"],
                    f["latency_us"].get("p50", "-"),
                    f["latency_us"].get("p99", "-"),
                    f["errors"],
                )
            )
    click.echo(
        tabulate(
            rows, headers=["op", "server", "ops", "ops/s", "p50 us", "p99 us", "err"], disable_numparse=True
        )
    )
    for op, both in report["operations"].items():
        spread = both["ratio_per_round"]
        per_round = (
            f" (per round: median {spread['median']}, quartiles {spread['q1']}-{spread['q3']})"
            if spread["rounds"] > 1
            else ""
        )
        click.echo(f"{op}: ckdemo serve / p11-kit server = {both['ratio']}{per_round}")
    for side, pair in report["two_clients"].items():
        click.echo(
            f"rsa-sign, {side}: 1 client {pair['one_client_ops_per_s']} ops/s, 2 clients at "
            f"once {pair['two_clients_ops_per_s']} ops/s (x{pair['scaling']}), "
            f"{pair['errors']} error(s)"
        )
    click.echo(f"{seconds:g} s per measurement in {rounds} alternating rounds, one run")
    if report["interrupted"]:
        click.echo("interrupted: the figures so far; the servers, clients and their session keys are gone")
    ctx.exit(code)


def _progress_line(progress, stop) -> str:
    """On a terminal only (ProgressLine): the rounds, the measurements and the ETA."""
    if stop.is_set():
        return "bench-serve: interrupted, stopping the servers and clients ..."
    if not progress.round:
        return "bench-serve: starting ckdemo serve, p11-kit server and four clients ..."
    return (
        f"bench-serve {bar(progress.fraction())} round {progress.round}/{progress.rounds}  "
        f"{progress.done}/{progress.total} measurements  ETA {minutes(progress.eta_s())}"
    )
