"""One table of exit codes for every command (ckdemo/exit_codes.py, docs/EXIT-CODES.md): the page
and the table agree, and real runs end with the code the table gives them. Ctrl-C (130) on the
long runs: tests/test_interrupt.py."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conftest import no_traceback, requires_softhsm
from test_bench import frames, on_a_terminal_until

from ckdemo import exit_codes
from ckdemo.cli import SafeGroup
from ckdemo.commands.common import GlobalOptions

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "EXIT-CODES.md"

STEP = "# 14 Get Slot List\n14\n"


def test_the_page_shows_the_table():
    rows = re.findall(r"^\| (\d+) \| (\w+) \| (.+) \|$", PAGE.read_text(), re.MULTILINE)
    assert [(int(code), name) for code, name, _ in rows] == [(c.value, c.name) for c in exit_codes.TABLE]
    assert {c.value for c in exit_codes.TABLE} >= {0, 1, 2, 3, 130}
    assert len({c.value for c in exit_codes.TABLE}) == len(exit_codes.TABLE)  # no code twice


def per_command(page: str) -> list[str]:
    """The bullets of the page's per-command list, each as one line of text."""
    listed = page[page.index("\nPer command:\n") :]
    return [" ".join(item.split()) for item in re.split(r"\n- ", listed)[1:]]


def commands_not_listed(group: click.Group, bullets: list[str]) -> list[str]:
    """Each command of the CLI needs a bullet that starts with `ckdemo NAME`; a group's bullet
    names each of its subcommands too."""
    missing = []
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        mine = [b for b in bullets if re.match(rf"`ckdemo {re.escape(name)}[ `]", b)]
        if not mine:
            missing.append(name)
        elif isinstance(command, click.Group):
            text = " ".join(mine)
            missing += [
                f"{name} {verb}"
                for verb in sorted(command.commands)
                if not re.search(rf"(?<![\w-]){re.escape(verb)}(?![\w-])", text)
            ]
    return missing


def test_the_page_lists_every_command_with_its_codes():
    from ckdemo.cli import main

    assert commands_not_listed(main, per_command(PAGE.read_text())) == []


def test_a_command_left_out_of_the_page_is_found():
    @click.group()
    def cli():
        pass

    @cli.group()
    def member():
        pass

    for name in ("kill", "slow"):
        member.command(name)(lambda: None)
    cli.command("bench")(lambda: None)
    cli.command("bench-serve")(lambda: None)
    page = "x\nPer command:\n\n- `ckdemo bench`: 0.\n- `ckdemo member`: kill\n  exits 0.\n"
    assert commands_not_listed(cli, per_command(page)) == ["bench-serve", "member slow"]
    page += "- `ckdemo bench-serve`: 0.\n- `ckdemo member slow NAME`: 0.\n"
    assert commands_not_listed(cli, per_command(page)) == []


def test_the_readme_links_the_page_where_it_lists_the_commands():
    text = (REPO / "README.md").read_text()
    commands = text[text.index("\n## Commands\n") :]
    commands = commands[: commands.index("\n## ", 1)]
    assert "(docs/EXIT-CODES.md)" in commands


def test_no_command_exits_with_a_bare_number():
    """Every exit code of the command layer comes from the table: no sys.exit(1), ctx.exit(2)."""
    sources = [REPO / "ckdemo" / "cli.py", *(REPO / "ckdemo" / "commands").glob("*.py")]
    bare = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("exit", "SystemExit")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                bare.append(f"{path.name}:{node.lineno}")
            if (
                isinstance(node, ast.Assign)
                and any(getattr(t, "id", "") == "exit_code" for t in node.targets)
                and isinstance(node.value, ast.Constant)
            ):
                bare.append(f"{path.name}:{node.lineno}")
    assert bare == []


# ---- the last line of defence (cli.SafeGroup), in process --------------------------------------
def group_raising(error: BaseException) -> click.Group:
    @click.group(cls=SafeGroup)
    @click.pass_context
    def main(ctx):
        ctx.obj = GlobalOptions(home="/nonexistent/ckdemo-home")

    @main.command()
    def broken():
        raise error

    return main


def test_an_internal_error_is_one_line_and_exit_3():
    done = CliRunner().invoke(group_raising(ZeroDivisionError("division by zero")), ["broken"])
    assert done.exit_code == exit_codes.INTERNAL == 3
    assert done.output.strip().splitlines() == [
        "ckdemo: internal error: ZeroDivisionError: division by zero (a ckdemo bug; details in "
        "nowhere (no state folder))"
    ]


def test_a_ctrl_c_no_command_handled_is_one_line_and_exit_130():
    done = CliRunner().invoke(group_raising(KeyboardInterrupt()), ["broken"])
    assert done.exit_code == exit_codes.INTERRUPTED == 130
    assert done.output.strip() == "ckdemo: interrupted"  # not click's "Aborted!" with exit 1


