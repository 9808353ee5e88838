"""Command-line entry points: parse options, build objects, hand over. Nothing else."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .provision import DEFAULT_MEMBERS, DEFAULT_SO_PIN, DEFAULT_USER_PIN, ProvisionError
from .settings import SettingsError, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Fail(click.ClickException):
    """One clear line on stderr and exit code 2, never a traceback."""
    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        click.echo(f"ckdemo: {self.message}", err=True)


def _settings(ctx: click.Context, auto_provision: bool = True):
    o = ctx.obj
    try:
        return load_settings(o["home"], o["config"], o["module"], auto_provision=auto_provision)
    except (SettingsError, ProvisionError) as exc:
        raise Fail(str(exc)) from None


def _workspace(settings):
    from .harness import build_workspace
    try:
        return build_workspace(settings)
    except SettingsError as exc:
        raise Fail(str(exc)) from None


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="CKDEMO_HOME", type=click.Path(file_okay=False),
              help="State folder (default ./.ckdemo; env CKDEMO_HOME).")
@click.option("--config", envvar="CKDEMO_CONFIG", type=click.Path(dir_okay=False),
              help="Configuration file in Chrystoki.conf syntax (default HOME/Chrystoki.conf).")
@click.option("--module", envvar="CKDEMO_MODULE", type=click.Path(dir_okay=False),
              help="Use this PKCS#11 library (e.g. Luna libCryptoki2.so) instead of the members.")
@click.pass_context
def main(ctx: click.Context, home, config, module) -> None:
    """CKDemo-like PKCS#11 test harness. Without a command: the interactive menu on a terminal,
    or a replay of the script on standard input."""
    ctx.obj = {"home": home, "config": config, "module": module}
    if ctx.invoked_subcommand is None:
        if sys.stdin.isatty():
            ctx.exit(_interactive(ctx))
        ctx.exit(_replay(ctx, "-", None, None, False))


def _error_log(settings) -> str:
    return str(settings.home / "errors.log")


def _write_junit(junit_xml, steps, path: str, name: str, error: str | None) -> None:
    try:
        junit_xml.write(steps, path, name, error=error)
    except OSError as exc:
        raise Fail(f"cannot write JUnit report {path}: {exc.strerror}") from None


def _interactive(ctx: click.Context) -> int:
    from .menu.context import Context
    from .menu.io import TerminalIO
    from .menu.loop import MenuLoop

    workspace_settings = _settings(ctx)
    workspace = _workspace(workspace_settings)
    try:
        MenuLoop(Context(workspace, TerminalIO()), error_log=_error_log(workspace_settings)).run()
    except KeyboardInterrupt:
        click.echo("\n(interrupted)")
    return EXIT_OK


def _replay(ctx: click.Context, script: str, transcript: str | None, junit: str | None,
            keep_going: bool) -> int:
    from .menu.context import Context
    from .menu.loop import MenuLoop
    from .replay import junit as junit_xml
    from .replay.runner import Replay, ScriptVariables, stdout_outputs
    from .replay.script import ScriptError, load, parse

    name = "stdin" if script == "-" else Path(script).name
    try:
        lines = parse(sys.stdin.read(), "<stdin>") if script == "-" else load(script)
    except ScriptError as exc:
        if junit:
            _write_junit(junit_xml, [], junit, name, str(exc))
        raise Fail(str(exc)) from None
    settings = _settings(ctx)
    workspace = _workspace(settings)
    workspace.options.show_menu = False  # the transcript shows the menu once, not every step
    try:
        out = open(transcript, "w") if transcript else None
    except OSError as exc:
        raise Fail(f"cannot write transcript {transcript}: {exc.strerror}") from None
    from .replay.control import HAControl
    variables = ScriptVariables(settings.secrets(), workspace.last)
    replay = Replay(lines, variables, stdout_outputs(out), keep_going=keep_going,
                    control=HAControl(workspace))
    error = None
    try:
        MenuLoop(Context(workspace, replay), observer=replay.observe,
                 error_log=_error_log(settings)).run()
    except ScriptError as exc:
        error = str(exc)
        replay.write(f"\nScript error: {error}\n")
    finally:
        replay.write("\n" + replay.summary() + "\n")
        if out:
            out.close()
    if junit:
        _write_junit(junit_xml, replay.steps, junit, name, error)
    if error:
        return EXIT_USAGE
    return EXIT_FAILED if replay.failed else EXIT_OK


@main.command()
@click.argument("script", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--transcript", type=click.Path(dir_okay=False), help="Also write the transcript here.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write a JUnit XML report here.")
@click.option("--keep-going", is_flag=True, help="Go on after a step that failed its expectation.")
@click.pass_context
def run(ctx: click.Context, script, transcript, junit, keep_going) -> None:
    """Replay SCRIPT (or - for standard input) through the menu; exit 1 if a step fails."""
    ctx.exit(_replay(ctx, script, transcript, junit, keep_going))


@main.command()
@click.option("--members", default=DEFAULT_MEMBERS, show_default=True, type=click.IntRange(1, 16),
              help="Number of SoftHSM2 member tokens.")
@click.option("--force", is_flag=True, help="Delete existing member tokens and start again.")
@click.option("--user-pin", default=DEFAULT_USER_PIN, show_default=True, envvar="CKDEMO_USER_PIN")
@click.option("--so-pin", default=DEFAULT_SO_PIN, show_default=True, envvar="CKDEMO_SO_PIN")
@click.option("--label-prefix", default="member", show_default=True)
@click.option("--remote/--local", default=None,
              help="Serve members from p11-kit server processes (real process kills) or load them "
                   "in-process (default: keep the current choice; local at first).")
@click.pass_context
def init(ctx: click.Context, members, force, user_pin, so_pin, label_prefix, remote) -> None:
    """Provision the state folder: a private SoftHSM2 config and member tokens."""
    from .provision import member_labels, provision
    from .settings import DEFAULT_HOME
    import os

    home = Path(ctx.obj["home"] or os.environ.get("CKDEMO_HOME") or DEFAULT_HOME)
    try:
        done = provision(home, members, force, member_labels(members, label_prefix), user_pin, so_pin,
                         remote)
    except ProvisionError as exc:
        raise Fail(str(exc)) from None
    click.echo(f"Provisioned {done.home}: {len(done.labels)} SoftHSM2 member tokens "
               f"({', '.join(done.labels)}); config {done.config_path}")


@main.group()
def hagroup() -> None:
    """HA group settings in Chrystoki.conf (Luna's lunacm 'hagroup' commands)."""


def _edit_conf(ctx: click.Context, change) -> None:
    from .config.chrystoki import ChrystokiConf
    settings = _settings(ctx)
    conf = ChrystokiConf.load(settings.config_path) if settings.config_path.exists() else settings.conf
    change(conf)
    try:
        conf.save(settings.config_path)
    except OSError as exc:
        raise Fail(f"cannot write {settings.config_path}: {exc.strerror}") from None
    click.echo(f"Updated {settings.config_path}")


@hagroup.command()
@click.option("--count", required=True, type=click.IntRange(min=-1),
              help="Recovery attempts N (-1 unlimited, 0 turns auto-recovery off).")
@click.pass_context
def retry(ctx: click.Context, count: int) -> None:
    """Set HAConfiguration reconnAtt (creates the section, as lunacm does)."""
    from .config import ha
    _edit_conf(ctx, lambda conf: ha.set_retry(conf, count))


@hagroup.command()
@click.option("--seconds", required=True, type=click.FloatRange(min=0, min_open=True),
              help="Recovery interval X in seconds (Luna: 60 minimum; shorter allowed for demos).")
@click.pass_context
def interval(ctx: click.Context, seconds: float) -> None:
    """Set HAConfiguration AutoReconnectInterval."""
    from .config import ha
    _edit_conf(ctx, lambda conf: ha.set_interval(conf, seconds))


@hagroup.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@click.pass_context
def haonly(ctx: click.Context, state: str) -> None:
    """Set HAConfiguration HAOnly: list only the virtual slots, hide the members."""
    _edit_conf(ctx, lambda conf: conf.set("HAConfiguration", "HAOnly", "1" if state == "on" else "0"))


@hagroup.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--path", type=click.Path(), help="haLogPath: a log file, or a folder for haErrorLog.txt.")
@click.pass_context
def log(ctx: click.Context, state: str, path: str | None) -> None:
    """Set HAConfiguration haLogStatus (and haLogPath)."""
    def change(conf) -> None:
        conf.set("HAConfiguration", "haLogStatus", "enabled" if state == "on" else "disabled")
        if path:
            conf.set("HAConfiguration", "haLogPath", str(Path(path).resolve()))
    _edit_conf(ctx, change)


@hagroup.command()
@click.pass_context
def show(ctx: click.Context) -> None:
    """Groups, members (found, state), and the HA settings in force."""
    from tabulate import tabulate
    from .codes import ckr_name
    from .config import ha

    settings = _settings(ctx)
    workspace = _workspace(settings)
    groups = [s for s in workspace.slots if getattr(s, "is_virtual", False)]
    if not groups:
        click.echo(f"No HA group in {settings.config_path}.")
        return
    for group in groups:
        rows = [(n, m.serial, m.label or "-", "yes" if m.slot is not None else "no", ckr_name(code))
                for n, (m, code) in enumerate(group.status(), start=1)]
        click.echo(f"HA group {group.label}  serial {group.serial}")
        click.echo(tabulate(rows, headers=["#", "HSM", "Label", "Found", "Status"],
                            disable_numparse=True))
    cfg = ha.settings(settings.conf)
    click.echo(f"\nreconnAtt = {cfg.reconnect_attempts} ({'unlimited' if cfg.reconnect_attempts < 0 else 'off' if cfg.reconnect_attempts == 0 else 'attempts'}); "
               f"AutoReconnectInterval = {cfg.interval_s:g} s; HAOnly = {int(cfg.ha_only)}; "
               f"haLogStatus = {'enabled' if cfg.log_enabled else 'disabled'}"
               + (f"; haLogPath = {cfg.log_path}" if cfg.log_path else ""))
    click.echo("Per-member call counts belong to a running session: menu choice 122.")


@hagroup.command()
@click.option("--pin", envvar="CKDEMO_USER_PIN", help="User PIN (default: prompt, or the config's test PIN).")
@click.pass_context
def synchronize(ctx: click.Context, pin: str | None) -> None:
    """Copy every key object to the members that lack it (Luna: hagroup synchronize)."""
    from .codes import CKRError
    from .model import CKU_USER

    settings = _settings(ctx)
    pin = pin or settings.secrets().get("CKDEMO_USER_PIN") or click.prompt("User PIN", hide_input=True)
    workspace = _workspace(settings)
    groups = [s for s in workspace.slots if getattr(s, "is_virtual", False)]
    if not groups:
        raise Fail(f"no HA group in {settings.config_path}")
    for group in groups:
        try:
            group.login(CKU_USER, pin)
            copied = group.synchronize()
        except CKRError as exc:
            raise Fail(f"HA group {group.label}: {exc}") from None
        click.echo(f"HA group {group.label}: {copied} object(s) copied.")


@main.command(name="bench")
@click.option("--op", "operation", default="rsa-sign", show_default=True,
              type=click.Choice(["rsa-sign", "ecdsa-sign", "aes-encrypt", "aes-ecb", "digest", "random"]))
@click.option("--slot", "slot_ref", default="both", show_default=True,
              help="A slot# number, 'ha' (the first HA slot), 'direct' (its first member), "
                   "or 'both' (HA and direct side by side, ratio in one run).")
@click.option("--seconds", default=5.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--key-size", default=0, type=click.IntRange(min=0), help="RSA bits / AES bits.")
@click.option("--data-size", default=32, show_default=True, type=click.IntRange(1, 1 << 20))
@click.option("--members", "member_count", default=0, type=click.IntRange(min=0),
              help="Use only the first N members of the HA group (0: all).")
@click.option("--pin", envvar="CKDEMO_USER_PIN", help="User PIN (default: the config's test PIN).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_context
def bench_command(ctx, operation, slot_ref, seconds, threads, key_size, data_size, member_count,
                  pin, as_json):
    """Throughput and latency of one operation on a slot, or HA vs direct in the same run."""
    import json
    from tabulate import tabulate
    from . import bench
    from .codes import CKR_USER_ALREADY_LOGGED_IN, CKRError
    from .model import CKU_USER

    settings = _settings(ctx)
    workspace = _workspace(settings)
    pin = pin or settings.secrets().get("CKDEMO_USER_PIN")
    groups = [s for s in workspace.slots if getattr(s, "is_virtual", False)]
    chosen = []
    if slot_ref in ("ha", "both", "direct"):
        if not groups:
            raise Fail("no HA group configured: use --slot N")
        if member_count:
            groups[0] = _first_members(groups[0], member_count)
        direct = groups[0].members[0].slot
        chosen = {"ha": [("HA", groups[0])], "direct": [("direct", direct)],
                  "both": [("direct", direct), ("HA", groups[0])]}[slot_ref]
    else:
        try:
            chosen = [(f"slot#{slot_ref}", workspace.slot(int(slot_ref)))]
        except (ValueError, IndexError):
            raise Fail(f"--slot {slot_ref}: not a slot number (1-{len(workspace.slots)}), ha, direct or both") from None
    try:
        for _, slot in chosen:
            if pin:
                session = slot.open_session(rw=True)
                try:
                    session.login(CKU_USER, pin)
                except CKRError as exc:
                    if exc.ckr != CKR_USER_ALREADY_LOGGED_IN:
                        raise
        if sys.stderr.isatty():
            with click.progressbar(length=1, label=f"{operation} for {seconds:g} s", file=sys.stderr,
                                   show_percent=False, show_eta=False,
                                   item_show_func=lambda n: n) as bar:
                done = [0]

                def tick(n: int) -> None:
                    done[0] += n
                    bar.current_item = f"{done[0]} ops"
                    bar.render_progress()
                results = bench.bench(chosen, operation, seconds, threads, key_size, data_size, tick)
                bar.update(1)
        else:
            click.echo(f"{operation} for {seconds:g} s on {', '.join(n for n, _ in chosen)} ...",
                       err=True)
            results = bench.bench(chosen, operation, seconds, threads, key_size, data_size)
    except CKRError as exc:
        raise Fail(str(exc)) from None
    figures = [r.as_dict() for r in results]
    ratio = None
    if len(results) == 2 and results[0].ops_per_s:
        d, h = results
        ratio = {"ha_over_direct": round(h.ops_per_s / d.ops_per_s, 3),
                 "added_us_per_call": round(1e6 / h.ops_per_s - 1e6 / d.ops_per_s, 2)
                 if h.ops_per_s else None}
    if as_json:
        click.echo(json.dumps({"results": figures, "ratio": ratio}, indent=2))
        return
    rows = [(f["slot"], f["operation"], f["threads"], f["ops"], f["ops_per_s"],
             f["latency_us"]["p50"], f["latency_us"]["p95"], f["latency_us"]["p99"],
             f["latency_us"]["max"], f["errors"],
             " ".join(f"{k[-4:]}:{v:.0%}" for k, v in f["member_share"].items()) or "-")
            for f in figures]
    click.echo(tabulate(rows, headers=["slot", "op", "thr", "ops", "ops/s", "p50 us", "p95 us",
                                       "p99 us", "max us", "err", "member share"],
                        disable_numparse=True))
    if ratio:
        click.echo(f"HA/direct = {ratio['ha_over_direct']} "
                   f"(HA adds {ratio['added_us_per_call']} us per call), measured in one run")


@main.group()
def member() -> None:
    """Remote members: p11-kit server processes serving one member token each."""


def _servers(ctx: click.Context, name: str | None):
    from .harness import member_servers
    from .members.remote import RemoteError
    settings = _settings(ctx)
    try:
        servers = member_servers(settings)
    except RemoteError as exc:
        raise Fail(str(exc)) from None
    if not servers:
        raise Fail(f"no remote members in {settings.config_path} (ckdemo init --remote)")
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
    from .members.remote import RemoteError
    for server in _servers(ctx, name):
        try:
            click.echo(f"{server.label}: serving on {server.socket} (pid {server.serve()})")
        except RemoteError as exc:
            raise Fail(str(exc)) from None


@member.command()
@click.argument("name")
@click.pass_context
def kill(ctx: click.Context, name: str) -> None:
    """SIGKILL to NAME's server process group, as a power cut ('all' for every member)."""
    for server in _servers(ctx, name):
        if not server.managed:
            raise Fail(f"{server.label} is served elsewhere ({server.socket}); ckdemo does not kill it")
        click.echo(f"{server.label}: {'killed' if server.kill() else 'was not running'}")


@member.command()
@click.argument("name")
@click.pass_context
def restart(ctx: click.Context, name: str) -> None:
    """Kill NAME's server and serve it again (the HA group recovers it on a later call)."""
    from .members.remote import RemoteError
    for server in _servers(ctx, name):
        try:
            click.echo(f"{server.label}: restarted (pid {server.restart()})")
        except RemoteError as exc:
            raise Fail(str(exc)) from None


@member.command(name="list")
@click.pass_context
def list_members(ctx: click.Context) -> None:
    """Remote members with pid, socket and state."""
    from tabulate import tabulate
    rows = [(s.label, s.pid() or "-", s.socket, s.state(), "ckdemo" if s.managed else "elsewhere")
            for s in _servers(ctx, None)]
    click.echo(tabulate(rows, headers=["member", "pid", "socket", "state", "served by"],
                        disable_numparse=True))


def _first_members(group, count: int):
    """The same group over its first `count` members only (for 1 vs 2 vs 3 member figures)."""
    from .ha.group import HAGroup
    from .ha.member import HAMember
    from .ha.policy import RecoveryPolicy
    if count > len(group.members):
        raise Fail(f"--members {count}: the group has {len(group.members)}")
    members = [HAMember(m.serial, m.slot, m.label) for m in group.members[:count]]
    return HAGroup(group.label, group.serial, members,
                   RecoveryPolicy(group.policy.interval_s, group.policy.retries), group.log,
                   group.slot_id)


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        pair = (float(low), float(high or low))
    except ValueError:
        raise click.BadParameter(f"{text!r}: write MIN,MAX seconds, e.g. 2,4") from None
    if pair[0] <= 0 or pair[1] < pair[0]:
        raise click.BadParameter(f"{text!r}: need 0 < MIN <= MAX")
    return pair


@main.command()
@click.option("--seconds", default=30.0, show_default=True, type=click.FloatRange(min=3))
@click.option("--seed", default=1, show_default=True, type=int, help="Chaos schedule seed.")
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="Recovery interval X during the soak (seconds).")
@click.option("--kill-every", default="2,4", show_default=True, help="MIN,MAX seconds between kills.")
@click.option("--down-for", default="0.5,1.5", show_default=True, help="MIN,MAX seconds a member stays down.")
@click.option("--pin", envvar="CKDEMO_USER_PIN", help="User PIN (default: the config's test PIN).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def soak(ctx, seconds, seed, interval, kill_every, down_for, pin, as_json) -> None:
    """Chaos: sign and encrypt/decrypt on the HA slot while members are killed and brought back
    (real SIGKILLs for remote members). Exit 1 on any application-visible failure or when the
    members end up holding different key material."""
    import json
    from tabulate import tabulate
    from . import soak as chaos_run
    from .codes import CKRError

    chaos = chaos_run.Chaos(seed, _range(kill_every), _range(down_for))
    settings = _settings(ctx)
    pin = pin or settings.secrets().get("CKDEMO_USER_PIN")
    if not pin:
        raise Fail("no user PIN: pass --pin or set CKDEMO_USER_PIN")
    workspace = _workspace(settings)
    groups = [s for s in workspace.slots if getattr(s, "is_virtual", False)]
    if not groups or len(groups[0].members) < 2:
        raise Fail("a soak needs an HA group with at least two members")
    click.echo(f"soak: {seconds:g} s on HA group {groups[0].label} ({len(groups[0].members)} members, "
               f"seed {seed})...", err=True)
    try:
        report = chaos_run.run(groups[0], seconds, chaos, pin, interval)
    except CKRError as exc:
        raise Fail(f"soak could not start: {exc}") from None
    figures = report.as_dict()
    ok = not report.failures and figures["consistency"].get("identical", False)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        ctx.exit(EXIT_OK if ok else EXIT_FAILED)
    click.echo(f"operations: {figures['operations']} in {figures['seconds']} s; "
               f"application-visible failures: {figures['application_failures']}")
    for sample in figures["failure_samples"]:
        click.echo(f"  failure: {sample}")
    click.echo(f"kills: {figures['kills']}, restores: {figures['restores']}, "
               f"p99 latency {figures['p99_ms']} ms overall")
    if figures["around_failures"]:
        click.echo(tabulate([(r["t"], r["member"], r["slowest_ms"], r["p99_ms"])
                             for r in figures["around_failures"]],
                            headers=["kill at s", "member", "slowest ms (next 2 s)", "p99 ms (next 2 s)"],
                            disable_numparse=True))
    click.echo(f"worst p99 added around a failure: {figures['worst_added_p99_ms']} ms")
    for r in figures["recoveries"]:
        click.echo(f"  recovered {r['member']} at {r['t']} s, inside call {r['call']}")
    c = figures["consistency"]
    click.echo(f"consistency: all members active {c.get('all_members_active')}, "
               f"same objects and key material {c.get('identical')}")
    click.echo(f"RSS: {figures['rss_start_kb']} kB -> {figures['rss_end_kb']} kB "
               f"({figures['rss_growth_kb']:+d} kB)")
    ctx.exit(EXIT_OK if ok else EXIT_FAILED)


@member.command()
@click.argument("name")
@click.pass_context
def hang(ctx: click.Context, name: str) -> None:
    """SIGSTOP to NAME's server: it keeps its socket but never answers (a dead network link).
    The HA group fails it after MemberTimeout seconds (CKDemo section, default 20)."""
    for server in _servers(ctx, name):
        click.echo(f"{server.label}: {'stopped' if server.hang() else 'was not running'}")


@member.command()
@click.argument("name")
@click.pass_context
def resume(ctx: click.Context, name: str) -> None:
    """SIGCONT to NAME's server after `member hang`."""
    for server in _servers(ctx, name):
        click.echo(f"{server.label}: {'running again' if server.resume() else 'was not running'}")
