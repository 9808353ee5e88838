"""The command line a new user meets: --version, python -m ckdemo, environment variables
shown in --help, help text on every option of every command, and click's shell completion."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import click

from conftest import clean_env

from ckdemo.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=60, env=clean_env(**(env or {}))
    )


def test_version_from_the_command_and_from_python_m(ckdemo_bin):
    expected = f"ckdemo {version('ckdemo')}\n"
    assert run(str(ckdemo_bin), "--version").stdout == expected
    assert run(str(ckdemo_bin), "-V").stdout == expected
    module = run(sys.executable, "-m", "ckdemo", "--version")
    assert module.returncode == 0 and module.stdout == expected, module.stderr


def test_python_m_ckdemo_is_the_whole_command(ckdemo_bin):
    via_module = run(sys.executable, "-m", "ckdemo", "--help")
    assert via_module.returncode == 0
    assert via_module.stdout == run(str(ckdemo_bin), "--help").stdout
    assert via_module.stdout.startswith("Usage: ckdemo [OPTIONS]")


def test_help_shows_the_environment_variables(ckdemo_bin):
    text = " ".join(run(str(ckdemo_bin), "--help").stdout.split())  # unwrap click's line breaks
    for name in ("CKDEMO_HOME", "CKDEMO_CONFIG", "CKDEMO_MODULE"):
        assert f"[env var: {name}]" in text
    assert "CKDEMO_USER_PIN, CKDEMO_SO_PIN" in text
    assert "_CKDEMO_COMPLETE=bash_source ckdemo" in text
    init = " ".join(run(str(ckdemo_bin), "init", "--help").stdout.split())
    assert "[env var: CKDEMO_USER_PIN]" in init and "[env var: CKDEMO_SO_PIN]" in init


def _options(command: click.Command, path: tuple[str, ...]):
    for param in command.params:
        if isinstance(param, click.Option):
            yield " ".join(path), param
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, path + (name,))


def test_every_option_of_every_command_has_help():
    options = list(_options(main, ("ckdemo",)))
    assert len(options) > 40  # the walk reached the subcommands
    assert [(where, param.opts) for where, param in options if not (param.help or "").strip()] == []


def test_bash_completion_script_and_answers(ckdemo_bin):
    source = run(str(ckdemo_bin), env={"_CKDEMO_COMPLETE": "bash_source"})
    assert source.returncode == 0
    assert (
        "_ckdemo_completion()" in source.stdout
        and "complete -o nosort -F _ckdemo_completion ckdemo" in source.stdout
    )
    commands = run(
        str(ckdemo_bin),
        env={"_CKDEMO_COMPLETE": "bash_complete", "COMP_WORDS": "ckdemo hag", "COMP_CWORD": "1"},
    )
    assert commands.stdout.split() == ["plain,hagroup"]
    scripts = run(
        str(ckdemo_bin),
        env={"_CKDEMO_COMPLETE": "bash_complete", "COMP_WORDS": "ckdemo run ha-", "COMP_CWORD": "2"},
    )
    assert scripts.stdout.split() == ["plain,ha-failover-demo", "plain,ha-remote-demo", "file,ha-"]
