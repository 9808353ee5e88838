"""Start-up: the menu imports only what its first screen needs. What a later screen, an
option or another subcommand needs (tabulate, the JUnit writer, the subcommands) is imported when
used; `ckdemo --help` still lists every subcommand. The figures are in docs/PERFORMANCE.md
(Start-up); this checks the cause, not the clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import TIMEOUT_S, clean_env, requires_softhsm

from ckdemo.cli import main

# ckdemo, started as the console script starts it; the modules it loaded go to a file
PROBE = """
import json, sys
from ckdemo.cli import main
home, modules = sys.argv[1], sys.argv[2]
try:
    main(["--home", home] + sys.argv[3:], prog_name="ckdemo")
except SystemExit:
    pass
with open(modules, "w") as out:
    json.dump(sorted(sys.modules), out)
"""

NOT_AT_START = [
    "tabulate",  # tables: 14, 122, ... (and importlib.metadata with it)
    "importlib.metadata",
    "ckdemo.replay.junit",
    "xml.etree.ElementTree",  # only for run --junit
    "ckdemo.commands.hagroup",
    "ckdemo.commands.member",
    "ckdemo.commands.measure",
    "ckdemo.commands.serve",
    "ckdemo.commands.bench_serve",
    "ckdemo.serve",
    "ckdemo.rpc",
    "ckdemo.bench",
    "ckdemo.soak",
    "ckdemo.lab",
    "ckdemo.commands.lab",
    "ckdemo.commands.fault",
    "ckdemo.handlers.token",
    "ckdemo.handlers.crypto",
    "ckdemo.handlers.others",  # a choice's
]
SUBCOMMANDS = [
    "bench",
    "bench-serve",
    "fault",
    "hagroup",
    "init",
    "lab",
    "member",
    "run",
    "scripts",
    "serve",
    "soak",
]


def started(home: Path, tmp_path: Path, answers: str, *args: str) -> tuple[str, set[str]]:
    modules = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(home), str(modules), *args],
        input=answers,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=clean_env(),
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done.stdout, set(json.loads(modules.read_text()))


@requires_softhsm
def test_the_menu_starts_without_what_its_first_screen_does_not_need(shared_home, tmp_path):
    out, modules = started(shared_home, tmp_path, "0\n")
    assert "(0) Quit demo\nEnter your choice : 0" in out  # the menu ran, on real slots
    assert {"pkcs11", "ckdemo.members.module", "ckdemo.ha.group", "click"} <= modules
    assert sorted(set(NOT_AT_START) & modules) == []


@requires_softhsm
def test_what_was_left_out_is_imported_when_a_screen_needs_it(shared_home, tmp_path):
    out, modules = started(shared_home, tmp_path, "14\n0\n")  # Get Slot List: a table
    assert "HA Virtual Card Slot" in out and "Status: Doing great, no errors (CKR_OK)" in out
    assert {"tabulate", "ckdemo.handlers.token"} <= modules
    report = tmp_path / "report.xml"
    out, modules = started(shared_home, tmp_path, "0\n", "run", "--junit", str(report), "-")
    assert "ckdemo.replay.junit" in modules
    assert report.read_text().lstrip().startswith("<?xml")


def test_help_lists_every_subcommand_and_each_one_loads():
    assert sorted(main.list_commands(None)) == SUBCOMMANDS
    for name in SUBCOMMANDS:
        command = main.get_command(None, name)
        assert command is not None and command.name == name
        assert (command.help or "").strip(), name
    listed = subprocess.run(
        [sys.executable, "-m", "ckdemo", "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=clean_env(),
    )
    assert listed.returncode == 0, listed.stderr
    commands = listed.stdout.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split()[0] for line in commands.splitlines()] == SUBCOMMANDS
    assert all(len(line.split()) > 2 for line in commands.splitlines())  # each with its help line


def test_a_subcommand_is_found_by_name_without_the_others(tmp_path):
    modules = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "home"), str(modules), "hagroup", "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: ckdemo hagroup [OPTIONS] COMMAND")
    loaded = set(json.loads(modules.read_text()))
    assert "ckdemo.commands.hagroup" in loaded
    assert not {"ckdemo.commands.serve", "ckdemo.commands.measure"} & loaded
