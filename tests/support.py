"""What several test modules share and pytest does not inject: transcript readers, the golden-file
comparison, a screen and a clock for in-process menu and HA tests, and a workspace that loads its
own copy of SoftHSM2. Fixtures live in conftest.py; test modules `from support import ...`.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from conftest import SOFTHSM_LIB

from ckdemo.ha.marks import MARK_LABEL
from ckdemo.ha.replication import ALL_KINDS

DOMAIN_KEYS = len(ALL_KINDS)  # HA domain keys per member: one per kind of key carried, two families
DOMAIN_KEY_LABEL = "ckdemo HA domain key"  # every one's label starts so (`ckdemo init` makes them)
# the HA group's own objects on every member: its domain keys and its journal mark (ha/marks.py)
GROUP_LABELS = (DOMAIN_KEY_LABEL, MARK_LABEL)

REPO = Path(__file__).resolve().parent.parent
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("CKDEMO_UPDATE_GOLDEN") == "1"

OK = "Status: Doing great, no errors (CKR_OK)"


# ---------------------------------------------------------------- reading a transcript


def statuses(transcript: str) -> list[str]:
    return re.findall(r"^Status: .*$", transcript, re.MULTILINE)


def summary(transcript: str) -> str:
    """The last line: a replay's `Replay: N steps, ...`."""
    return transcript.rstrip().splitlines()[-1]


# ---------------------------------------------------------------- golden transcripts

_TABLE_RULE = re.compile(r"^-+(  -+)*$")


def unalign_id_tables(lines: list[str]) -> list[str]:
    """A table's column widths follow its longest cell: where a cell held a slot id (already
    normalised to <ID>), keep the cells and their order but not the padding. Other tables keep their
    exact layout (SoftHSM serials are always 16 hex digits, so they do not move columns)."""
    out = list(lines)
    for i, line in enumerate(lines):
        if not (i and _TABLE_RULE.match(line)):
            continue
        end = next((j for j in range(i + 1, len(lines)) if "  " not in lines[j]), len(lines))
        if not any("<ID>" in row for row in lines[i + 1 : end]):  # "5 slots." ends the table
            continue
        for j in [i - 1, *range(i + 1, end)]:
            out[j] = re.sub(r" {2,}", "  ", lines[j]).rstrip()
        out[i] = "  ".join("--" for _ in line.split())
    return out


def assert_matches_golden(actual: str, golden: Path, what: str) -> None:
    """The normalised transcript of `what` (e.g. "scripts/token-tour") equals the golden file, or
    the test fails with a diff. CKDEMO_UPDATE_GOLDEN=1 rewrites the golden file instead: review the
    change with `git diff tests/golden`."""
    if UPDATE_GOLDEN:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(actual)
        return
    assert golden.exists(), f"{golden} missing: run with CKDEMO_UPDATE_GOLDEN=1"
    expected = golden.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), actual.splitlines(True), f"golden/{golden.name}", "this run"
            )
        )
        pytest.fail(
            f"transcript of {what} differs from its golden file "
            f"(CKDEMO_UPDATE_GOLDEN=1 to accept an intended change):\n{diff}"
        )


# ---------------------------------------------------------------- in-process stand-ins


class Screen:
    """Answers from a list, output collected: the menu's IO without a terminal."""

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.text = list(answers), ""

    def write(self, text: str) -> None:
        self.text += text

    def ask(self, prompt: str, secret: bool = False) -> str:
        self.text += prompt
        return self.answers.pop(0)

    ask_choice = ask


class FakeClock:
    """An injected clock that moves only when a test says so: recovery timing without sleeps."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ---------------------------------------------------------------- SoftHSM2 in this process


def private_library(folder: Path) -> Path:
    """A copy of libsofthsm2.so under a name of its own: python-pkcs11 keeps one loaded library per
    path, so only a new path initialises SoftHSM2 again (with the SOFTHSM2_CONF of that moment)."""
    library = folder / f"libsofthsm2-{uuid.uuid4().hex[:12]}.so"
    shutil.copy(SOFTHSM_LIB, library)
    return library


def private_workspace(tmp: Path, members: int):
    """A home provisioned at tmp/home with `members` member tokens, and its workspace built in this
    process on a private copy of SoftHSM2 pointed at that home: (home, workspace, library)."""
    # imported here: the CLI-level modules that use this file never load ckdemo in process
    from ckdemo.config.chrystoki import ChrystokiConf
    from ckdemo.harness import build_workspace
    from ckdemo.provision import CKDEMO_SECTION, CONFIG_NAME
    from ckdemo.provision import provision as provision_home
    from ckdemo.settings import load_settings

    home = tmp / "home"
    provision_home(home, members=members)
    library = private_library(tmp)
    conf = ChrystokiConf.load(home / CONFIG_NAME)
    conf.set(CKDEMO_SECTION, "Library00", str(library))
    conf.save(home / CONFIG_NAME)
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(home / "softhsm2.conf")
    try:
        workspace = build_workspace(load_settings(home))  # C_Initialize of the copy reads it now
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved
    return home, workspace, library
