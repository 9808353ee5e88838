"""No crash, no traceback, no internal error on any input.

A seeded fuzz run (scripts/fuzz: random menu choices and answers replayed by real `ckdemo run -`
processes on SoftHSM2 tokens, plus attribute, directive and config values fed to their parsers),
then each reproducer that once crashed or printed a traceback, as its own regression test.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from conftest import no_traceback, requires_softhsm
from support import REPO

pytestmark = requires_softhsm

FUZZ_SEED = 20261126
FUZZ_COUNT = 2000  # menu interactions; about 20 s on 2 cores (make fuzz: the long run)
SLOT1_LOGIN = "1\n1\ny\n3\n1\n1\n${CKDEMO_USER_PIN}\n"


def load_fuzz():
    loader = importlib.machinery.SourceFileLoader("ckdemo_fuzz", str(REPO / "scripts" / "fuzz"))
    spec = importlib.util.spec_from_loader("ckdemo_fuzz", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ckdemo_fuzz"] = module  # dataclasses look their module up while it loads
    loader.exec_module(module)
    return module


def test_seeded_fuzz_run_has_no_crash_traceback_or_internal_error(tmp_path):
    fuzz = load_fuzz()
    figures = fuzz.fuzz(FUZZ_COUNT, FUZZ_SEED, batch=200, jobs=2, keep=tmp_path / "failed", root=tmp_path)
    assert figures.processes == FUZZ_COUNT // 200 and figures.interactions == FUZZ_COUNT
    assert figures.lines > 5 * FUZZ_COUNT and figures.in_process == FUZZ_COUNT
    assert figures.clean, fuzz.summary(figures, FUZZ_SEED) + "\n" + "\n".join(figures.failures[:10])


def test_fuzz_scripts_reach_deep_prompts_with_hostile_answers(tmp_path):
    """The generator is worth its run time: the hostile values land inside choices, not only at the
    menu prompt (a fuzzer that only typed garbage choices could never find the old crashes)."""
    import random

    fuzz = load_fuzz()
    text, _ = fuzz.make_script(random.Random(FUZZ_SEED), tmp_path, 2000)
    lines = text.splitlines()
    assert any(line.startswith("CKA_") and "=-" in line for line in lines)
    for choice in ("20", "25", "26"):  # create, set, find: followed by NAME=VALUE answers
        followed = [lines[i + 2] for i, line in enumerate(lines[:-2]) if line == choice]
        assert any(answer.startswith("CKA_") for answer in followed), choice
    assert any(line.startswith("@") and ("/dev/zero" in line or "fifo" in line) for line in lines)
    assert not any(line.strip() in ("0", "00", "-0") for line in lines)  # 0 would quit the menu


# ---------------------------------------------------------------- regressions: attribute values


@pytest.mark.parametrize(
    "choice, answers, message",
    [
        ("26", "CKA_CLASS=-1", "CKA_CLASS needs a number from 0 to 0xffffffffffffffff"),  # abort
        ("20", "1\nCKA_VALUE_LEN=-5", "CKA_VALUE_LEN needs a number from 0"),  # segfault
        ("26", "CKA_KEY_TYPE=0xffffffffffffffffff", "CKA_KEY_TYPE needs a number from 0"),
        ("26", "CKA_PUBLIC_KEY_INFO=hex:00", "CKA_PUBLIC_KEY_INFO can be read"),  # no enum member
        ("26", "CKA_CERTIFICATE_CATEGORY=1", "CKA_CERTIFICATE_CATEGORY can be read"),  # no packer
        ("26", "CKA_START_DATE=0001-01-01", "CKA_START_DATE needs a date YYYY-MM-DD (year 1000-9999)"),
    ],
)
def test_attribute_values_out_of_range_are_one_line(run_ckdemo, shared_home, choice, answers, message):
    """The wrong value ends the choice (no '.' needed) before any template reaches the token."""
    done = run_ckdemo(
        shared_home, "run", "-", input=f"{SLOT1_LOGIN}{choice}\n1\n{answers}\n@expect BAD_INPUT\n14\n0\n"
    )
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout[-2000:]  # the menu went on to 14
    assert f"Invalid input: {message}" in done.stdout
    assert done.stdout.count("Status: Doing great") == 3  # open, login, 14
    assert not (shared_home / "errors.log").exists()


def test_set_attribute_out_of_range_is_one_line(run_ckdemo, shared_home):
    script = (
        f"{SLOT1_LOGIN}20\n1\n1\nCKA_LABEL=qa-range\nCKA_TOKEN=false\n.\n"
        "25\n1\n${LAST_OBJECT}\nCKA_VALUE_LEN=99999999999999999999999\n@expect BAD_INPUT\n"
        "25\n1\n${LAST_OBJECT}\nCKA_LABEL=qa-renamed\n0\n"
    )
    done = run_ckdemo(shared_home, "run", "-", input=script)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Invalid input: CKA_VALUE_LEN needs a number from 0 to 0xffffffffffffffff" in done.stdout
    assert "CKA_LABEL of object" in done.stdout and "set to qa-renamed" in done.stdout
    assert "Internal error" not in done.stdout
    assert not (shared_home / "errors.log").exists()


# ---------------------------------------------------------------- regressions: directives


@pytest.mark.parametrize(
    "line",
    [
        "@sleep nan",
        "@sleep inf",
        "@sleep 1e30",
        "@sleep -1",
        "@sleep 3601",
        "@ha-interval nan",
        "@ha-interval inf",
        "@ha-retry 1e3",
        "@ha-retry 99999999999999999999999",
    ],
)
def test_unusable_numeric_directive_is_one_line_and_exit_2(run_ckdemo, shared_home, line):
    done = run_ckdemo(shared_home, "run", "-", input=f"14\n{line}\n14\n0\n")
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 2
    [message] = done.stderr.splitlines()
    assert message.startswith(f"ckdemo: <stdin>:2: {line.split()[0]} needs a number from ")
    assert done.stdout == ""


def test_sleep_within_bounds_still_works(run_ckdemo, shared_home):
    done = run_ckdemo(shared_home, "run", "-", input="14\n@sleep 0.01\n14\n0\n")
    assert done.returncode == 0, done.stdout
    assert "(sleeping 0.01 s)" in done.stdout


def test_script_bytes_that_are_not_utf8_are_one_line(ckdemo_bin, shared_home):
    import subprocess
    from conftest import clean_env

    done = subprocess.run(
        [str(ckdemo_bin), "--home", str(shared_home), "run", "-"],
        input=b"14\n\xff\xfe\n0\n",
        capture_output=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == ["ckdemo: <stdin>:2: not valid UTF-8 text"]


# ---------------------------------------------------------------- regressions: @file and files


@pytest.fixture
def odd_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.bin"
    with open(big, "wb") as out:  # sparse: over the limit without using the disk
        out.truncate(65 * 1024 * 1024)
    (tmp_path / "dev-null-link").symlink_to("/dev/null")
    return tmp_path


def test_sign_refuses_devices_fifos_big_files_and_nul_in_names(run_ckdemo, home, odd_files):
    sign = "42\n1\n${LAST_PRIVATE_KEY}\n1\n"
    script = (
        SLOT1_LOGIN
        + "45\n1\n1\nqa-rsa\nn\nn\nn\n"
        + "".join(
            f"{sign}{answer}\n@expect BAD_INPUT\n"
            for answer in (
                "@/dev/zero",
                f"@{odd_files}/fifo",
                f"@{odd_files}/big.bin",
                f"@{odd_files}/a\0b",
                "@~nosuchuser/x",
                f"@{odd_files}",
            )
        )
        + f"{sign}signed text\n{odd_files}/dev-null-link\n@expect BAD_INPUT\n"
        + f"{sign}signed text\n{odd_files}/{'A' * 300}\n@expect BAD_INPUT\n0\n"
    )
    done = run_ckdemo(home, "run", "-", input=script)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout[-3000:]
    out = done.stdout
    assert "Cannot read /dev/zero: not a regular file (only regular files are read)." in out
    assert f"Cannot read {odd_files}/fifo: not a regular file" in out
    assert f"Cannot read {odd_files}/big.bin: 68157440 bytes, more than the 64 MiB" in out
    assert f"Cannot read '{odd_files}/a\\x00b': a file name cannot contain a NUL byte." in out
    assert "Cannot read ~nosuchuser/x: no such file." in out
    assert f"Cannot read {odd_files}: a folder" in out
    assert f"Cannot write {odd_files}/dev-null-link: it exists and is not a regular file." in out
    assert os.path.islink(odd_files / "dev-null-link")  # not replaced by a signature file
    assert f"Cannot write {odd_files}/{'A' * 300}: file name too long." in out  # was internal
    assert "Internal error" not in out and not (home / "errors.log").exists()


def test_hash_file_streams_a_file_larger_than_the_whole_file_limit(run_ckdemo, shared_home, odd_files):
    import hashlib

    done = run_ckdemo(
        shared_home,
        "run",
        "-",
        input=f"{SLOT1_LOGIN}44\n1\n2\n{odd_files}/big.bin\n44\n1\n2\n{odd_files}/fifo\n"
        "@expect BAD_INPUT\n0\n",
    )
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout[-2000:]
    expected = hashlib.sha256(b"\0" * (65 * 1024 * 1024)).hexdigest()
    assert expected in done.stdout
    assert f"Cannot read {odd_files}/fifo: not a regular file" in done.stdout


# ---------------------------------------------------------------- regressions: config and home


def _set_ha(home: Path, entries: str) -> None:
    path = home / "Chrystoki.conf"
    text = path.read_text()
    text = "\n".join(
        line
        for line in text.splitlines()
        if "reconnAtt" not in line and "AutoReconnectInterval" not in line and "MemberTimeout" not in line
    )
    if "HAConfiguration = {" not in text:
        text += "\nHAConfiguration = {\n}\n"
    text = text.replace("HAConfiguration = {", "HAConfiguration = {\n" + entries, 1)
    path.write_text(text + "\n")


@pytest.mark.parametrize(
    "entries, message",
    [
        ("   reconnAtt = inf;", "HAConfiguration.reconnAtt = 'inf' is not a whole number"),
        ("   reconnAtt = 2.5;", "HAConfiguration.reconnAtt = '2.5' is not a whole number"),
        ("   reconnAtt = -2;", "HAConfiguration.reconnAtt = '-2' is out of range"),
        ("   AutoReconnectInterval = nan;", "HAConfiguration.AutoReconnectInterval = 'nan' is out of range"),
        ("   AutoReconnectInterval = -5;", "HAConfiguration.AutoReconnectInterval = '-5' is out of range"),
        (
            "   AutoReconnectInterval = 1e30;",
            "HAConfiguration.AutoReconnectInterval = '1e30' is out of range",
        ),
    ],
)
def test_unusable_ha_configuration_is_one_line_and_exit_2(run_ckdemo, home, entries, message):
    _set_ha(home, entries)
    for args, stdin in ((("hagroup", "show"), None), (("run", "-"), "14\n0\n")):
        done = run_ckdemo(home, *args, input=stdin)
        no_traceback(done.stdout, done.stderr)
        assert done.returncode == 2, (args, done.stdout[-500:], done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith(f"ckdemo: {message}"), line


def test_member_timeout_nan_is_one_line_and_exit_2(run_ckdemo, home):
    path = home / "Chrystoki.conf"
    path.write_text(path.read_text().replace("CKDemo = {", "CKDemo = {\n   MemberTimeout = nan;", 1))
    done = run_ckdemo(home, "run", "-", input="14\n0\n")
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "ckdemo: CKDemo.MemberTimeout = 'nan' is out of range (seconds, 0 for no limit, at most 86400)"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("hagroup", "interval", "--seconds", "nan"),
        ("hagroup", "interval", "--seconds", "inf"),
        ("hagroup", "retry", "--count", "99999999999"),
    ],
)
def test_hagroup_refuses_what_the_file_could_not_hold(run_ckdemo, home, args):
    before = (home / "Chrystoki.conf").read_text()
    done = run_ckdemo(home, *args)
    no_traceback(done.stdout, done.stderr)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "out of range" in done.stderr
    assert (home / "Chrystoki.conf").read_text() == before


def test_home_below_a_regular_file_is_one_line_and_exit_2(run_ckdemo, tmp_path):
    (tmp_path / "afile").write_text("not a folder\n")
    home = tmp_path / "afile" / "home"
    for args, stdin in ((("run", "-"), "14\n0\n"), (("init",), None), (("hagroup", "show"), None)):
        done = run_ckdemo(home, *args, input=stdin)
        no_traceback(done.stdout, done.stderr)
        assert done.returncode == 2, args
        [line] = done.stderr.splitlines()
        assert line.endswith(f"state folder {home}: Not a directory"), line
    done = run_ckdemo(None, "run", "-", input="14\n0\n", env={"CKDEMO_HOME": str(home)}, cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
