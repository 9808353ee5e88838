"""A key is on every member or on none, even after a crash.

Real processes only: `ckdemo run` generating keys on the HA slot is killed with SIGKILL at random
points, a second ckdemo process synchronises beside a generator, and pkcs11-tool straight on each
member token (outside ckdemo) reads what every member holds.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import MEMBERS, SO_PIN, TIMEOUT_S, USER_PIN, clean_env, requires_softhsm

pytestmark = requires_softhsm

HA_SLOT = 5  # three members + SoftHSM's free slot
SEED = 8  # the trials' kill times are random but repeatable
TRIALS = 4


def member_objects(independent, home: Path, member: str) -> Counter:
    """(class line, label, id) -> how many of them the member holds, by pkcs11-tool, logged in."""
    listed = independent(home, "--token-label", member, "--login", "--pin", USER_PIN, "--list-objects")
    assert listed.returncode == 0, listed.stderr + token_files(home)
    found: Counter = Counter()
    current: dict[str, str] | None = None
    for line in listed.stdout.splitlines() + ["END"]:
        if not line.startswith(" "):
            if current is not None and not current["label"].startswith("ckdemo HA domain key"):
                found[(current["type"], current["label"], current["id"])] += 1
            current = (
                {"type": line.split(";")[0].strip(), "label": "", "id": ""} if "Object" in line else None
            )
        elif current is not None:
            name, _, value = line.strip().partition(":")
            if name.strip() in ("label", "ID"):
                current["label" if name.strip() == "label" else "id"] = value.strip()
    return found


def token_files(home: Path) -> str:
    """The token folders' files and sizes (when a member token cannot be read after a SIGKILL)."""
    return "".join(
        f"\n{path.relative_to(home)} {path.stat().st_size} bytes"
        for path in sorted((home / "tokens").glob("*/*"))
        if path.is_file()
    )


def holdings(independent, home: Path) -> dict[str, Counter]:
    return {m: member_objects(independent, home, m) for m in MEMBERS}


def assert_consistent(held: dict[str, Counter]) -> None:
    first = held[MEMBERS[0]]
    for member, objects in held.items():
        duplicated = {k: n for k, n in objects.items() if n > 1}
        assert not duplicated, f"{member} holds duplicates: {duplicated}"
        assert objects == first, f"{member} differs from {MEMBERS[0]}: {set(objects) ^ set(first)}"


def generator_script(count: int, prefix: str) -> str:
    lines = ["51", str(HA_SLOT), "${CKDEMO_USER_PIN}", "1", str(HA_SLOT), "y"]
    for n in range(count):  # 45 Simple Generate Key: EC P-256 key pairs (quick to make, 2 objects)
        lines += ["45", "${LAST_SESSION}", "4", f"{prefix}-{n}", "y", "y", "n"]
    return "\n".join(lines + ["0", ""])


def start_run(ckdemo_bin: Path, home: Path, script: str) -> subprocess.Popen:
    """`ckdemo run -` in the background; its transcript goes to a file beside the home."""
    transcript = open(home.parent / "transcript.txt", "w")
    process = subprocess.Popen(
        [str(ckdemo_bin), "--home", str(home), "run", "-"],
        stdin=subprocess.PIPE,
        stdout=transcript,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
        cwd=home.parent,
    )
    transcript.close()
    process.stdin.write(script)
    process.stdin.close()
    return process


def wait_until_logged_in(process: subprocess.Popen, home: Path) -> None:
    """Until the run's HA Login and Open Session are answered (its first two statuses): from there
    on a SIGKILL lands in key generation. SoftHSM2 rewrites a token's token.object in place at
    every C_Login, so a SIGKILL in the middle of the login can leave that file empty and the token
    gone (it did once on a loaded machine, member2's token.object 0 bytes): a SoftHSM2 limit,
    not the crash this test is about."""
    transcript = home.parent / "transcript.txt"
    deadline = time.monotonic() + TIMEOUT_S
    while transcript.read_text().count("Status: ") < 2:
        assert process.poll() is None and time.monotonic() < deadline, transcript.read_text()[-3000:]
        time.sleep(0.01)


