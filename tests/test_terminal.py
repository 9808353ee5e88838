"""The real interactive menu in a terminal (tmux), driven like a person: type, read the screen.

Each test starts `ckdemo --home H` in its own tmux server (a private socket), waits for prompts by
polling the screen with a deadline, and kills the server afterwards whatever happened.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import clean_env, requires_softhsm

pytestmark = [
    requires_softhsm,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"),
]

PROMPT = "Enter your choice :"  # tmux trims the trailing space of "Enter your choice : "
TERMINAL_PIN = "Tty-pin-4096"
DEADLINE_S = 20


class Terminal:
    """One tmux pane running the interactive ckdemo."""

    def __init__(self, command: list[str], exit_file: Path) -> None:
        # a private server on a socket of our own: no other tmux user is touched
        self.socket_dir = Path(tempfile.mkdtemp(prefix="ckdemo-tmux-"))
        self.socket = str(self.socket_dir / "socket")
        self.target = "menu"
        self.exit_file = exit_file
        self.answered_at = self.waiting_at = -1  # screen line numbers (scroll-back included)
        # tmux does not always learn a dead pane's exit status, so the shell writes it down
        shell = f"{shlex.join(command)}; echo $? > {shlex.quote(str(exit_file))}"
        # remain-on-exit in the same tmux call, so a quick exit still leaves the pane to inspect
        try:
            self.tmux(
                "new-session",
                "-d",
                "-s",
                self.target,
                "-x",
                "200",
                "-y",
                "50",
                shell,
                ";",
                "set-option",
                "-t",
                self.target,
                "remain-on-exit",
                "on",
                ";",
                "set-option",
                "-t",
                self.target,
                "history-limit",
                "100000",
            )
        except BaseException:
            self.close()
            raise

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            env=clean_env(),
        )
        assert done.returncode == 0, f"tmux {args[0]}: {done.stderr}"
        return done.stdout

    def screen(self) -> str:
        """Everything the pane has shown, scroll-back included."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", self.target)

    def lines(self) -> list[str]:
        lines = [line.rstrip() for line in self.screen().split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def wait_for_prompt(self, prompt: str) -> str:
        """Poll until ckdemo waits at `prompt` on a line below the last answer; return the screen."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            lines = self.lines()
            if len(lines) - 1 > self.answered_at and lines[-1] == prompt:
                self.waiting_at = len(lines) - 1
                return "\n".join(lines)
            if time.monotonic() > deadline:
                pytest.fail(f"waited {DEADLINE_S} s for {prompt!r}; the screen:\n" + "\n".join(lines))
            time.sleep(0.02)

    def answer(self, prompt: str, text: str) -> None:
        """Like a person: wait until `prompt` is asked, then type `text` and Enter."""
        self.wait_for_prompt(prompt)
        self.answered_at = self.waiting_at
        self.tmux("send-keys", "-t", self.target, "-l", text)  # -l: literally, no key names
        self.tmux("send-keys", "-t", self.target, "Enter")

    def wait_for_exit(self) -> str:
        """ckdemo's exit code, once it has ended."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if self.exit_file.exists() and self.exit_file.read_text().endswith("\n"):
                return self.exit_file.read_text().strip()
            time.sleep(0.02)
        pytest.fail(f"ckdemo still running after {DEADLINE_S} s; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=DEADLINE_S)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def terminal_home(provision, tmp_path_factory) -> Path:
    return provision(tmp_path_factory.mktemp("terminal") / "home", "--user-pin", TERMINAL_PIN)


@pytest.fixture
def terminal(ckdemo_bin, terminal_home, tmp_path):
    started = time.monotonic()
    pane = Terminal([str(ckdemo_bin), "--home", str(terminal_home)], tmp_path / "exit-code")
    try:
        first = pane.wait_for_prompt(PROMPT)
        print(f"\nfirst prompt on the terminal after {time.monotonic() - started:.3f} s (via tmux)")
        assert "TOKEN FUNCTIONS" in first
        yield pane
    finally:
        pane.close()  # kills the private tmux server, its session and ckdemo with it


def since(screen: str, typed: str) -> str:
    """The screen after the last line that shows `typed` (a prompt and the answer echoed)."""
    return screen.rsplit(typed, 1)[1]


def open_session(terminal, slot: str) -> str:
    terminal.answer(PROMPT, "1")
    terminal.answer("Select a slot:", slot)
    terminal.answer("Read/write session? [Y/n] :", "y")
    return terminal.wait_for_prompt(PROMPT)


def login_user(terminal, handle: str, pin: str) -> str:
    terminal.answer(PROMPT, "3")
    terminal.answer("Enter your session handle :", handle)
    terminal.answer("Login as Security Officer [0], Crypto User [1] :", "1")
    terminal.answer("Enter PIN :", pin)
    return terminal.wait_for_prompt(PROMPT)


def test_slot_list_on_the_screen(terminal):
    terminal.answer(PROMPT, "14")
    screen = since(terminal.wait_for_prompt(PROMPT), f"{PROMPT} 14")
    rows = [line.split() for line in screen.splitlines() if line.startswith("slot#")]
    assert [row[-1] for row in rows[:3]] == ["member1", "member2", "member3"]
    assert f"{len(rows)} slots." in screen
    assert "Status: Doing great, no errors (CKR_OK)" in screen
    # the interactive menu shows the whole menu again before the next choice
    assert "TOKEN FUNCTIONS" in since(screen, "Status: Doing great")


def test_login_pin_is_never_on_the_screen(terminal):
    screen = open_session(terminal, "1")
    assert "Session handle: 1 (slot#1, R/W)" in screen
    screen = login_user(terminal, "1", TERMINAL_PIN)
    assert "Logged in as Crypto User on session 1." in screen
    terminal.answer(PROMPT, "13")
    terminal.answer("Enter your session handle :", "1")
    screen = terminal.wait_for_prompt(PROMPT)
    assert "CKS_RW_USER_FUNCTIONS" in since(screen, f"{PROMPT} 13")
    assert TERMINAL_PIN not in screen
    assert TERMINAL_PIN[:4] not in screen  # not even partly echoed
    assert re.search(r"^Enter PIN :$", screen, re.MULTILINE)  # and no mask either: getpass


def test_a_wrong_pin_on_the_terminal(terminal):
    open_session(terminal, "2")
    screen = login_user(terminal, "1", "not-my-pin")
    assert "Status: C_Login returned error. (CKR_PIN_INCORRECT 0x000000A0)" in screen
    assert "not-my-pin" not in screen


def test_a_letter_at_the_main_prompt_and_the_menu_goes_on(terminal):
    terminal.answer(PROMPT, "x")
    assert "Invalid input (x)." in terminal.wait_for_prompt(PROMPT)
    terminal.answer(PROMPT, "12")
    terminal.answer("Select a slot:", "x")
    assert "Invalid input (x): a number is needed." in terminal.wait_for_prompt(PROMPT)
    terminal.answer(PROMPT, "12")
    terminal.answer("Select a slot:", "3")
    screen = terminal.wait_for_prompt(PROMPT)
    assert re.search(r"^\s+Label\s+: member3$", since(screen, "Select a slot: 3"), re.MULTILINE)
    assert "Traceback" not in screen


def test_zero_quits(terminal):
    terminal.answer(PROMPT, "0")
    assert terminal.wait_for_exit() == "0"
    assert "Traceback" not in terminal.screen()


def test_end_of_input_at_the_main_prompt_quits(terminal):
    terminal.wait_for_prompt(PROMPT)
    terminal.tmux("send-keys", "-t", terminal.target, "C-d")
    assert terminal.wait_for_exit() == "0"
    assert "Traceback" not in terminal.screen()


def test_a_library_that_cannot_load_says_so_in_one_line(ckdemo_bin, terminal_home, tmp_path):
    pane = Terminal(
        [str(ckdemo_bin), "--home", str(terminal_home), "--module", "/nonexistent.so"], tmp_path / "exit-code"
    )
    try:
        assert pane.wait_for_exit() == "2"
        lines = pane.lines()
        assert lines[0].startswith("ckdemo: cannot use PKCS#11 library /nonexistent.so"), lines
        assert not any(line.strip() for line in lines[1:-1])  # nothing but tmux's own "Pane is dead"
        assert "Traceback" not in "\n".join(lines)
    finally:
        pane.close()


def test_ctrl_c_abandons_the_choice_and_keeps_the_session(terminal):
    """A person who changes their mind mid-choice presses Ctrl-C: the choice goes, the open
    session stays, and Ctrl-C at the main prompt leaves ckdemo cleanly."""
    open_session(terminal, "1")
    terminal.answer(PROMPT, "3")
    terminal.wait_for_prompt("Enter your session handle :")
    terminal.tmux("send-keys", "-t", terminal.target, "C-c")
    screen = terminal.wait_for_prompt(PROMPT)
    assert "Choice abandoned (interrupted)." in since(screen, f"{PROMPT} 3")
    assert "Traceback" not in screen
    terminal.answer(PROMPT, "13")
    terminal.answer("Enter your session handle :", "1")
    after = since(terminal.wait_for_prompt(PROMPT), f"{PROMPT} 13")
    assert "CKS_RW_PUBLIC_SESSION" in after  # the session opened before Ctrl-C is still there
    terminal.tmux("send-keys", "-t", terminal.target, "C-c")
    assert terminal.wait_for_exit() == "0"


def test_hagroup_recover_beside_a_running_menu_says_the_menu_s_members_are_its_own(
    terminal, terminal_home, run_ckdemo
):
    """A member the menu failed (120) is down in the menu only: `hagroup recover` in another
    process says a menu runs and whose members those are, instead of only "every member is in
    service"; with no menu running it does not."""
    terminal.answer(PROMPT, "120")
    terminal.answer("Select a slot:", "5")
    terminal.answer("Select a member:", "1")
    terminal.wait_for_prompt(PROMPT)
    beside = run_ckdemo(terminal_home, "hagroup", "recover")
    assert beside.returncode == 0, beside.stderr
    assert "A ckdemo menu runs on this home: the members it shows down are its own" in beside.stdout
    terminal.answer(PROMPT, "0")
    assert terminal.wait_for_exit() == "0"
    alone = run_ckdemo(terminal_home, "hagroup", "recover")
    assert alone.returncode == 0 and "A ckdemo menu runs" not in alone.stdout, alone.stdout