# ---- real runs --------------------------------------------------------------------------------
@requires_softhsm
def test_a_script_that_meets_its_expectations_exits_0_one_that_does_not_1(shared_home, run_ckdemo, tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text(STEP + "@expect CKR_OK\n")
    bad.write_text(STEP + "@expect CKR_PIN_INCORRECT\n")
    assert run_ckdemo(shared_home, "run", str(good)).returncode == exit_codes.OK
    done = run_ckdemo(shared_home, "run", str(bad))
    assert done.returncode == exit_codes.FAILED, done.stdout
    no_traceback(done.stdout, done.stderr)


@requires_softhsm
@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "# directives only\n@ha-interval 1\n"])
def test_an_empty_script_is_refused_with_one_line_and_exit_2(shared_home, run_ckdemo, tmp_path, text):
    script = tmp_path / "empty"
    script.write_text(text)
    done = run_ckdemo(shared_home, "run", str(script), "--junit", str(tmp_path / "report.xml"))
    assert done.returncode == exit_codes.USAGE
    assert done.stderr.strip().splitlines() == [
        f"ckdemo: {script}: no step to run (the script is empty, or holds only comments and directives)"
    ]
    assert "Replay:" not in done.stdout  # refused before anything ran
    assert "no step to run" in (tmp_path / "report.xml").read_text()  # CI sees why
    piped = run_ckdemo(shared_home, "run", "-", input=text)
    assert piped.returncode == exit_codes.USAGE and "<stdin>: no step to run" in piped.stderr


@requires_softhsm
def test_usage_and_configuration_exit_2(shared_home, run_ckdemo, tmp_path):
    assert run_ckdemo(shared_home, "bench", "--op", "nothing").returncode == exit_codes.USAGE
    assert run_ckdemo(shared_home, "bench", "--slot", "99").returncode == exit_codes.USAGE
    not_a_home = tmp_path / "file"
    not_a_home.write_text("")
    done = run_ckdemo(not_a_home / "home", "bench")
    assert done.returncode == exit_codes.USAGE and done.stderr.startswith("ckdemo: ")
    no_traceback(done.stdout, done.stderr)


@requires_softhsm
@pytest.mark.parametrize(
    "args, says",
    [
        (("init", "--members", "0"), "0 is not in the range"),
        (("scripts", "nosuch"), "no shipped script 'nosuch'"),
        (("hagroup", "status"), "no ckdemo serve runs for this home"),
        (("hagroup", "synchronize", "-group", "nosuch", "-enable"), "no HA group 'nosuch'"),
        (("member", "fail", "member1"), "no ckdemo serve runs for this home"),
        (("member", "slow", "member2", "--ms", "-5"), "slow: ms is above 0 and at most 60000, not -5"),
        (("member", "kill", "member1"), "no remote members"),
        (("fault", "list"), "no ckdemo serve runs for this home"),
        (("lab", "run", "/nonexistent/scenario.toml", "--", "true"), "no such scenario file"),
    ],
)
def test_the_commands_the_page_lists_exit_2_for_what_cannot_be_used(shared_home, run_ckdemo, args, says):
    done = run_ckdemo(shared_home, *args)
    assert done.returncode == exit_codes.USAGE, done.stdout + done.stderr
    assert says in done.stderr
    no_traceback(done.stdout, done.stderr)


@requires_softhsm
def test_bench_exits_1_when_calls_failed(remote_home, run_ckdemo, ckdemo_bin):
    """The direct slot's member is killed (SIGKILL to its p11-kit server) while bench calls it:
    the calls after that fail, the table counts them, one line names the first, exit 1 (it was 0)."""
    killed: list[subprocess.CompletedProcess] = []

    def kill_once_measuring(screen: str) -> bool:
        if not killed and re.search(r"[1-9][\d,]* calls", screen):
            killed.append(run_ckdemo(remote_home, "member", "kill", "member1"))
        return False  # never interrupt: the run ends on its own

    code, chunks, piped = on_a_terminal_until(
        [
            str(ckdemo_bin),
            "--home",
            str(remote_home),
            "bench",
            "--op",
            "digest",
            "--slot",
            "direct",
            "--seconds",
            "2",
        ],
        kill_once_measuring,
    )
    assert killed and killed[0].returncode == 0, killed
    assert code == exit_codes.FAILED, (piped, frames(chunks))
    row = next(line.split() for line in piped.splitlines() if line.startswith("direct"))
    assert int(row[9]) > 0  # the err column
    assert re.search(r"^direct: \d+ call\(s\) failed, the first: .*CKR_", piped, re.MULTILINE), piped
    no_traceback(piped)


@requires_softhsm
def test_a_replay_interrupted_by_ctrl_c_exits_130_with_its_summary(shared_home, ckdemo_bin, tmp_path):
    script = tmp_path / "long"
    script.write_text(STEP + "@sleep 60\n" + STEP)
    junit = tmp_path / "report.xml"
    code, chunks, _ = on_a_terminal_until(
        [str(ckdemo_bin), "--home", str(shared_home), "run", str(script), "--junit", str(junit)],
        lambda screen: "Status: " in screen,
        stdout_too=True,
    )  # the first step is done
    screen = "".join(text for _, text in chunks)
    assert code == exit_codes.INTERRUPTED, screen
    # the summary follows (the step counts once the replay has noted it, which the Ctrl-C may beat)
    assert "(interrupted)" in screen and re.search(r"Replay: [01] steps", screen), screen
    assert junit.exists()
    no_traceback(screen)