@pytest.fixture
def group_home(home, menu) -> Path:
    code, out = menu(home, f"50\n{HA_SLOT}\n{SO_PIN}\n0\n")
    assert code == 0, out
    return home


def test_ha_login_completes_a_key_some_members_lack(group_home, menu, independent):
    home = group_home
    code, out = menu(
        home,
        generator_script(2, "partial"),
    )
    assert code == 0, out
    # what a crash in the middle of a replication leaves: the key pair on member1 only
    for member in MEMBERS[1:]:
        for kind in ("privkey", "pubkey"):
            gone = independent(
                home,
                "--token-label",
                member,
                "--login",
                "--pin",
                USER_PIN,
                "--delete-object",
                "--type",
                kind,
                "--label",
                "partial-1",
            )
            assert gone.returncode == 0, gone.stderr
    before = holdings(independent, home)
    assert before[MEMBERS[0]] != before[MEMBERS[1]]
    code, out = menu(home, f"51\n{HA_SLOT}\n{USER_PIN}\n0\n")
    assert code == 0, out
    after = holdings(independent, home)
    assert_consistent(after)
    assert ("Private Key Object", "partial-1") in {(t, label) for t, label, _ in after[MEMBERS[2]]}
    # the HA event, as the transcript shows it (and the HA log when haLogStatus is enabled)
    assert re.search(r"completed at HA login: 4 object\(s\) copied", out), out


def test_sigkill_during_key_generation_leaves_every_member_alike(group_home, menu, independent, ckdemo_bin):
    home = group_home
    chance = random.Random(SEED)
    partial_trials = 0
    for trial in range(TRIALS):
        process = start_run(ckdemo_bin, home, generator_script(40, f"kill{trial}"))
        wait_until_logged_in(process, home)
        time.sleep(chance.uniform(0.6, 1.8))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=TIMEOUT_S)
        assert process.returncode == -signal.SIGKILL, "the run ended before it was killed"
        held = holdings(independent, home)
        partial_trials += len({frozenset(c) for c in held.values()}) > 1
        code, out = menu(home, f"51\n{HA_SLOT}\n{USER_PIN}\n0\n")  # a new process logs in
        assert code == 0, out
        assert_consistent(holdings(independent, home))
    print(
        f"{partial_trials} of {TRIALS} SIGKILLs left a key on some members only; "
        "every one was completed by the next HA login"
    )


def test_synchronize_beside_a_generator_makes_no_duplicates(group_home, independent, ckdemo_bin, run_ckdemo):
    """`hagroup synchronize` again and again while a run generates key pairs. One synchronize has
    outlasted a whole 40-key generator (on a saturated machine, and once in CI): the test then
    proved nothing and said so. Each round starts its synchronize runs once the generator is logged
    in, and a round that had fewer than two beside it is followed by one with twice as many keys (up
    to 160); the members must agree after every round."""
    home = group_home
    count = 40
    for attempt in range(3):
        generator = start_run(ckdemo_bin, home, generator_script(count, f"busy{attempt}"))
        wait_until_logged_in(generator, home)
        runs = 0
        while generator.poll() is None:
            done = run_ckdemo(home, "hagroup", "synchronize")
            assert done.returncode == 0, done.stdout + done.stderr
            runs += 1
        assert generator.returncode == 0, (home.parent / "transcript.txt").read_text()
        held = holdings(independent, home)
        assert_consistent(held)
        made = sum(1 for t, label, _ in held[MEMBERS[0]] if label.startswith(f"busy{attempt}-"))
        assert made == 2 * count
        if runs >= 2:
            break
        count *= 2
    assert runs >= 2, "synchronize never ran beside the generator"
