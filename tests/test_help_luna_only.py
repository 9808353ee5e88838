"""99 (help) marks the Luna-only choices in the menu itself: '(16)*InitToken(ind)' where
the loaded module lacks the Luna extension, '+' where it exports it; every other choice as CKDemo
shows it, and the menu at start stays CKDemo's own."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import requires_softhsm

from ckdemo.menu import render
from ckdemo.menu.context import Context
from ckdemo.menu.loop import MenuLoop
from ckdemo.menu.table import BY_NUMBER, MENU
from ckdemo.workspace import Workspace
from support import Screen

CELL = re.compile(r"\(\s*(\d+)\)(.)")
LUNA_ONLY = sorted(e.number for e in MENU if e.extension)


def marks(menu: str) -> dict[int, str]:
    """{choice: the character between its number and its title} in a menu screen."""
    found = {}
    for line in menu.splitlines():
        for number, mark in CELL.findall(line):
            found[int(number)] = mark
    return found


def help_screen(out: str) -> str:
    return out.split("Enter your choice : 99\n", 1)[1].split("Enter your choice", 1)[0]


@requires_softhsm
def test_on_softhsm_the_luna_only_choices_are_marked_and_answer_not_supported(menu, shared_home):
    # every marked choice, chosen: each must end with CKR_FUNCTION_NOT_SUPPORTED (or the replay fails)
    refused = "".join(f"{n}\n@expect CKR_FUNCTION_NOT_SUPPORTED\n" for n in LUNA_ONLY)
    code, out = menu(shared_home, "99\n" + refused + "14\n0\n")
    assert code == 0, out
    start = out.split("Enter your choice : ", 1)[0]
    assert set(marks(start).values()) == {" "}  # CKDemo's menu at start: nothing marked
    shown = marks(help_screen(out))
    assert set(shown) == set(BY_NUMBER) | {0}  # every choice is on 99's screen, and (0) Quit demo
    assert {n for n, mark in shown.items() if mark == "*"} == set(LUNA_ONLY)
    assert all(shown[n] == " " for n in set(shown) - set(LUNA_ONLY))
    assert {16, 19, 70, 80, 101, 110} <= set(LUNA_ONLY)
    assert not {1, 42, 52, 90, 94, 98, 120} & set(LUNA_ONLY)
    assert "(16)*InitToken(ind)(17)*InitPin (ind) (18)*Login (ind)\n" in out  # columns kept
    assert "(nn)* marks a Luna-only choice the loaded module lacks:\n" in help_screen(out)
    assert "+" not in shown.values()  # SoftHSM exports no CA_ function
    # an unmarked choice works on the same module
    slot_list = out.split("Enter your choice : 14\n", 1)[1]
    assert (
        slot_list.split("Enter your choice", 1)[0]
        .rstrip()
        .endswith("Status: Doing great, no errors (CKR_OK)")
    )


class LunaLikeSlot:
    """A slot whose library exports some Luna extensions (found by symbol, never called)."""

    def __init__(self, exported: set[str]) -> None:
        self.exported = exported

    def exports(self, symbol: str) -> list[str]:
        return ["/usr/safenet/lunaclient/lib/libCryptoki2_64.so"] if symbol in self.exported else []


class EchoScreen(Screen):
    def ask(self, prompt: str, secret: bool = False) -> str:
        answer = super().ask(prompt, secret)
        self.text += answer + "\n"
        return answer

    ask_choice = ask


def test_a_luna_extension_the_module_exports_is_marked_apart():
    screen = EchoScreen(["99", "0"])
    workspace = Workspace([LunaLikeSlot({"CA_SetDomain", "CA_CloneMofN"})])
    MenuLoop(Context(workspace, screen), prompt="Enter your choice : ").run()
    shown = marks(help_screen(screen.text))
    assert shown[70] == shown[19] == "+"
    assert {n for n, mark in shown.items() if mark == "*"} == set(LUNA_ONLY) - {19, 70}
    assert "(nn)+ one it exports (ckdemo does not call it yet)" in screen.text
    assert "Luna-only, exported by the loaded module: 19, 70\n" in screen.text


def test_the_scripts_page_describes_99_as_the_menu_prints_it():
    """docs/SCRIPTS.md's paragraph on 99 quotes a marked row and the legend: both are on the 99
    screen of a module without Luna extensions, and the paragraph names both marks."""
    readme = (Path(__file__).parent.parent / "docs" / "SCRIPTS.md").read_text().replace("\n", " ")
    paragraph = readme[readme.index("99 (help) prints it again") :].split("`).", 1)[0]
    row = re.search(r"On SoftHSM2: `([^`]+)`", paragraph).group(1)
    legend = paragraph.rsplit("(`", 1)[1].split(", ...", 1)[0]
    screen = EchoScreen(["99", "0"])
    MenuLoop(Context(Workspace([LunaLikeSlot(set())]), screen), prompt="Enter your choice : ").run()
    shown = help_screen(screen.text)
    assert row + "\n" in shown and legend in shown.replace("\n", " ")
    assert f"`{render.LUNA_ONLY_MISSING}` where the loaded module lacks" in paragraph
    assert f"`{render.LUNA_ONLY_EXPORTED}` where the module exports it" in paragraph
