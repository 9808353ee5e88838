"""Secrets: PINs never in a child's argv or environment, ${...} values masked
in every line ckdemo writes, and re-initialising an HA member only when confirmed.

Real SoftHSM2 tokens and real processes; pkcs11-tool reads token state back independently.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from textwrap import dedent

import pytest

from conftest import SO_PIN, TIMEOUT_S, assert_pins_hidden, clean_env, no_traceback, requires_softhsm
from support import private_workspace

pytestmark = requires_softhsm

USER, SO = "Sampled-user-7391", "Sampled-so-8264"


# ---------------------------------------------------------------- /proc sampling


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class ProcSampler:
    """Reads /proc/<pid>/cmdline and environ of every descendant of `root` until stopped.

    Between fork and exec a child is still a copy of its parent: /proc shows the parent's command
    line and the parent's environment (which has the PINs: the test gives them to ckdemo). Such a
    copy of the root is not a child command line or environment: a reading whose command line is
    still the root's is left out (counted in `copies`). The command line is read first: once it is
    not the root's, the process has exec'd, and the environment read after it is the child's own
    (an exec between the two readings only leaves that one reading out; the next one has it)."""

    def __init__(self, root: int) -> None:
        self.root, self.seen, self.texts, self.copies = root, set(), [], 0
        self.root_cmdline = Path(f"/proc/{root}/cmdline").read_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in _descendants(self.root):
                read = {}
                for part in ("cmdline", "environ"):
                    try:
                        with open(f"/proc/{pid}/{part}", "rb") as f:
                            read[part] = f.read()
                    except OSError:
                        pass
                if read.get("cmdline") == self.root_cmdline:
                    self.copies += 1
                    continue
                for part, data in read.items():
                    if data:
                        self.seen.add(pid)
                        self.texts.append((pid, part, data.replace(b"\0", b" ").decode(errors="replace")))
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_init_puts_no_pin_in_any_child_command_line_or_environment(ckdemo_bin, tmp_path):
    home = tmp_path / "home"
    env = clean_env(CKDEMO_USER_PIN=USER, CKDEMO_SO_PIN=SO)  # ckdemo's own environment has them
    process = subprocess.Popen(
        [str(ckdemo_bin), "--home", str(home), "init", "--store-pins"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = ProcSampler(process.pid)
    out, err = process.communicate(timeout=TIMEOUT_S)
    sampler.stop()
    assert process.returncode == 0, err
    children = {pid for pid, _, _ in sampler.texts}
    assert children, "no child process of ckdemo init was seen: the sampler proves nothing"
    assert any("ckdemo.tokeninit" in text for _, part, text in sampler.texts if part == "cmdline")
    assert any("SOFTHSM2_CONF=" in text for _, part, text in sampler.texts if part == "environ")
    for pid, part, text in sampler.texts:
        assert USER not in text and SO not in text, f"PIN in /proc/{pid}/{part}: {text[:200]}"
        assert "CKDEMO_USER_PIN" not in text and "CKDEMO_SO_PIN" not in text, (pid, part)
    # and the tokens really have those PINs (pkcs11-tool, an independent client)
    login = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            "member2",
            "--login",
            "--pin",
            USER,
            "--list-objects",
        ],
        env=clean_env(SOFTHSM2_CONF=str(home / "softhsm2.conf")),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert login.returncode == 0, login.stderr


def test_member_servers_get_no_pin_variables(run_ckdemo, provision, ckdemo_bin, tmp_path):
    home = provision(tmp_path / "home", "--remote")
    env = clean_env(CKDEMO_USER_PIN="1234", CKDEMO_SO_PIN=SO_PIN, CKDEMO_EXTRA_PIN="x-9931")
    # a run that starts the servers, then waits while the test reads their environment
    process = subprocess.Popen(
        [str(ckdemo_bin), "--home", str(home), "run", "-"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdin.write("14\n@sleep 3\n14\n0\n")
    process.stdin.close()
    environs: dict[int, str] = {}
    deadline = time.monotonic() + 15
    while len(environs) < 3 and time.monotonic() < deadline:
        for pid_file in (home / "run").glob("member*.pid") if (home / "run").exists() else []:
            try:
                pid = int(pid_file.read_text().split()[0])
                environs[pid] = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            except (OSError, ValueError, IndexError):
                pass
        time.sleep(0.02)
    out = process.stdout.read()
    process.wait(TIMEOUT_S)
    assert process.returncode == 0, out + process.stderr.read()
    assert len(environs) == 3, environs.keys()
    for pid, environ in environs.items():
        assert "SOFTHSM2_CONF=" in environ  # we did read a real environment
        assert "CKDEMO_USER_PIN" not in environ and "CKDEMO_SO_PIN" not in environ, pid
        assert "CKDEMO_EXTRA_PIN" not in environ and "x-9931" not in environ, pid


# ---------------------------------------------------------------- masking


def _run(run_ckdemo, home, script: str, tmp_path: Path, **env: str):
    junit, transcript = tmp_path / "report.xml", tmp_path / "transcript.txt"
    done = run_ckdemo(
        home,
        "run",
        "--junit",
        str(junit),
        "--transcript",
        str(transcript),
        "-",
        input=dedent(script),
        env=env,
    )
    no_traceback(done.stdout, done.stderr)
    return done, junit.read_text(), transcript.read_text()


@pytest.mark.parametrize("value", ["Qa-so-8841", "88412"])
def test_a_secret_read_as_a_menu_choice_is_masked_everywhere(run_ckdemo, shared_home, tmp_path, value):
    """A script that fell out of step: the PIN line arrives where a choice is due."""
    done, junit, transcript = _run(
        run_ckdemo,
        shared_home,
        """\
        ${QA_SO_PIN}
        0
        """,
        tmp_path,
        QA_SO_PIN=value,
    )
    assert done.returncode == 1
    for text in (done.stdout, done.stderr + "****", junit, transcript):
        assert_pins_hidden(text, value)
    assert "Invalid input (****)." in done.stdout
    failed = re.search(r"^FAILED line 1: .*$", done.stdout, re.MULTILINE).group(0)
    assert "****" in failed and value not in failed
    case = ET.fromstring(junit).find("testcase")
    assert case.get("name") == "input **** #1"
    assert value not in case.find("failure").get("message")
    assert value not in (case.find("failure").text or "")


def test_short_and_composite_secrets_are_masked_where_echoed(run_ckdemo, shared_home, tmp_path):
    done, junit, transcript = _run(
        run_ckdemo,
        shared_home,
        """\
        1
        ${QA_LONG}x
        @expect BAD_INPUT
        ${QA_SHORT}
        0
        """,
        tmp_path,
        QA_SHORT="7x",
        QA_LONG="Qa-pin-5521",
    )
    assert done.returncode == 1
    assert "Invalid input (****x): a number is needed." in done.stdout, done.stdout
    assert "Invalid input (****)." in done.stdout
    assert "FAILED line 4: input '****' ended with BAD_INPUT" in done.stdout, done.stdout
    for text in (done.stdout, junit, transcript):
        assert "Qa-pin-5521" not in text
        assert "(7x)" not in text and "'7x'" not in text
    names = [c.get("name") for c in ET.fromstring(junit).iter("testcase")]
    assert names[1] == "input **** #1", names


def test_a_wrong_answer_holding_a_pin_inside_a_choice_is_masked(run_ckdemo, shared_home, tmp_path):
    """A secret typed where a number is due (Select a slot): the InputError echoes it."""
    done, junit, transcript = _run(
        run_ckdemo,
        shared_home,
        """\
        1
        ${QA_PIN}
        @expect BAD_INPUT
        0
        """,
        tmp_path,
        QA_PIN="Qa-pin-3310",
    )
    assert done.returncode == 0, done.stdout
    assert "Invalid input (****): a number is needed." in done.stdout
    for text in (done.stdout, transcript):
        assert_pins_hidden(text, "Qa-pin-3310")
    assert "Qa-pin-3310" not in junit


# ---------------------------------------------------------------- 6 Init Token on an HA member


def _label_of(home: Path, serial_index: int, independent) -> list[str]:
    slots = independent(home, "--list-token-slots")
    return sorted(re.findall(r"token label\s+: (\S+)", slots.stdout))


def test_reinit_of_an_ha_member_is_refused_in_a_script_without_the_directive(menu, home, independent):
    code, out = menu(
        home,
        f"""\
        6
        2
        {SO_PIN}
        member2-again
        @expect BAD_INPUT
        # the script stays in step: the next choice is read as a choice
        14
        @confirm-destructive
        6
        3
        {SO_PIN}
        member3-again
        # the directive covers one choice only
        6
        1
        {SO_PIN}
        member1-again
        @expect BAD_INPUT
        0
        """,
    )
    assert code == 0, out
    assert (
        "Token member2 is a member of HA group ckdemo-ha: all its keys will be lost. "
        "Re-initialise? n (no @confirm-destructive before this choice)"
    ) in out
    assert "Token member2 not re-initialised." in out
    assert (
        "Token member3 is a member of HA group ckdemo-ha: all its keys will be lost. "
        "Re-initialise? y (@confirm-destructive)"
    ) in out
    assert "Token in slot#3 initialised with label 'member3-again'." in out
    assert "Token member1 not re-initialised." in out
    assert _label_of(home, 0, independent) == ["member1", "member2", "member3-again"]


def test_reinit_of_an_ha_member_asks_a_person(tmp_path):
    from ckdemo.menu.context import Context
    from ckdemo.menu.io import TerminalIO
    from ckdemo.menu.loop import MenuLoop

    home, workspace, _ = private_workspace(tmp_path, 2)
    answers = f"6\n1\n{SO_PIN}\nrenamed-1\nn\n6\n2\n{SO_PIN}\nrenamed-2\ny\n14\n0\n"
    screen = io.StringIO()
    MenuLoop(
        Context(workspace, TerminalIO(io.StringIO(answers), screen)), error_log=str(tmp_path / "errors.log")
    ).run()
    text = screen.getvalue()
    assert (
        "Token member1 is a member of HA group ckdemo-ha: all its keys will be lost. Re-initialise? [y/N] : "
    ) in text
    assert "Token member1 not re-initialised." in text
    assert "Token in slot#2 initialised with label 'renamed-2'." in text
    labels = [slot.token_info().label for slot in workspace.slots[:3]]
    assert labels[:2] == ["member1", "renamed-2"], labels
