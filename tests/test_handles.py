"""Session and object handles are unique across the process (PKCS#11 makes them unique per
application): two HA groups and a physical slot, each with a session open, never hand out the
same number, so the menu never has to ask "Handle N is open on slots [...]; which slot#" and a
script's answers never shift.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from conftest import requires_softhsm
from test_ha_demo import token_serials

from ckdemo.config.chrystoki import ChrystokiConf
from ckdemo.ha import handles

pytestmark = requires_softhsm

PHYSICAL, GROUP_A, GROUP_B = 1, 5, 6  # slot#: member1, then the two HA Virtual Card Slots


def two_groups(home: Path) -> None:
    """Group ha-a over member1 and member2, group ha-b over member3 (Luna's VirtualToken00/01)."""
    serials = token_serials(home)
    path = home / "Chrystoki.conf"
    conf = ChrystokiConf.load(path)
    conf.set("VirtualToken", "VirtualToken00Label", "ha-a")
    conf.set("VirtualToken", "VirtualToken00SN", "1" + serials["member1"])
    conf.set("VirtualToken", "VirtualToken00Members", f"{serials['member1']},{serials['member2']}")
    conf.set("VirtualToken", "VirtualToken01Label", "ha-b")
    conf.set("VirtualToken", "VirtualToken01SN", "1" + serials["member3"])
    conf.set("VirtualToken", "VirtualToken01Members", serials["member3"])
    conf.save(path)


def opened(transcript: str) -> dict[int, int]:
    """slot# -> session handle, from every 'Session handle: H (slot#N, ...)' line."""
    return {
        int(slot): int(handle)
        for handle, slot in re.findall(r"^Session handle: (\d+) \(slot#(\d+),", transcript, re.MULTILINE)
    }


def known_key_handles(transcript: str) -> list[list[int]]:
    """The handles each run of 65 Create known keys printed, one list per run."""
    runs = re.split(r"^Enter your choice : 65$", transcript, flags=re.MULTILINE)[1:]
    return [
        [
            int(h)
            for h in re.findall(
                r"^ckdemo-known-\S+ .*?  (\d+) +\w[\w ]*$", run.split("Enter your choice")[0], re.MULTILINE
            )
        ]
        for run in runs
    ]


def test_two_groups_and_a_physical_slot_never_share_a_handle(home, run_ckdemo):
    two_groups(home)
    listing = run_ckdemo(home, "run", "-", input="14\n0\n")
    assert listing.returncode == 0, listing.stdout
    slots = dict(re.findall(r"^slot#(\d+)  +(.+?)  +yes", listing.stdout, re.MULTILINE))
    assert slots[str(GROUP_A)].startswith("HA Virtual Card Slot")
    assert slots[str(GROUP_B)].startswith("HA Virtual Card Slot")

    # a session on each slot; the handles are the ones the process must keep apart. In a fresh
    # process SoftHSM numbers its first session 1 and the virtual ones come from one counter.
    first_virtual = handles.VIRTUAL_HANDLE_BASE + 1
    a, b = first_virtual, first_virtual + 1
    script = "\n".join(
        [
            "1",
            str(PHYSICAL),
            "y",
            "3",
            "1",
            "1",
            "${CKDEMO_USER_PIN}",
            "51",
            str(GROUP_A),
            "${CKDEMO_USER_PIN}",
            "51",
            str(GROUP_B),
            "${CKDEMO_USER_PIN}",
            "1",
            str(GROUP_A),
            "y",
            "1",
            str(GROUP_B),
            "y",
            # each session named by its handle alone: no "which slot#" answer anywhere
            "13",
            "1",
            "13",
            str(a),
            "13",
            str(b),
            "65",
            "1",
            "n",
            "65",
            str(a),
            "n",
            "65",
            str(b),
            "n",
            "42",
            str(b),
            "${LAST_KNOWN_RSA2048_PRIVATE}",
            "1",
            "signed on group b",
            '""',
            "62",
            str(a),
            "8",
            "0",
            "",
        ]
    )
    done = run_ckdemo(home, "run", "-", input=script)
    assert done.returncode == 0, done.stdout
    assert "which slot#" not in done.stdout
    assert opened(done.stdout) == {PHYSICAL: 1, GROUP_A: a, GROUP_B: b}
    infos = re.findall(r"^\s*Slot\s*:\s*slot#(\d+)", done.stdout, re.MULTILINE)
    assert infos == [str(PHYSICAL), str(GROUP_A), str(GROUP_B)]  # each handle found its own session

    on_physical, on_a, on_b = known_key_handles(done.stdout)
    assert len(on_a) == len(on_b) == len(on_physical) == 6
    assert not set(on_a) & set(on_b)  # the two groups' virtual objects
    assert not (set(on_a) | set(on_b)) & (set(on_physical) | {1})  # and the physical ones
    assert not (set(on_a) | set(on_b)) & {a, b}  # objects and sessions share one counter
    assert min(on_a + on_b) > handles.VIRTUAL_HANDLE_BASE
    assert done.stdout.count("Status: Doing great, no errors (CKR_OK)") >= 14


def test_last_session_names_the_session_of_its_own_group(home, run_ckdemo):
    """Scripts that name handles ${LAST_SESSION} / ${LAST_OBJECT} work unchanged."""
    two_groups(home)
    script = "\n".join(
        [
            "51",
            str(GROUP_A),
            "${CKDEMO_USER_PIN}",
            "51",
            str(GROUP_B),
            "${CKDEMO_USER_PIN}",
            "1",
            str(GROUP_A),
            "y",
            "1",
            str(GROUP_B),
            "y",
            "65",
            "${LAST_SESSION}",
            "n",
            "42",
            "${LAST_SESSION}",
            "${LAST_KNOWN_RSA2048_PRIVATE}",
            "1",
            "named by variables",
            '""',
            "24",
            "${LAST_SESSION}",
            "${LAST_KNOWN_RSA2048_PRIVATE}",
            "CKA_LABEL",
            "0",
            "",
        ]
    )
    done = run_ckdemo(home, "run", "-", input=script)
    assert done.returncode == 0, done.stdout
    assert "which slot#" not in done.stdout


def test_allocate_is_unique_across_threads():
    got: list[list[int]] = [[] for _ in range(4)]

    def draw(into: list[int]) -> None:
        into.extend(handles.allocate() for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [h for into in got for h in into]
    assert len(set(everything)) == len(everything) == 8000
    assert min(everything) > handles.VIRTUAL_HANDLE_BASE
