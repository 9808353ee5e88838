"""`ckdemo bench` and `ckdemo soak`: throughput and latency figures, and chaos runs."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import click

from .. import exit_codes
from .common import Fail, os_error, settings_for, slot_by_uri, workspace_for
from .progress import ProgressLine, bar, minutes


@click.command(name="bench")
@click.option(
    "--op",
    "operation",
    default="rsa-sign",
    show_default=True,
    type=click.Choice(["rsa-sign", "ecdsa-sign", "aes-encrypt", "aes-ecb", "digest", "random"]),
    help="The operation measured.",
)
@click.option(
    "--slot",
    "slot_ref",
    default="both",
    show_default=True,
    help="A slot# number, 'ha' (the first HA slot), 'direct' (its first member), "
    "'both' (HA and direct side by side, ratio in one run), or a pkcs11 URI "
    "(RFC 7512: pkcs11:token=member2).",
)
@click.option("--token-label", help="The slot whose token has this label (as pkcs11-tool takes it).")
@click.option(
    "--seconds",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="How long each slot is measured (--slot both: twice this in all).",
)
@click.option(
    "--count",
    default=0,
    type=click.IntRange(min=0),
    help="Stop after this many operations per slot instead of after --seconds.",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Threads calling at once, each with its own session.",
)
@click.option("--key-size", default=0, type=click.IntRange(min=0), help="RSA bits / AES bits.")
@click.option(
    "--data-size",
    default=32,
    show_default=True,
    type=click.IntRange(1, 1 << 20),
    help="Bytes signed, encrypted, digested or generated per operation.",
)
@click.option(
    "--members",
    "member_count",
    default=0,
    type=click.IntRange(min=0),
    help="Use only the first N members of the HA group (0: all).",
)
@click.option("--pin", envvar="CKDEMO_USER_PIN", help="User PIN (default: the config's test PIN).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="Also write the run as one self-contained HTML page: calls per second over "
    "time, sampled from the run's counters (nothing added to the calls).",
)
@click.pass_context
def bench_command(
    ctx,
    operation,
    slot_ref,
    token_label,
    seconds,
    count,
    threads,
    key_size,
    data_size,
    member_count,
    pin,
    as_json,
    html_path,
):
    """Throughput and latency of one operation on a slot, or HA vs direct in the same run.
    Exit 1 when calls failed; Ctrl-C stops the run with the figures so far (exit 130)."""
    from tabulate import tabulate
    from . import state_json
    from .. import bench
    from ..codes import CKR_USER_ALREADY_LOGGED_IN, CKRError
    from ..interruption import StopRequest, first_ctrl_c_stops
    from ..model import CKU_USER

    if html_path and not Path(html_path).expanduser().resolve().parent.is_dir():
        raise Fail(f"cannot write the HTML page {html_path}: no folder {Path(html_path).parent}")
    settings = settings_for(ctx)
    workspace = workspace_for(settings)
    pin = pin or settings.secrets().get("CKDEMO_USER_PIN")
    groups = workspace.groups
    chosen = []
    if slot_ref in ("ha", "both", "direct") and not token_label:
        if not groups:
            raise Fail("no HA group configured: use --slot N")
        if member_count:
            groups[0] = _first_members(groups[0], member_count)
        direct = groups[0].members[0].slot
        chosen = {
            "ha": [("HA", groups[0])],
            "direct": [("direct", direct)],
            "both": [("direct", direct), ("HA", groups[0])],
        }[slot_ref]
    elif token_label or slot_ref.lower().startswith("pkcs11:"):
        ref = f"pkcs11:token={quote(token_label)}" if token_label else slot_ref
        number, slot = slot_by_uri(workspace, ref)
        chosen = [(f"slot#{number}", slot)]
    else:
        try:
            chosen = [(f"slot#{slot_ref}", workspace.slot(int(slot_ref)))]
        except (ValueError, IndexError):
            raise Fail(
                f"--slot {slot_ref}: not a slot number (1-{len(workspace.slots)}), ha, direct, "
                "both or a pkcs11: URI"
            ) from None
    stop = StopRequest()
    try:
        with first_ctrl_c_stops(stop):
            for _, slot in chosen:
                if pin:
                    session = slot.open_session(rw=True)
                    try:
                        session.login(CKU_USER, pin)
                    except CKRError as exc:
                        if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                            raise
            progress = bench.Progress(seconds * len(chosen), count * len(chosen))
            sampled = bench.sampler(progress, threads).start() if html_path else None
            try:
                with ProgressLine(lambda: _bench_line(operation, progress, stop)):
                    results = bench.bench(
                        chosen, operation, seconds, threads, key_size, data_size, progress, count, stop
                    )
            finally:
                if sampled is not None:
                    sampled.stop()
    except CKRError as exc:
        raise Fail(str(exc)) from None
    interrupted = stop.is_set()
    failed = sum(r.errors for r in results)
    code = exit_codes.INTERRUPTED if interrupted else exit_codes.FAILED if failed else exit_codes.OK
    figures = [r.as_dict() for r in results]
    asked = bench.parameters(chosen, operation, seconds, threads, key_size, data_size, count)
    ratio = None
    if len(results) == 2 and results[0].ops_per_s and results[1].ops_per_s:
        d, h = results  # an interrupted run may have measured one side only: no ratio then
        ratio = {
            "ha_over_direct": round(h.ops_per_s / d.ops_per_s, 3),
            "added_us_per_call": round(1e6 / h.ops_per_s - 1e6 / d.ops_per_s, 2),
        }
    if html_path:
        try:
            Path(html_path).write_text(bench.html_page(figures, asked, sampled, ratio))
        except OSError as exc:
            raise Fail(f"cannot write the HTML page {html_path}: {exc.strerror or exc}") from None
    if as_json:
        state_json.echo(
            state_json.envelope(
                settings, parameters=asked, results=figures, ratio=ratio, interrupted=interrupted
            )
        )
        ctx.exit(code)
    rows = [
        (
            f["slot"],
            f["operation"],
            f["threads"],
            f["ops"],
            f["ops_per_s"],
            f["latency_us"]["p50"],
            f["latency_us"]["p95"],
            f["latency_us"]["p99"],
            f["latency_us"]["max"],
            f["errors"],
            " ".join(f"{k[-4:]}:{v:.0%}" for k, v in f["member_share"].items()) or "-",
        )
        for f in figures
    ]
    click.echo(
        tabulate(
            rows,
            headers=[
                "slot",
                "op",
                "thr",
                "ops",
                "ops/s",
                "p50 us",
                "p95 us",
                "p99 us",
                "max us",
                "err",
                "member share",
            ],
            disable_numparse=True,
        )
    )
    if ratio:
        click.echo(
            f"HA/direct = {ratio['ha_over_direct']} "
            f"(HA adds {ratio['added_us_per_call']} us per call), measured in one run"
        )
    for f in figures:
        if f["errors"]:
            click.echo(f"{f['slot']}: {f['errors']} call(s) failed, the first: {f['first_error']}")
    if interrupted:
        click.echo(
            f"interrupted after {sum(f['measured_s'] for f in figures):g} s of measuring: "
            "the figures so far; the run's sessions and keys are closed"
        )
    ctx.exit(code)


def _bench_line(operation: str, progress, stop) -> str:
    if stop.is_set():
        return f"{operation}: interrupted, closing the run's sessions ..."
    if not progress.slot:
        return f"{operation}: preparing keys and sessions ..."
    if progress.total_ops:
        amount = f"{progress.ops:,}/{progress.total_ops:,} calls"
    else:
        amount = f"{progress.measured_s():.1f}/{progress.total_s:g} s, {progress.ops:,} calls"
    return (
        f"{operation} {bar(progress.fraction())} {progress.fraction():4.0%}  {amount}  "
        f"ETA {minutes(progress.eta_s())}  ({progress.slot})"
    )


def _soak_line(report, seconds: float) -> str:
    if report.began_at is None:
        return "soak: logging in and creating the run's keys ..."
    counts = (
        f"kills {len(report.kills)}  recoveries {len(report.recoveries)}  "
        f"failures {len(report.failures)}  ops {report.operations:,}"
    )
    if report.seconds:  # the workload is over
        state = (
            "waiting for the members that can come back"
            if report.settling
            else "removing the run's keys"
            if report.cleaning
            else "done"
        )
        if report.interrupted:
            state = f"interrupted; {state}"
        return f"soak {bar(1.0)} {report.seconds:.0f}/{seconds:g} s  {counts}  ({state})"
    elapsed = min(seconds, time.monotonic() - report.began_at)
    return (
        f"soak {bar(elapsed / seconds)} {elapsed:.0f}/{seconds:g} s  "
        f"ETA {minutes(seconds - elapsed)}  {counts}"
    )


def _first_members(group, count: int):
    """The same group over its first `count` members only (for 1 vs 2 vs 3 member figures)."""
    from ..ha.build import GroupConfig, build_group

    if count > len(group.members):
        raise Fail(f"--members {count}: the group has {len(group.members)}")
    config = GroupConfig(
        group.label, group.serial, group.policy.interval_s, group.policy.retries, group.slot_id, group.balance
    )
    return build_group(
        config,
        [(m.serial, m.slot, m.label) for m in group.members[:count]],
        group.policy.clock,
        log=group.log,
        vault=group.vault,
    )


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        pair = (float(low), float(high or low))
    except ValueError:
        raise click.BadParameter(f"{text!r}: write MIN,MAX seconds, e.g. 2,4") from None
    if pair[0] <= 0 or pair[1] < pair[0]:
        raise click.BadParameter(f"{text!r}: need 0 < MIN <= MAX")
    return pair


@click.command()
@click.option(
    "--seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=3),
    help="How long the workload and the chaos run.",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Chaos schedule seed.")
@click.option(
    "--interval",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Recovery interval X during the soak (seconds).",
)
@click.option("--kill-every", default="2,4", show_default=True, help="MIN,MAX seconds between kills, or off.")
@click.option(
    "--hang-every",
    default="off",
    show_default=True,
    help="MIN,MAX seconds between hangs (SIGSTOP of a remote member's server: its socket "
    "stays open, nothing answers), or off.",
)
@click.option("--down-for", default="0.5,1.5", show_default=True, help="MIN,MAX seconds a member stays down.")
@click.option("--pin", envvar="CKDEMO_USER_PIN", help="User PIN (default: the config's test PIN).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="Also write the run as one self-contained HTML page (the fault lab's timeline).",
)
@click.pass_context
def soak(ctx, seconds, seed, interval, kill_every, hang_every, down_for, pin, as_json, html_path) -> None:
    """Chaos: sign and encrypt/decrypt on the HA slot while members are killed and brought back
    (real SIGKILLs for remote members). Exit 1 on any application-visible failure or when the
    members end up holding different key material. Ctrl-C ends the workload early: the members
    are still brought back, compared and cleared of the run's keys, the figures so far printed
    (exit 130)."""
    from . import soak_text, state_json
    from .. import soak as chaos_run
    from ..codes import CKRError
    from ..interruption import StopRequest, first_ctrl_c_stops

    if html_path and not Path(html_path).expanduser().resolve().parent.is_dir():
        raise Fail(f"cannot write the HTML page {html_path}: no folder {Path(html_path).parent}")
    kills = None if kill_every == "off" else _range(kill_every)
    hangs = None if hang_every == "off" else _range(hang_every)
    chaos = chaos_run.Chaos(seed, kills, _range(down_for), hangs)
    settings = settings_for(ctx)
    if hangs and settings.remote_members() != settings.member_labels():
        raise Fail(
            "--hang-every stops member servers (SIGSTOP): every member must be remote (ckdemo init --remote)"
        )
    pin = pin or settings.secrets().get("CKDEMO_USER_PIN")
    if not pin:
        raise Fail("no user PIN: pass --pin or set CKDEMO_USER_PIN")
    workspace = workspace_for(settings)
    groups = workspace.groups
    if not groups or len(groups[0].members) < 2:
        raise Fail("a soak needs an HA group with at least two members")
    report, stop = chaos_run.Report(), StopRequest()
    softhsm_conf, modules = settings.conf.get("CKDemo", "SoftHSM2Conf"), settings.libraries()
    tool = (
        (f"SOFTHSM2_CONF={softhsm_conf} " if softhsm_conf else "")
        + "pkcs11-tool --module "
        + (modules[0] if modules else "<the member's PKCS#11 library>")
    )
    try:
        with first_ctrl_c_stops(stop), ProgressLine(lambda: _soak_line(report, seconds)) as progress:
            chaos_run.run(groups[0], seconds, chaos, pin, interval, report, stop, say=progress.say, tool=tool)
    except CKRError as exc:
        raise Fail(f"soak could not start: {exc}") from None
    figures = report.as_dict()
    if html_path:
        try:
            Path(html_path).write_text(chaos_run.html_page(report))
        except OSError as exc:
            raise Fail(os_error("cannot write the HTML page", exc)) from None
    ok = not report.failures and figures["consistency"].get("identical", False) and not figures["given_up"]
    code = exit_codes.INTERRUPTED if report.interrupted else exit_codes.OK if ok else exit_codes.FAILED
    if as_json:
        state_json.echo(state_json.envelope(settings, **figures))
        ctx.exit(code)
    for line in soak_text.lines(figures):
        click.echo(line)
    if report.interrupted:
        click.echo(
            f"interrupted after {figures['elapsed_s']} s of {seconds:g}: the figures so far; "
            "the run's keys are removed from every member"
        )
    ctx.exit(code)
