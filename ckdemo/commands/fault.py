"""`ckdemo fault` add, list and clear: the fault lab's faults in a running `ckdemo serve`.

Wiring only: the options become one fault's settings (ckdemo.serve.faults.FaultSpec.parse checks
them, in the server, with one clear line for what is wrong) and go over the control channel.
"""

from __future__ import annotations

from typing import Any

import click

from .common import Fail, settings_for


@click.group()
def fault() -> None:
    """Inject faults into applications' calls through a running `ckdemo serve` (the fault lab)."""


def _ask(ctx: click.Context, command: str, as_json: bool = False, **arguments: Any) -> None:
    from ..serve.control_client import ControlFailed, NoServer, control_path, request

    from . import state_json

    settings = settings_for(ctx)
    try:
        reply = request(control_path(settings.home), command, **arguments)
    except NoServer as exc:
        raise Fail(f"{exc}: start `ckdemo serve` first") from None
    except ControlFailed as exc:
        raise Fail(f"fault: {exc}") from None
    if as_json:
        reply.pop("ok", None)
        reply.pop("lines", None)
        state_json.echo(state_json.envelope(settings, **reply))
        return
    for line in reply["lines"]:
        click.echo(line)


@fault.command()
@click.argument("calls", required=False, default="")
@click.option("--error", help="Answer this CKR (name or number) instead of making the call.")
@click.option("--latency", type=float, help="Add this many milliseconds before answering.")
@click.option("--jitter", type=float, help="... plus or minus up to this many milliseconds.")
@click.option("--hang", "hang", type=float, help="No answer for this many seconds (0: until cleared).")
@click.option("--disconnect", is_flag=True, help="Close the connection, no reply (the call is not made).")
@click.option("--corrupt", is_flag=True, help="Flip the last byte of the output (a wrong signature ...).")
@click.option(
    "--restart-hsm",
    is_flag=True,
    help="Every application's sessions and login end at its next call (no CALLS).",
)
@click.option(
    "--reset-library",
    is_flag=True,
    help="Every call answers CKR_CRYPTOKI_NOT_INITIALIZED until C_Initialize (no CALLS).",
)
@click.option("--remove-token", is_flag=True, help="The token leaves its slot: sessions end, slot event.")
@click.option("--insert-token", is_flag=True, help="The token is back in its slot (slot event).")
@click.option("--change-serial", is_flag=True, help="The token reads another serial number from now on.")
@click.option(
    "--change-slot", is_flag=True, help="The token is in another slot from now on (old slot ids invalid)."
)
@click.option("--count", type=int, help="Take the next COUNT matching calls, then stop.")
@click.option("--every", type=int, help="Take every Nth matching call.")
@click.option("--probability", type=float, help="Take a matching call with this chance (0 < p <= 1).")
@click.option("--seed", type=int, help="Seed of --probability and --jitter (default 0: repeatable).")
@click.option("--after", type=float, help="Start this many seconds from now.")
@click.option("--for", "for_s", type=float, help="Last this many seconds.")
@click.option("--connection", type=int, help="Only this connection (the number serve logs).")
@click.option("--json", "as_json", is_flag=True, help="The fault as the server holds it, in JSON.")
@click.pass_context
def add(
    ctx: click.Context,
    calls: str,
    error: str | None,
    latency: float | None,
    jitter: float | None,
    hang: float | None,
    disconnect: bool,
    corrupt: bool,
    restart_hsm: bool,
    reset_library: bool,
    remove_token: bool,
    insert_token: bool,
    change_serial: bool,
    change_slot: bool,
    count: int | None,
    every: int | None,
    probability: float | None,
    seed: int | None,
    after: float | None,
    for_s: float | None,
    connection: int | None,
    as_json: bool,
) -> None:
    """Add a fault on CALLS (PKCS#11 names or groups, comma separated; none: every call).

    \b
    ckdemo fault add C_Sign --error CKR_DEVICE_ERROR --count 3
    ckdemo fault add C_Sign,C_Decrypt --latency 200 --jitter 50 --probability 0.1 --for 30
    ckdemo fault add C_Sign --hang 5        ckdemo fault add sign --disconnect --count 1
    ckdemo fault add --restart-hsm          ckdemo fault add --reset-library
    """
    events = [
        name
        for name, given in (
            ("restart_hsm", restart_hsm),
            ("reset_library", reset_library),
            ("remove_token", remove_token),
            ("insert_token", insert_token),
            ("change_serial", change_serial),
            ("change_slot", change_slot),
        )
        if given
    ]
    if events:
        rest = [
            n
            for n, v in (
                ("CALLS", calls),
                ("--error", error),
                ("--latency", latency),
                ("--hang", hang),
                ("--disconnect", disconnect),
                ("--corrupt", corrupt),
                ("--count", count),
            )
            if v
        ]
        if rest or len(events) > 1:
            raise Fail(
                "--restart-hsm, --reset-library, --remove-token, --insert-token, "
                "--change-serial and --change-slot are events of their own: give one alone"
            )
        _ask(ctx, events[0], as_json)
        return
    given = {
        "calls": calls,
        "error": error,
        "latency": latency,
        "jitter": jitter,
        "hang": (True if hang == 0 else hang),
        "disconnect": disconnect or None,
        "corrupt": corrupt or None,
        "count": count,
        "every": every,
        "probability": probability,
        "seed": seed,
        "after": after,
        "for": for_s,
        "connection": connection,
    }
    _ask(ctx, "fault_add", as_json, fault={k: v for k, v in given.items() if v is not None and v != ""})


@fault.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="The faults as the server holds them, in JSON.")
@click.pass_context
def list_faults(ctx: click.Context, as_json: bool) -> None:
    """The faults in force, with the calls each has taken."""
    _ask(ctx, "fault_list", as_json)


@fault.command()
@click.argument("fault_id", required=False, type=int)
@click.pass_context
def clear(ctx: click.Context, fault_id: int | None) -> None:
    """Remove FAULT_ID (default: every fault); calls it holds in a hang are answered now."""
    _ask(ctx, "fault_clear", **({} if fault_id is None else {"id": fault_id}))
