"""`ckdemo init` on an existing home and when it fails: no silent change
of member list or PIN, --force removes only what ckdemo recorded, PINs stored only when asked,
and an init that fails (a full disk: RLIMIT_FSIZE makes writes fail with EFBIG) leaves the old
state or nothing, with one line on stderr and exit status 2.
"""

from __future__ import annotations

import re
import resource
import subprocess
from pathlib import Path

import pytest

from conftest import SO_PIN, TIMEOUT_S, USER_PIN, clean_env, no_traceback, requires_softhsm

pytestmark = requires_softhsm


def tokens(independent, home: Path) -> dict[str, str]:
    """{label: serial} of the home's tokens, read by pkcs11-tool."""
    listed = independent(home, "--list-token-slots").stdout
    return dict(re.findall(r"token label\s+: (\S+)\n.*?serial num\s+: (\S+)", listed, re.DOTALL))


def state(home: Path) -> dict[str, bytes]:
    """Every file under the home with its content (token files included)."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def init_limited(ckdemo_bin, home: Path, limit: int, *args: str) -> subprocess.CompletedProcess:
    """`ckdemo init` whose writes fail with EFBIG past `limit` bytes a file (a disk that is full)."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [str(ckdemo_bin), "--home", str(home), "init", *args],
        preexec_fn=limited,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=clean_env(),
    )


def one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    no_traceback(done.stdout, done.stderr)
    assert done.stderr.startswith("ckdemo: ") and done.stderr.count("\n") == 1, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


# ---------------------------------------------------------------- an existing home


def test_another_member_count_is_refused_without_force(run_ckdemo, provision, independent, tmp_path):
    home = provision(tmp_path / "home")
    before, config = tokens(independent, home), (home / "Chrystoki.conf").read_text()
    one_line_error(run_ckdemo(home, "init", "--members", "2"), "member1,member2,member3", "--force")
    one_line_error(run_ckdemo(home, "init", "--label-prefix", "qa"), "--force")
    assert tokens(independent, home) == before
    assert (home / "Chrystoki.conf").read_text() == config
    # the same member list (or none given) is fine, and keeps the tokens
    assert run_ckdemo(home, "init", "--members", "3").returncode == 0
    assert run_ckdemo(home, "init", "--remote").returncode == 0
    assert tokens(independent, home) == before


def test_another_pin_is_refused_without_force(run_ckdemo, provision, independent, tmp_path):
    home = provision(tmp_path / "home")
    before, config = tokens(independent, home), (home / "Chrystoki.conf").read_text()
    one_line_error(run_ckdemo(home, "init", "--user-pin", "Other-user-1111"), "another user PIN", "--force")
    one_line_error(run_ckdemo(home, "init", env={"CKDEMO_SO_PIN": "Other-so-2222"}), "another SO PIN")
    assert "Other-user-1111" not in (home / "Chrystoki.conf").read_text()
    assert (home / "Chrystoki.conf").read_text() == config
    assert tokens(independent, home) == before
    # the right PINs are accepted; the tokens still have them
    assert run_ckdemo(home, "init", "--user-pin", USER_PIN, "--so-pin", SO_PIN).returncode == 0
    assert (
        independent(
            home, "--token-label", "member1", "--login", "--pin", USER_PIN, "--list-objects"
        ).returncode
        == 0
    )


def test_force_removes_only_the_tokens_ckdemo_recorded(run_ckdemo, provision, independent, tmp_path):
    home = provision(tmp_path / "home")
    old = tokens(independent, home)
    unrelated = home / "tokens" / "important" / "data.txt"
    unrelated.parent.mkdir()
    unrelated.write_text("keep me\n")
    note = home / "tokens" / "README"
    note.write_text("also mine\n")
    done = run_ckdemo(home, "init", "--force", "--members", "2")
    assert done.returncode == 0, done.stderr
    new = tokens(independent, home)
    assert sorted(new) == ["member1", "member2"]
    assert not set(new.values()) & set(old.values())
    assert unrelated.read_text() == "keep me\n" and note.read_text() == "also mine\n"
    # beside the user's files, exactly the two new token folders
    others = [p.name for p in (home / "tokens").iterdir() if p.name not in ("important", "README")]
    assert len(others) == 2 and all(re.fullmatch(r"[0-9a-f-]{36}", name) for name in others), others


# ---------------------------------------------------------------- which PINs are stored


def test_default_pins_are_stored_other_pins_only_when_asked(run_ckdemo, provision, tmp_path):
    default = provision(tmp_path / "default")
    text = (default / "Chrystoki.conf").read_text()
    assert f"UserPIN = {USER_PIN};" in text and f"SOPIN = {SO_PIN};" in text

    done = run_ckdemo(
        tmp_path / "custom",
        "init",
        env={"CKDEMO_USER_PIN": "Custom-user-3131", "CKDEMO_SO_PIN": "Custom-so-4141"},
    )
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "custom" / "Chrystoki.conf").read_text()
    assert "Custom-" not in text and "UserPIN" not in text and "SOPIN" not in text
    # a script then needs the PIN from the environment, and says so
    script = "1\n1\ny\n3\n${LAST_SESSION}\n1\n${CKDEMO_USER_PIN}\n0\n"
    missing = run_ckdemo(tmp_path / "custom", "run", "-", input=script)
    assert missing.returncode == 2
    assert "${CKDEMO_USER_PIN} is not set (export CKDEMO_USER_PIN=...)" in missing.stdout + missing.stderr
    given = run_ckdemo(
        tmp_path / "custom", "run", "-", input=script, env={"CKDEMO_USER_PIN": "Custom-user-3131"}
    )
    assert given.returncode == 0, given.stdout
    assert "Logged in as Crypto User" in given.stdout and "Custom-user-3131" not in given.stdout

    stored = run_ckdemo(
        tmp_path / "stored",
        "init",
        "--store-pins",
        env={"CKDEMO_USER_PIN": "Custom-user-3131", "CKDEMO_SO_PIN": "Custom-so-4141"},
    )
    assert stored.returncode == 0, stored.stderr
    text = (tmp_path / "stored" / "Chrystoki.conf").read_text()
    assert "UserPIN = Custom-user-3131;" in text and "SOPIN = Custom-so-4141;" in text
    assert run_ckdemo(tmp_path / "stored", "run", "-", input=script).returncode == 0
    # and --no-store-pins takes them out again, keeping the tokens
    assert run_ckdemo(tmp_path / "stored", "init", "--no-store-pins").returncode == 0
    assert "Custom-" not in (tmp_path / "stored" / "Chrystoki.conf").read_text()


# ---------------------------------------------------------------- all or nothing


@pytest.mark.parametrize("limit", [1, 150, 400])
def test_a_failed_init_on_a_new_home_leaves_nothing(ckdemo_bin, tmp_path, limit):
    home = tmp_path / "new" / "home"
    done = init_limited(ckdemo_bin, home, limit)
    one_line_error(done, "init failed, nothing changed", "File too large")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("limit", [150, 400])
def test_a_failed_init_force_keeps_the_old_state(ckdemo_bin, provision, independent, tmp_path, limit):
    home = provision(tmp_path / "home")
    before, files = tokens(independent, home), state(home)
    done = init_limited(ckdemo_bin, home, limit, "--force", "--members", "2")
    one_line_error(done, "init failed, nothing changed")
    assert tokens(independent, home) == before
    assert state(home) == files  # every file, token files included, as it was; no staging left
    assert (
        independent(
            home, "--token-label", "member3", "--login", "--pin", USER_PIN, "--list-objects"
        ).returncode
        == 0
    )
