"""`ckdemo member` kill, hang, resume, slow, flap and stop against a running `ckdemo serve`: the request
goes over its control channel, and serve's MemberLab (ckdemo/lab/member_lab.py) applies it, as it
does for FaultLab and the lab's scenarios. With no serve running, member.py acts on a remote
member's server itself.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Callable

import click

from .common import Fail, settings_for

WAIT_TICK_S = 0.2  # how often the foreground of a slow or flap looks for Ctrl-C, SIGTERM or its end


class NotServed(Exception):
    """No `ckdemo serve` answers for this home."""


def ask(ctx: click.Context, command: str, name: str, **settings: Any) -> dict[str, Any]:
    """One request about member `name` to the running serve; its reply, or NotServed."""
    from ..serve.control_client import ControlFailed, NoServer, control_path, request

    try:
        return request(control_path(settings_for(ctx).home), command, member=name, **settings)
    except NoServer as exc:
        raise NotServed(str(exc)) from None
    except ControlFailed as exc:
        raise Fail(f"{command.removeprefix('member_')} {name}: {exc}") from None


def at_once(ctx: click.Context, action: str, name: str) -> bool:
    """kill, hang, resume through the running serve; False when none runs."""
    try:
        reply = ask(ctx, f"member_{action}", name)
    except NotServed:
        return False
    for line in reply["lines"]:
        click.echo(line)
    return True


def lasting(
    ctx: click.Context, action: str, name: str, settings: dict[str, float], for_s: float | None
) -> bool:
    """slow or flap through the running serve, in the foreground until `for_s` has passed,
    Ctrl-C or SIGTERM, then stopped (the member running and up); False when no serve runs."""
    try:
        reply = ask(ctx, f"member_{action}", name, **settings)
    except NotServed:
        return False
    label = reply["member"]
    click.echo(
        f"{reply['lines'][0]}, " + (f"for {for_s:g} s" if for_s is not None else "until Ctrl-C"), err=True
    )
    foreground(for_s=for_s)
    try:
        stopped = ask(ctx, "member_stop", label)["stopped"]
    except NotServed:
        raise Fail(
            f"{label}: ckdemo serve stopped meanwhile (it ends every member fault as it stops)"
        ) from None
    times = stopped[0]["cycles"] if stopped else 0
    click.echo(
        f"{label}: {times} stop(s) of {settings['ms']:g} ms; running again"
        if action == "slow"
        else f"{label}: down {times} time(s); up again"
    )
    return True


def foreground(
    going_on: Callable[[], bool] = lambda: True,
    for_s: float | None = None,
    begin: Callable[[], object] = lambda: None,
) -> None:
    """begin() (once SIGTERM is caught), then wait until SIGTERM, Ctrl-C, for_s seconds or
    going_on() is false. The SIGTERM handler only
    notes the signal: one taking a lock (Event.set) could run while this very thread holds that
    lock inside Event.wait and wait for itself for ever (seen once: `member flap` went on
    flapping after SIGTERM)."""
    terminated: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda number, _: terminated.append(number))
    ends = None if for_s is None else time.monotonic() + for_s
    try:
        begin()
        while not terminated and going_on() and (ends is None or time.monotonic() < ends):
            time.sleep(WAIT_TICK_S if ends is None else max(0.0, min(WAIT_TICK_S, ends - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop(ctx: click.Context, name: str) -> None:
    try:
        reply = ask(ctx, "member_stop", name)
    except NotServed as exc:
        raise Fail(
            f"{exc}: a slow or flap without ckdemo serve runs in the foreground of its own "
            "`ckdemo member slow` or `ckdemo member flap` (Ctrl-C stops it)"
        ) from None
    for line in reply["lines"]:
        click.echo(line)
