"""HA event lines in the order things happened: a recovery that ran at the start of a
call is on the screen before that call's output, not after "Signature written"; an event from
another thread never splits a line, nor a prompt waiting for its answer."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from conftest import requires_softhsm

from ckdemo.ha.events import HALog
from ckdemo.menu.context import Context
from ckdemo.menu.loop import MenuLoop
from ckdemo.workspace import Workspace
from support import Screen

RECOVERED = "member {serial} recovered: after 1 attempt(s)"


@requires_softhsm
def test_a_recovery_in_a_sign_call_is_shown_before_the_signature(menu, home, tmp_path):
    signature_file = tmp_path / "signature.bin"
    code, out = menu(
        home,
        f"""\
        @ha-interval 0.2
        51
        ${{HA_SLOT}}
        ${{CKDEMO_USER_PIN}}
        1
        ${{HA_SLOT}}
        y
        45
        ${{LAST_SESSION}}
        1
        event-order-key
        y
        y
        n
        @fail member1
        52
        ${{HA_SLOT}}
        @restore member1
        @sleep 0.3
        42
        ${{LAST_SESSION}}
        ${{LAST_PRIVATE_KEY}}
        1
        signed after the recovery
        {signature_file}
        0
        """,
    )
    assert code == 0, out
    assert signature_file.stat().st_size == 256  # RSA-2048: the sign call did run
    serial = out.split("@fail member1: HSM ", 1)[1].split(" ", 1)[0]
    status, sign = out.split("Enter your choice : 52", 1)[1].split("Enter your choice : 42", 1)
    sign = sign.split("Enter your choice", 1)[0]

    # 52 found member1 dead while asking it: the event, then the rows it explains
    failed = status.index(f"member {serial} failed: C_GetTokenInfo returned CKR_DEVICE_ERROR")
    assert failed < status.index(f"   HSM {serial} - CKR_DEVICE_ERROR")

    # the sign call recovered member1 first: the event, then everything the call printed
    recovered = sign.index(RECOVERED.format(serial=serial))
    assert sign.index("Save the signature to file (empty = no) : ") < recovered
    assert recovered < sign.index("Signature (256 bytes, CKM_SHA256_RSA_PKCS):")
    assert recovered < sign.index(f"Signature written to {signature_file}.")
    assert recovered < sign.index("Status: Doing great, no errors (CKR_OK)")

    # shown where it happened, and only there
    assert out.count(RECOVERED.format(serial=serial)) == 1
    assert out.count(f"member {serial} failed:") == 1


def test_an_event_on_the_menu_thread_lands_between_the_lines_of_the_call():
    log, screen = HALog(), Screen([])
    context = Context(Workspace([]), screen)
    log.follow(context.event)
    context.say("asked the member")
    log.record("1000", "2000", "recovered", "after 1 attempt(s)")
    context.say("Signature written.")
    assert screen.text == (
        "asked the member\n  (HA group 1000 member 2000 recovered: after 1 attempt(s))\nSignature written.\n"
    )
    assert log.unseen() == []  # shown once: not handed out again to whoever polls


def test_an_event_from_another_thread_waits_for_the_answer_to_a_prompt():
    log = HALog()

    class Terminal(Screen):
        """Writes the prompt, then (while it waits) another thread records an event."""

        def ask(self, prompt: str, secret: bool = False) -> str:
            self.text += prompt
            elsewhere = threading.Thread(target=log.record, args=("1000", "2000", "failed"))
            elsewhere.start()
            elsewhere.join()
            self.text += "7\n"  # the person's answer, echoed by the terminal
            return "7"

    screen = Terminal([])
    context = Context(Workspace([]), screen)
    log.follow(context.event)
    assert context.ask_int("Enter a number : ") == 7
    context.say("done")
    assert screen.text == ("Enter a number : 7\n  (HA group 1000 member 2000 failed)\ndone\n")


def test_lines_stay_whole_when_events_come_from_many_threads():
    class SlowScreen(Screen):
        def write(self, text: str) -> None:  # a byte at a time: a torn line would show
            for char in text:
                self.text += char
                time.sleep(0)

    log, screen = HALog(), SlowScreen([])
    context = Context(Workspace([]), screen)
    log.follow(context.event)
    threads = [
        threading.Thread(target=lambda n=n: [log.record("1000", f"m{n}", f"event-{i}") for i in range(20)])
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for i in range(50):
        context.say(f"handler line {i} " + "x" * 40)
    for thread in threads:
        thread.join()
    lines = screen.text.splitlines()
    handler = [line for line in lines if line.startswith("handler line ")]
    events = [line for line in lines if line.startswith("  (HA group 1000 member m")]
    assert len(handler) == 50 and len(events) == 80
    assert len(lines) == 130, [line for line in lines if line not in handler + events]
    assert all(line.endswith("x" * 40) for line in handler)
    assert [line.split(" ")[2] for line in handler] == [str(i) for i in range(50)]


def test_events_recorded_before_the_menu_starts_come_first_and_once():
    log = HALog()
    log.record("1000", "2000", "failed", "C_GetTokenInfo returned CKR_DEVICE_ERROR")
    group = SimpleNamespace(log=log)
    screen = Screen(["0"])
    MenuLoop(Context(Workspace([], groups=[group, group]), screen), prompt="Enter your choice : ").run()
    event = "  (HA group 1000 member 2000 failed: C_GetTokenInfo returned CKR_DEVICE_ERROR)\n"
    assert screen.text.startswith(event)
    assert screen.text.count(event) == 1
    assert screen.text.endswith("(0) Quit demo\nEnter your choice : ")
    log.record("1000", "2000", "recovered")
    assert "recovered" not in screen.text  # the menu has ended: it follows the log no more
    assert [e.event for e in log.unseen()] == ["recovered"]
